"""The ``v1beta1.DevicePlugin`` gRPC service kubelet calls on nvdp's socket.

Created by :class:`~nvdp_node.app.resource_plugin.ResourcePlugin` for every
serve and handed to :class:`~nvdp_node.adapters.plugin_server.PluginServer`;
it turns RPCs into calls of the pure allocation functions and streams the
resource's :class:`DeviceState` to kubelet. Bad requests get a gRPC error and
never disturb other RPCs or the daemon.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Protocol

import grpc

from nvdp_node.adapters.plugin_handlers import RateLimitedReport, Reporter
from nvdp_node.api import deviceplugin_v1beta1_pb2 as pb
from nvdp_node.api import deviceplugin_v1beta1_pb2_grpc as pb_grpc
from nvdp_node.domain.allocation import (
    AllocationPolicy,
    ContainerAllocation,
    InvalidAllocationError,
    allocate_container,
    preferred_allocation,
)
from nvdp_node.domain.devices import DeviceSet, Health

log = logging.getLogger(__name__)

OPTIONS = pb.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)


class StreamObserver(Protocol):
    """Told about ListAndWatch streams; ``opened`` returns a token handed back to ``ended``."""

    def opened(self) -> object: ...

    def ended(self, token: object) -> None: ...


class _NoStreamObserver:
    def opened(self) -> object:
        return None

    def ended(self, token: object) -> None:
        return None


class DeviceState:
    """A resource's devices and health, with change notification for ListAndWatch.

    Owned by the resource's :class:`~nvdp_node.app.resource_plugin.ResourcePlugin`,
    shared by every servicer of that resource (a re-serve builds a new
    servicer, not a new state) and updated on the event loop: NVML health
    through :meth:`set_health`, GPUs that pods hold under another resource name
    through :meth:`set_held`. A held device is advertised Unhealthy whatever
    NVML says, so kubelet cannot hand it out a second time.
    """

    def __init__(self, devices: DeviceSet, policy: AllocationPolicy) -> None:
        self.devices = devices
        self.policy = policy
        self.held: dict[str, str] = {}
        self._changed = asyncio.Event()
        # id → (device, health, its message): a listing of 896 devices rebuilds only what changed.
        self._messages: dict[str, tuple[object, str, pb.Device]] = {}
        self._listed: tuple[asyncio.Event, pb.ListAndWatchResponse] | None = None  # every stream sends this one

    def set_health(self, device_ids: Iterable[str], health: Health) -> list[str]:
        changed = self.devices.set_health(device_ids, health)
        if changed:
            log.warning("%s: devices now %s: %s", self.policy.resource_name, health, ", ".join(changed))
            self._notify()
        return changed

    def set_held(self, held: dict[str, str]) -> bool:
        """Replace the map device id → holder under another resource name; True if it changed."""
        held = {k: v for k, v in held.items() if k in self.devices.by_id}
        if held == self.held:
            return False
        taken = sorted(set(held) - set(self.held))
        released = sorted(set(self.held) - set(held))
        self.held = held
        if taken:
            log.warning(
                "%s: advertising %d device(s) as Unhealthy while pods hold them under another resource "
                "name: %s", self.policy.resource_name, len(taken), "; ".join(f"{i} ({held[i]})" for i in taken),
            )
        if released:
            log.info("%s: released by their pods, advertised again: %s", self.policy.resource_name,
                     ", ".join(released))
        self._notify()
        return True

    def health_of(self, device_id: str) -> Health:
        return Health.UNHEALTHY if device_id in self.held else self.devices.health(device_id)

    def healthy_count(self) -> int:
        return sum(1 for d in self.devices.by_id if self.health_of(d) is Health.HEALTHY)

    def replace(self, devices: DeviceSet, policy: AllocationPolicy) -> None:
        """Swap in a re-enumerated device list (reload); streams re-send it."""
        self.devices, self.policy = devices, policy
        self.held = {k: v for k, v in self.held.items() if k in devices.by_id}
        self._messages = {}
        self._notify()

    def _notify(self) -> None:
        old, self._changed = self._changed, asyncio.Event()
        old.set()

    def listing(self) -> tuple[pb.ListAndWatchResponse, asyncio.Event]:
        """The full device list plus the event that fires when it next changes."""
        if self._listed is not None and self._listed[0] is self._changed:
            return self._listed[1], self._changed
        messages, held = self._messages, self.held
        devices = []
        for device, health in self.devices.snapshot():
            text = str(Health.UNHEALTHY if device.id in held else health)
            cached = messages.get(device.id)
            if cached is None or cached[0] != device or cached[1] != text:
                numa = device.numa_node
                topology = pb.TopologyInfo(nodes=[pb.NUMANode(ID=numa)]) if numa is not None else None
                cached = messages[device.id] = (device, text, pb.Device(ID=device.id, health=text, topology=topology))
            devices.append(cached[2])
        self._listed = (self._changed, pb.ListAndWatchResponse(devices=devices))
        return self._listed[1], self._changed


class DevicePluginServicer(pb_grpc.DevicePluginServicer):
    """One serve's worth of the DevicePlugin service.

    ``streams`` is told when each ListAndWatch stream opens and when it ends
    (not when this servicer closes it): the resource owner decides which
    stream is kubelet's, since only the end of kubelet's stream means the
    registration is lost (kubelet never calls ListAndWatch again by itself).
    """

    def __init__(self, state: DeviceState, *, streams: StreamObserver | None = None) -> None:
        self._state = state
        self._streams = streams or _NoStreamObserver()
        self._closing = asyncio.Event()
        self._cut = asyncio.Event()  # replaced by every end_streams(); streams opened later wait on the new one
        # A client hammering Allocate with bad ids gets its errors, not one log line each.
        self._rejected = Reporter(RateLimitedReport("rejected Allocate request"), logging.WARNING)
        self.open_streams = 0
        self._none_open = asyncio.Event()
        self._none_open.set()

    async def streams_ended(self, timeout: float) -> bool:
        """Wait (at most ``timeout``) until no ListAndWatch stream is open; whether none is."""
        # asyncio.wait, not wait_for: Python 3.11's wait_for can swallow the caller's cancellation.
        none_open = asyncio.ensure_future(self._none_open.wait())
        try:
            await asyncio.wait({none_open}, timeout=timeout)
        finally:
            none_open.cancel()
        return self._none_open.is_set()

    def close(self) -> None:
        """End every ListAndWatch stream normally; called just before the server stops."""
        self._closing.set()

    def end_streams(self) -> int:
        """End the streams open now (normally, and not reported as lost); keep serving. Returns how many."""
        cut, self._cut = self._cut, asyncio.Event()
        cut.set()
        return self.open_streams

    async def GetDevicePluginOptions(self, request: pb.Empty, context: object) -> pb.DevicePluginOptions:
        return OPTIONS

    async def ListAndWatch(self, request: pb.Empty, context: object) -> AsyncIterator[pb.ListAndWatchResponse]:
        token = self._streams.opened()
        cut = self._cut
        closing = asyncio.ensure_future(_first(self._closing, cut))
        self.open_streams += 1
        self._none_open.clear()
        try:
            while True:
                response, changed = self._state.listing()
                yield response
                change = asyncio.ensure_future(changed.wait())
                try:
                    await asyncio.wait({closing, change}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    change.cancel()
                if closing.done():
                    return
        finally:
            closing.cancel()
            self.open_streams -= 1
            if not self.open_streams:
                self._none_open.set()
            if not self._closing.is_set() and not cut.is_set():
                self._streams.ended(token)

    async def Allocate(self, request: pb.AllocateRequest, context: grpc.aio.ServicerContext) -> pb.AllocateResponse:
        state = self._state
        responses = []
        for container in request.container_requests:
            try:
                allocation = allocate_container(state.devices.by_id, container.devices_ids, state.policy)
            except InvalidAllocationError as err:
                self._rejected.record(f"{err}")
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
            responses.append(_container_response(allocation))
        return pb.AllocateResponse(container_responses=responses)

    async def GetPreferredAllocation(
        self, request: pb.PreferredAllocationRequest, context: object
    ) -> pb.PreferredAllocationResponse:
        responses = []
        for container in request.container_requests:
            available = list(container.available_deviceIDs)
            must = list(container.must_include_deviceIDs)
            size = container.allocation_size
            try:
                ids = preferred_allocation(self._state.devices.by_id, available, must, size,
                                           shared_policy=self._state.policy.shared_devices_allocation_policy,
                                           links=self._state.devices.links)
            except Exception:  # kubelet fails the pod on any error here: answer something
                log.exception("GetPreferredAllocation failed; answering without preference")
                ids = (must + [i for i in available if i not in must])[: max(size, 0)]
            responses.append(pb.ContainerPreferredAllocationResponse(deviceIDs=ids))
        return pb.PreferredAllocationResponse(container_responses=responses)

    async def PreStartContainer(
        self, request: pb.PreStartContainerRequest, context: object
    ) -> pb.PreStartContainerResponse:
        return pb.PreStartContainerResponse()


async def _first(*events: asyncio.Event) -> None:
    """Return once any of ``events`` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


def _container_response(allocation: ContainerAllocation) -> pb.ContainerAllocateResponse:
    return pb.ContainerAllocateResponse(
        envs=allocation.envs,
        mounts=[
            pb.Mount(container_path=m.container_path, host_path=m.host_path, read_only=m.read_only)
            for m in allocation.mounts
        ],
        devices=[
            pb.DeviceSpec(container_path=s.container_path, host_path=s.host_path, permissions=s.permissions)
            for s in allocation.device_specs
        ],
        annotations=allocation.annotations,
        cdi_devices=[pb.CDIDevice(name=name) for name in allocation.cdi_devices],
    )
