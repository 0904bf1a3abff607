"""Kubelet's PodResources API (``v1.PodResourcesLister``) on its own socket.

``PodResourcesMixin`` is a role of ``KubeletPeer``: ``start`` brings the server up,
``stop`` takes it down, ``restart`` takes it down and up again like the kubelet process, and
tests make it unreachable with ``pod_resources_down()`` / ``pod_resources_up()``. nvdp's
``adapters/pod_resources.py`` is the client. Behaviour (kubelet 1.32):

* ``List``: every admitted, not yet released pod with its containers' devices, one
  ``ContainerDevices`` per resource and NUMA node (no topology for devices without one),
  also for resources whose plugin is no longer registered: after a rename, pods of the old
  name still hold their GPUs. Pods re-read from the checkpoint after a restart are listed too.
* ``GetAllocatableResources``: the healthy devices of registered resources, one entry per
  device with its topology.
* ``Get``: one pod by namespace and name; an unknown pod fails with kubelet's text (gRPC
  UNKNOWN). Kubelet 1.32 has it behind the alpha gate ``KubeletPodResourcesGet``.
* No CPU, memory or DRA data: the stand-in has no CPU or memory manager.
"""

from __future__ import annotations

import os
from concurrent import futures
from pathlib import Path

import grpc

from nvdp_node.api import podresources_v1_pb2 as pr
from nvdp_node.api import podresources_v1_pb2_grpc as pr_grpc

from .core import PeerCore
from .records import NO_TOPOLOGY_NUMA
from .state import device_numa


def _topology(numa: list[int]) -> pr.TopologyInfo | None:
    return pr.TopologyInfo(nodes=[pr.NUMANode(ID=n) for n in numa]) if numa else None


class _PodResourcesServicer(pr_grpc.PodResourcesListerServicer):
    def __init__(self, peer: PodResourcesMixin):
        self._peer = peer

    def List(  # noqa: N802
        self, request: pr.ListPodResourcesRequest, context: grpc.ServicerContext
    ) -> pr.ListPodResourcesResponse:
        return pr.ListPodResourcesResponse(pod_resources=self._peer.list_pod_resources())

    def GetAllocatableResources(  # noqa: N802
        self, request: pr.AllocatableResourcesRequest, context: grpc.ServicerContext
    ) -> pr.AllocatableResourcesResponse:
        return pr.AllocatableResourcesResponse(devices=self._peer.allocatable_devices())

    def Get(  # noqa: N802
        self, request: pr.GetPodResourcesRequest, context: grpc.ServicerContext
    ) -> pr.GetPodResourcesResponse:
        for pod in self._peer.list_pod_resources():
            if (pod.namespace, pod.name) == (request.pod_namespace, request.pod_name):
                return pr.GetPodResourcesResponse(pod_resources=pod)
        context.abort(
            grpc.StatusCode.UNKNOWN, f"pod {request.pod_name} in namespace {request.pod_namespace} not found"
        )
        raise AssertionError("unreachable")  # abort raises


class PodResourcesMixin(PeerCore):
    """The PodResources server of the stand-in; see the module docstring."""

    pod_resources_socket: Path  # set by KubeletPeer.__init__
    _pr_server: grpc.Server | None = None
    _pr_executor: futures.ThreadPoolExecutor | None = None

    @property
    def pod_resources_serving(self) -> bool:
        return self._pr_server is not None

    def list_pod_resources(self) -> list[pr.PodResources]:
        """What ``List`` answers now."""
        with self._lock:
            st = self._state
            pods: dict[str, dict[str, list[pr.ContainerDevices]]] = {}
            for (uid, ctr, res), pd in st.pod_devices.items():
                devices = pods.setdefault(uid, {}).setdefault(ctr, [])
                for numa, ids in sorted(pd.numa.items()):
                    entry = pr.ContainerDevices(resource_name=res, device_ids=ids)
                    topology = _topology([numa] if numa != NO_TOPOLOGY_NUMA else [])
                    if topology is not None:
                        entry.topology.CopyFrom(topology)
                    devices.append(entry)
            out = []
            for uid, containers in pods.items():
                namespace, name = self._pods.get(uid, ("default", uid))
                out.append(
                    pr.PodResources(
                        name=name,
                        namespace=namespace,
                        containers=[pr.ContainerResources(name=c, devices=d) for c, d in containers.items()],
                    )
                )
            return out

    def allocatable_devices(self) -> list[pr.ContainerDevices]:
        """What ``GetAllocatableResources`` answers now (its ``devices``)."""
        with self._lock:
            st = self._state
            out = []
            for res in sorted(st.endpoints):
                devices = st.all_devices.get(res, {})
                for dev_id in sorted(st.healthy.get(res, set())):
                    entry = pr.ContainerDevices(resource_name=res, device_ids=[dev_id])
                    topology = _topology(device_numa(devices.get(dev_id)))
                    if topology is not None:
                        entry.topology.CopyFrom(topology)
                    out.append(entry)
            return out

    def pod_resources_up(self) -> None:
        """Serve PodResources on ``pod_resources_socket`` (a no-op when it already serves)."""
        with self._lock:
            if self._pr_server is not None:
                return
            path = self.pod_resources_socket
            os.makedirs(path.parent, mode=0o750, exist_ok=True)
            path.unlink(missing_ok=True)  # a stale socket of a previous run
            executor = futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="kubelet-peer-pr")
            server = grpc.server(executor)
            pr_grpc.add_PodResourcesListerServicer_to_server(_PodResourcesServicer(self), server)
            server.add_insecure_port(f"unix:{path}")
            server.start()
            self._pr_server, self._pr_executor = server, executor

    def pod_resources_down(self) -> None:
        """Stop serving PodResources: the socket is gone, clients get UNAVAILABLE."""
        with self._lock:
            server, self._pr_server = self._pr_server, None
            executor, self._pr_executor = self._pr_executor, None
        if server is not None:
            server.stop(None).wait(5)
            self.pod_resources_socket.unlink(missing_ok=True)
        if executor is not None:
            executor.shutdown(wait=False)
