"""Which devices running pods hold, from kubelet's PodResources API (``/v1.PodResourcesLister/List``).

Called by the resource owner (``nvdp_node.app.resource_plugin``) before it advertises a
resource's devices. Kubelet accounts devices per resource name, so after a rename
(``nvidia.com/gpu`` → ``nvidia.com/h100``) it would hand GPUs that running pods got under the
old name out again under the new one; the pure rule in ``nvdp_node.domain.claims`` decides
which devices to hold back, from the :class:`PodDeviceAssignment` values built here.

Kubelet serves this API on its own socket (``/var/lib/kubelet/pod-resources/kubelet.sock``),
independent of the device-plugin socket; any failure to get an answer (no socket, kubelet not
answering within ``timeout``, an RPC error) is a :class:`PodResourcesUnavailable`, which the
caller retries.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from nvdp_node.api import podresources_v1_pb2 as pr
from nvdp_node.api import podresources_v1_pb2_grpc as pr_grpc
from nvdp_node.domain.claims import PodDeviceAssignment
from nvdp_node.domain.errors import TemporaryError

LIST_TIMEOUT = 5.0


class PodResourcesUnavailable(TemporaryError):
    """Kubelet's PodResources API gave no answer; the message names the socket and the gRPC status."""


async def list_assignments(socket: Path, *, timeout: float = LIST_TIMEOUT) -> list[PodDeviceAssignment]:
    """Every container's devices per resource name, as kubelet's ``List`` reports them now."""
    # A channel of its own subchannels: grpc's global pool would hand a new channel the
    # previous call's failed connection, still backing off, for a second or more after
    # kubelet is back.
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(f"unix://{socket}", options=options) as channel:
        try:
            response = await pr_grpc.PodResourcesListerStub(channel).List(
                pr.ListPodResourcesRequest(), timeout=timeout
            )
        except grpc.aio.AioRpcError as err:
            raise PodResourcesUnavailable(
                f"PodResources List at {socket} failed: {err.code().name}: {err.details()}"
            ) from err
    return assignments_from(response)


def assignments_from(response: pr.ListPodResourcesResponse) -> list[PodDeviceAssignment]:
    """One assignment per container and resource name, in kubelet's order.

    Kubelet sends one ``ContainerDevices`` per resource *and NUMA node*, so a container's
    devices of one resource can arrive in several entries, and a device on two NUMA nodes in
    two of them; they are merged here, each id once.
    """
    out: list[PodDeviceAssignment] = []
    for pod in response.pod_resources:
        for container in pod.containers:
            by_resource: dict[str, dict[str, None]] = {}
            for devices in container.devices:
                if devices.resource_name and devices.device_ids:
                    ids = by_resource.setdefault(devices.resource_name, {})
                    ids.update(dict.fromkeys(devices.device_ids))
            out.extend(
                PodDeviceAssignment(pod.namespace, pod.name, container.name, resource, tuple(ids))
                for resource, ids in by_resource.items()
            )
    return out
