"""Readers of the host for ``nvdp check``: one module per outside thing.

``docker``, ``containerd``, ``crio``, ``nvidia_toolkit``, ``driver`` and
``kubelet`` each turn what they find into the plain facts of
``nvdp_node.domain.checks``; ``paths`` says where everything is (under an
injectable root) and reads files without ever raising on a broken one.
``nvdp_node.app.host_checks`` calls them and applies the rules.
"""

from nvdp_node.adapters.host.containerd import read_containerd
from nvdp_node.adapters.host.crio import read_crio
from nvdp_node.adapters.host.docker import read_docker
from nvdp_node.adapters.host.driver import read_driver
from nvdp_node.adapters.host.kubelet import read_kubelet
from nvdp_node.adapters.host.nvidia_toolkit import read_cdi, read_toolkit
from nvdp_node.adapters.host.paths import HostRoot

ENGINE_READERS = {"docker": read_docker, "containerd": read_containerd, "crio": read_crio}

__all__ = [
    "ENGINE_READERS", "HostRoot", "read_cdi", "read_containerd", "read_crio", "read_docker",
    "read_driver", "read_kubelet", "read_toolkit",
]
