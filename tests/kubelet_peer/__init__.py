"""A kubelet stand-in for nvdp's tests: kubelet 1.32's device manager on the legacy kubelet.sock path.

``KubeletPeer`` (peer.py, assembled from the role modules beside it) serves
``v1beta1.Registration`` and ``v1.PodResourcesLister`` and drives plugins the way kubelet
does; ``python -m tests.kubelet_peer`` runs it as a process (system tests run it as
``kubelet.service``); ``tests.kubelet_peer.plugin`` holds the pytest fixtures.

Importing this package only imports the stdlib, grpc and ``nvdp_node.api``.
"""

from .peer import KubeletPeer
from .records import (
    CHECKPOINT_FILE,
    HEALTHY,
    KUBELET_SOCKET,
    METHODS,
    PRE_START_TIMEOUT,
    UNHEALTHY,
    AdmissionError,
    Allocation,
    ContainerStartError,
    DeviceState,
    KubeletPeerError,
    Registration,
    RpcCall,
    go_error,
)
from .resource_names import (
    invalid_resource_name_error,
    is_extended_resource_name,
    unsupported_version_error,
)

__all__ = [
    "CHECKPOINT_FILE",
    "HEALTHY",
    "KUBELET_SOCKET",
    "METHODS",
    "PRE_START_TIMEOUT",
    "UNHEALTHY",
    "AdmissionError",
    "Allocation",
    "ContainerStartError",
    "DeviceState",
    "KubeletPeer",
    "KubeletPeerError",
    "Registration",
    "RpcCall",
    "go_error",
    "invalid_resource_name_error",
    "is_extended_resource_name",
    "unsupported_version_error",
]
