"""Pod admission through the device manager: GetPreferredAllocation, Allocate, PreStartContainer.

``AdmissionMixin`` is a role of ``KubeletPeer``; tests call ``allocate`` to admit a container
and ``release`` when its pod is gone (kubelet-api.md §2.5). It follows ``devicesToAllocate`` /
``allocateContainerResources``:

* registration and health are checked first, also for a container that already holds devices
  (a pod re-admitted after a kubelet restart or node reboot): an unregistered resource, a
  resource without healthy devices, or previously allocated devices that are no longer
  healthy fail admission with kubelet's texts; a container that passes gets its checkpointed
  response back without any RPC (kubelet does not call Allocate again);
* GetPreferredAllocation only if advertised (available ∪ picked, must_include = picked,
  allocation_size = the total), its answer intersected with the candidates, the rest filled;
* one Allocate carrying exactly one ContainerAllocateRequest, then PreStartContainer (30 s
  deadline) if the plugin requires it.

Device ids in every request come in Go set order, i.e. shuffled (``seed=``, ``shuffle=``): a
plugin must not depend on their order. ``call_*`` send raw requests, unshuffled, for error tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

import grpc

from nvdp_node.api import deviceplugin_v1beta1_pb2 as pb

from .core import PeerCore
from .records import PRE_START_TIMEOUT, AdmissionError, Allocation, ContainerStartError, go_error
from .resource_names import go_quote
from .state import Endpoint, PodDevices


class AdmissionMixin(PeerCore):
    """Kubelet's device-manager admission path for one container and one resource."""

    def allocate(
        self,
        resource: str,
        request: int | Sequence[str],
        *,
        must_include: Iterable[str] = (),
        numa_hint: Iterable[int] | None = None,
        pod_uid: str | None = None,
        container_name: str = "main",
        namespace: str = "default",
        pod_name: str | None = None,
    ) -> pb.ContainerAllocateResponse:
        """Admit one container asking for ``request`` devices of ``resource``.

        ``request`` is a device count, or a list of device ids that are already picked
        (kubelet's "reusable" init-container devices). ``must_include`` devices are already
        picked too and count toward the total. ``numa_hint`` plays the Topology Manager's
        NUMA affinity (None: no hint, every device is "no affinity"). ``namespace`` and
        ``pod_name`` (default: the pod uid) are what PodResources reports for the pod.
        Raises AdmissionError / ContainerStartError with kubelet's texts.
        """
        if isinstance(request, bool):
            raise TypeError("request must be a count or a list of device ids")
        picked_order = list(dict.fromkeys(must_include))
        if isinstance(request, int):
            required = request
        else:
            picked_order = list(dict.fromkeys([*picked_order, *request]))
            required = len(picked_order)
        if required <= 0:
            raise ValueError("nothing to allocate")
        pod_uid = pod_uid or str(uuid.uuid4())
        key = (pod_uid, container_name, resource)

        with self._lock:
            st = self._state
            existing = st.pod_devices.get(key)
            if existing is not None and len(existing.device_ids) != required:
                raise AdmissionError(
                    f"pod {go_quote(pod_uid)} container {go_quote(container_name)} changed request for resource "
                    f"{go_quote(resource)} from {len(existing.device_ids)} to {required}"
                )
            if resource not in st.healthy:
                raise AdmissionError(f"cannot allocate unregistered device {resource}")
            healthy = st.healthy[resource]
            if not healthy:
                raise AdmissionError(f"no healthy devices present; cannot allocate unhealthy devices {resource}")
            if existing is not None:
                if not healthy.issuperset(existing.device_ids):
                    raise AdmissionError(
                        f"previously allocated devices are no longer healthy; cannot allocate unhealthy devices {resource}"
                    )
                self._pods.setdefault(pod_uid, (namespace, pod_name or pod_uid))
                return pb.ContainerAllocateResponse.FromString(existing.resp)
            allocated: set[str] = set(picked_order)
            needed = required - len(allocated)
            available: set[str] = set()
            aligned: set[str] = set()
            unaligned: set[str] = set()
            no_affinity: set[str] = set()
            if needed > 0:
                available = healthy - st.in_use(resource) - allocated
                if len(available) < needed:
                    raise AdmissionError(
                        f"requested number of devices unavailable for {resource}. "
                        f"Requested: {needed}, Available: {len(available)}"
                    )
                aligned, unaligned, no_affinity = st.split_by_affinity(resource, available, numa_hint)

        def take(src: Iterable[str]) -> bool:
            nonlocal needed
            for dev in sorted(src):
                if needed <= 0:
                    break
                if dev not in allocated:
                    allocated.add(dev)
                    needed -= 1
            return needed <= 0

        if needed > 0:
            if needed < len(aligned):
                preferred = self._preferred(resource, aligned | allocated, set(allocated), required)
                take(preferred & aligned) or take(aligned)
            elif not take(aligned):
                preferred = self._preferred(resource, available | allocated, set(allocated), required)
                take(preferred & available) or take(unaligned) or take(no_affinity)
            if needed > 0:
                raise AdmissionError(
                    f"unexpectedly allocated less resources than required. "
                    f"Requested: {required}, Got: {required - needed}"
                )

        with self._lock:
            self._state.reserved.setdefault(resource, set()).update(allocated)
            ep = self._state.endpoints.get(resource)
        try:
            if ep is None:
                raise AdmissionError(f"unknown Device Plugin {resource}")
            if ep.stopped or ep.client is None:
                raise AdmissionError(f"endpoint {ep.describe()} has been stopped")
            device_ids = tuple(sorted(allocated))
            req = pb.AllocateRequest(
                container_requests=[pb.ContainerAllocateRequest(devices_ids=self._ordered(device_ids))]
            )
            try:
                resp = self._invoke(ep.client, "Allocate", ep.client.stub.Allocate, req, self.allocate_timeout)
            except (grpc.RpcError, ValueError) as e:
                raise AdmissionError(go_error(e)) from e
            if not resp.container_responses:
                raise AdmissionError("no containers return in allocation response")
            container_resp = resp.container_responses[0]
            with self._lock:
                self._state.pod_devices[key] = PodDevices(
                    device_ids, self._state.numa_map(resource, device_ids), container_resp.SerializeToString()
                )
                self._allocations.append(Allocation(pod_uid, container_name, resource, device_ids, container_resp))
                self._pods.setdefault(pod_uid, (namespace, pod_name or pod_uid))
                self._write_checkpoint_locked()
        finally:
            with self._lock:
                self._state.reserved.get(resource, set()).difference_update(allocated)
        self._refresh()
        self._pre_start_if_needed(resource, ep, device_ids)
        return container_resp

    def _preferred(self, resource: str, available: set[str], must_include: set[str], size: int) -> set[str]:
        """``callGetPreferredAllocationIfAvailable``."""
        with self._lock:
            ep = self._state.endpoints.get(resource)
        if ep is None:
            raise AdmissionError(f"endpoint not found in cache for a registered resource: {resource}")
        if ep.options is None or not ep.options.get_preferred_allocation_available:
            return set()
        if ep.stopped or ep.client is None:
            raise AdmissionError(
                f"device plugin GetPreferredAllocation rpc failed with err: endpoint {ep.describe()} has been stopped"
            )
        req = pb.PreferredAllocationRequest(
            container_requests=[
                pb.ContainerPreferredAllocationRequest(
                    available_deviceIDs=self._ordered(sorted(available)),
                    must_include_deviceIDs=self._ordered(sorted(must_include)),
                    allocation_size=size,
                )
            ]
        )
        try:
            resp = self._invoke(
                ep.client, "GetPreferredAllocation", ep.client.stub.GetPreferredAllocation, req, self.allocate_timeout
            )
        except (grpc.RpcError, ValueError) as e:
            raise AdmissionError(f"device plugin GetPreferredAllocation rpc failed with err: {go_error(e)}") from e
        if resp.container_responses:
            return set(resp.container_responses[0].deviceIDs)
        return set()

    def _pre_start_if_needed(self, resource: str, ep: Endpoint, device_ids: Sequence[str]) -> None:
        if ep.options is None or not ep.options.pre_start_required:
            return
        if ep.stopped or ep.client is None:
            raise ContainerStartError(
                f"device plugin PreStartContainer rpc failed with err: endpoint {ep.describe()} has been stopped"
            )
        req = pb.PreStartContainerRequest(devices_ids=self._ordered(device_ids))
        try:
            self._invoke(ep.client, "PreStartContainer", ep.client.stub.PreStartContainer, req, PRE_START_TIMEOUT)
        except (grpc.RpcError, ValueError) as e:
            raise ContainerStartError(f"device plugin PreStartContainer rpc failed with err: {go_error(e)}") from e

    def start_container(self, pod_uid: str, container_name: str = "main") -> None:
        """A container (re)start: PreStartContainer for each of its resources that needs it."""
        with self._lock:
            entries = [
                (res, pd.device_ids)
                for (pod, ctr, res), pd in self._state.pod_devices.items()
                if pod == pod_uid and ctr == container_name
            ]
        for res, ids in entries:
            with self._lock:
                ep = self._state.endpoints.get(res)
            if ep is None:
                raise ContainerStartError(f"endpoint not found in cache for a registered resource: {res}")
            self._pre_start_if_needed(res, ep, ids)

    def release(self, pod_uid: str) -> int:
        """The pod is gone: its devices are no longer in use. Returns the entries dropped."""
        with self._lock:
            keys = [k for k in self._state.pod_devices if k[0] == pod_uid]
            for k in keys:
                del self._state.pod_devices[k]
            self._pods.pop(pod_uid, None)
            if keys:
                self._write_checkpoint_locked()
        self._refresh()
        return len(keys)

    # raw calls for error tests ------------------------------------------------

    def call_allocate(
        self, resource: str, device_ids: Sequence[str], timeout: float | None = None
    ) -> pb.AllocateResponse:
        """Send Allocate with exactly these ids in one container request; grpc errors propagate."""
        client = self._current_client(resource)
        req = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=list(device_ids))])
        return self._invoke(client, "Allocate", client.stub.Allocate, req, timeout)

    def call_get_preferred_allocation(
        self,
        resource: str,
        available: Sequence[str],
        must_include: Sequence[str] = (),
        size: int = 1,
        timeout: float | None = None,
    ) -> pb.PreferredAllocationResponse:
        client = self._current_client(resource)
        req = pb.PreferredAllocationRequest(
            container_requests=[
                pb.ContainerPreferredAllocationRequest(
                    available_deviceIDs=list(available), must_include_deviceIDs=list(must_include), allocation_size=size
                )
            ]
        )
        return self._invoke(client, "GetPreferredAllocation", client.stub.GetPreferredAllocation, req, timeout)

    def call_pre_start_container(
        self, resource: str, device_ids: Sequence[str], timeout: float | None = PRE_START_TIMEOUT
    ) -> pb.PreStartContainerResponse:
        client = self._current_client(resource)
        req = pb.PreStartContainerRequest(devices_ids=list(device_ids))
        return self._invoke(client, "PreStartContainer", client.stub.PreStartContainer, req, timeout)

    def call_get_device_plugin_options(self, resource: str, timeout: float | None = None) -> pb.DevicePluginOptions:
        client = self._current_client(resource)
        return self._invoke(client, "GetDevicePluginOptions", client.stub.GetDevicePluginOptions, pb.Empty(), timeout)
