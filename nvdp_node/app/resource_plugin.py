"""One advertised resource, owned end to end: devices, serving, registration, claims.

The supervisor starts one :class:`ResourcePlugin` per resource and afterwards
only pokes it (:meth:`ResourcePlugin.poke`) with kubelet.sock's identity when
something may have changed. Everything slow — serving with its self-dial,
Register (kubelet may accept the connection and never answer), PodResources —
happens in the plugin's own task, so the supervisor's loop, READY, the
watchdog and signals never wait for kubelet.

The task is level-triggered: each pass compares what is (our socket's
identity, kubelet.sock's identity, whether kubelet's ListAndWatch stream of
the current registration still runs) with what was registered, and serves
and/or registers again when they differ; the decisions are the pure
:class:`~nvdp_node.domain.registration.Registrar`'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from collections.abc import Awaitable, Callable
from pathlib import Path

from nvdp_node.adapters.fs_identity import socket_identity
from nvdp_node.adapters.plugin_server import PluginServer
from nvdp_node.adapters.pod_resources import PodResourcesUnavailable, list_assignments
from nvdp_node.adapters.registration import register
from nvdp_node.adapters.servicer import DevicePluginServicer, DeviceState
from nvdp_node.app.metrics import Observer
from nvdp_node.app.settings import ServeSettings
from nvdp_node.domain.claims import held_elsewhere
from nvdp_node.domain.devices import DeviceSet, Health, NodeInventory
from nvdp_node.domain.errors import TemporaryError
from nvdp_node.domain.registration import Backoff, Registrar, RegState
from nvdp_node.domain.allocation import MpsAllocation
from nvdp_node.domain.resources import plan_devices
from nvdp_node.domain.sharing import plan_sharing
from nvdp_node.domain.resource_names import socket_name

log = logging.getLogger(__name__)

CLAIMS_POLL = 2.0  # re-ask PodResources this often while a pod holds one of our GPUs elsewhere
IDLE_PASS = 10.0  # safety-net pass even without a poke
GATE_POLL = 2.0  # how often a gated resource (MPS) that may not be served asks again
STREAMS_END_WAIT = 0.5  # before a re-registration, how long our ended streams may take to close
STREAM_WAIT = 5.0  # kubelet opens ListAndWatch right after Register; without it by then, register again
RegisterFn = Callable[..., Awaitable[None]]
Gate = Callable[[], Awaitable[str | None]]  # None: may be served; else why not


class ResourcePlugin:
    """Serve one resource on ``<socket_dir>/<socket_name>`` and keep it registered."""

    def __init__(
        self,
        resource_name: str,
        state: DeviceState,
        *,
        socket_dir: Path,
        kubelet_socket: Path,
        pod_resources_socket: Path | None = None,
        on_change: Callable[[str], None] = lambda _why: None,
        register_fn: RegisterFn = register,
        clock: Callable[[], float] = time.monotonic,
        stream_wait: float = STREAM_WAIT,
        gate: Gate | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.resource_name = resource_name
        self._observer = observer or Observer()
        self._cause: str | None = None  # why the next Register is a re-registration (metrics)
        self._registered_with: object = None  # kubelet.sock identity of the last successful Register
        self.state = state
        self.socket_path = socket_dir / socket_name(resource_name)
        self.kubelet_socket = kubelet_socket
        self.pod_resources_socket = pod_resources_socket
        self._on_change = on_change
        self._register = register_fn
        self._clock = clock
        self.registrar = Registrar()
        self.serve_backoff = Backoff()
        self.serve_error: str | None = None
        self.claims_error: str | None = None
        self.claims_backoff = Backoff()  # 1 s … 30 s while PodResources cannot be reached
        self._server: PluginServer | None = None
        self._kubelet: object = None
        self._kubelet_stream: object = None  # token of the stream counted as kubelet's
        self._stream_lost = False
        self._stream_wait = stream_wait
        self._gate = gate
        self.gate_error: str | None = None
        self._stream_due_at: float | None = None  # set after a Register until kubelet's stream opens
        self._claims_due = pod_resources_socket is not None
        self._claims_next = 0.0
        self._poked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.first_pass = asyncio.Event()  # set once serving was tried (READY waits for it)

    # -- what the supervisor sees -------------------------------------------
    @property
    def serving(self) -> bool:
        return self._server is not None and self._server.intact()

    @property
    def registered(self) -> bool:
        return self.registrar.registered

    @property
    def last_error(self) -> str | None:
        return self.gate_error or self.serve_error or self.registrar.last_error

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"resource {self.resource_name}")

    def poke(self) -> None:
        """Something may have changed; look again (kubelet.sock is read afresh by the pass itself)."""
        self._poked.set()

    def update(self, state: DeviceState) -> None:
        """A reload re-enumerated the devices of this same resource: swap them in place."""
        self.state.replace(state.devices, state.policy)
        self.recheck_claims()

    def set_gate(self, gate: Gate | None) -> None:
        """A reload made this resource MPS-shared (or no longer): serve behind ``gate`` from now on."""
        self._gate = gate
        if gate is None:
            self.gate_error = None
        self._poked.set()

    def recheck_claims(self) -> None:
        if self.pod_resources_socket is not None:
            self._claims_due, self._claims_next = True, 0.0
            self._poked.set()

    async def self_check(self) -> bool:
        return self._server is not None and await self._server.answers()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._server is not None:
            await self._server.stop()
            self._server = None
        self.registrar.lost()

    # -- the task -----------------------------------------------------------
    async def _run(self) -> None:
        while True:
            try:
                await self._pass()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not silently end the resource
                log.exception("%s: unexpected error; trying again", self.resource_name)
                await asyncio.sleep(1.0)
            self.first_pass.set()
            self._on_change(f"{self.resource_name}: pass done")
            await self._sleep(self._next_wake())

    async def _sleep(self, timeout: float) -> None:
        # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation (stop) that comes in
        # the same loop turn as a poke, and the task would then run on for ever.
        poked = asyncio.ensure_future(self._poked.wait())
        try:
            await asyncio.wait({poked}, timeout=timeout)
        finally:
            poked.cancel()
        self._poked.clear()

    def _next_wake(self) -> float:
        now = self._clock()
        waits = [IDLE_PASS]
        for pending in (self.serve_backoff.retry_in(now), self.registrar.retry_in(now)):
            if pending is not None:
                waits.append(pending)
        if self._claims_due:
            waits.append(max(0.0, self._claims_next - now))
        if self._stream_due_at is not None:
            waits.append(max(0.0, self._stream_due_at - now))
        if self._gate is not None and self.gate_error is not None:
            waits.append(GATE_POLL)  # closed: ask often; open, the 10 s pass asks (a probe forks a client)
        return min(waits)

    async def _pass(self) -> None:
        if self._gate is not None and not await self._gate_open():
            return
        if not self.serving:
            await self._serve()
            self.first_pass.set()  # READY waits for serving, never for kubelet
        if self._stream_lost:
            self._stream_lost = False
            self._cause = self._cause or "stream_lost"
            self.registrar.lost()
        if self.registered and self._stream_due_at is not None and self._clock() >= self._stream_due_at:
            # Kubelet 1.32 can drop a client it just accepted (a re-registration racing an
            # older stream's end) before that client opens its stream: nothing would end.
            log.warning("%s: kubelet accepted the registration but opened no ListAndWatch stream within "
                        "%.0f s; registering again", self.resource_name, self._stream_wait)
            self._stream_due_at = None
            self._cause = self._cause or "no_stream"
            self.registrar.lost()
        # Read kubelet.sock now, not when poked: a kubelet restart replaces it between the two.
        kubelet = socket_identity(self.kubelet_socket)
        if kubelet != self._kubelet:
            if kubelet is not None and self.claims_error is not None:
                # A (re)started kubelet brings its PodResources back: ask now, not after the back-off.
                self.claims_backoff.reset()
                self._claims_due, self._claims_next = True, 0.0
            self._kubelet = kubelet
        if self._claims_due and self._clock() >= self._claims_next:
            await self._check_claims()
        log.debug("%s: checked (serving %s, %s, kubelet.sock %s)", self.resource_name, self.serving,
                  self.registrar.state, kubelet)
        if self.registrar.due(self._clock(), kubelet, serving=self.serving):
            await self._register_once(kubelet)

    async def _gate_open(self) -> bool:
        """A gated resource (MPS) is served only while its gate (the control daemon) says so."""
        assert self._gate is not None
        reason = await self._gate()
        if reason is None:
            if self.gate_error is not None:
                log.info("%s: %s no more; serving", self.resource_name, self.gate_error)
            self.gate_error = None
            return True
        if self.gate_error != reason:
            log.warning("%s: not served: %s", self.resource_name, reason)
        self.gate_error = reason
        if self._server is not None:
            await self._server.stop()
            self._server = None
        self.registrar.lost()
        self.first_pass.set()
        return False

    async def _serve(self) -> None:
        now = self._clock()
        if not self.serve_backoff.ready(now):
            return
        if self._server is not None:
            # Kubelet deletes every plugin socket when it starts: expected, not a fault.
            log.info("%s: socket %s was removed (kubelet restarted?); serving again",
                     self.resource_name, self.socket_path)
            self._cause = self._cause or "socket_deleted"
            self.registrar.lost()
            if await self._server.republish():
                return
            await self._server.stop()
            self._server = None
        self.registrar.lost()
        server = PluginServer(self.socket_path, DevicePluginServicer(self.state, streams=self),
                              rpc=self._observer.rpc_metrics(self.resource_name))
        try:
            await server.start()
        except TemporaryError as err:  # e.g. the directory is missing or read-only
            delay = self.serve_backoff.failed(now, at_least=err.delay)
            self.serve_error = str(err)
            log.warning("%s; retrying in %.0f s", err, delay)
            return
        self._server = server
        self.serve_backoff.reset()
        self.serve_error = None

    async def _register_once(self, kubelet: object) -> None:
        if self._server is not None and (ended := self._server.servicer.end_streams()):
            # Kubelet 1.32 drops the *new* client when an older stream of the same
            # resource ends after a re-registration (allocatable 0 until the next
            # one). Ending the old streams first narrows that race; kubelet may
            # still see the end late, which the STREAM_WAIT check repairs.
            log.info("%s: ended %d open ListAndWatch stream(s) before registering again",
                     self.resource_name, ended)
            # Let them finish on the wire first: a Register that overtakes the end is the race.
            await self._server.servicer.streams_ended(STREAMS_END_WAIT)
        self.registrar.started(kubelet)
        # A stream end noticed before now was an older registration's; this Register supersedes it.
        self._kubelet_stream, self._stream_lost = None, False
        self._on_change(f"{self.resource_name}: registering")
        try:
            await self._register(self.kubelet_socket, endpoint=self.socket_path.name,
                                 resource_name=self.resource_name)
        except TemporaryError as err:
            delay = self.registrar.failed(self._clock(), str(err), at_least=err.delay)
            log.warning("%s; retrying in %.0f s", err, delay)
            self._observer.register_failed(self.resource_name)
            return
        self.registrar.succeeded()
        self._count_registration(kubelet)
        if self._kubelet_stream is None:
            self._stream_due_at = self._clock() + self._stream_wait
        log.info("registered %s with kubelet (%s)", self.resource_name, self.socket_path.name)

    def _count_registration(self, kubelet: object) -> None:
        """A new kubelet.sock outranks the symptoms it causes (our socket deleted, the stream ended)."""
        cause = None
        if self._registered_with is not None:
            cause = "kubelet_restart" if kubelet != self._registered_with else self._cause or "other"
        self._registered_with, self._cause = kubelet, None
        self._observer.registered(self.resource_name, cause)

    async def _check_claims(self) -> None:
        assert self.pod_resources_socket is not None
        try:
            assignments = await list_assignments(self.pod_resources_socket)
        except PodResourcesUnavailable as err:
            delay = self.claims_backoff.failed(self._clock())
            if self.claims_error is None:
                log.warning("%s; cannot tell whether running pods hold these GPUs under another resource "
                            "name (retrying, at most every %.0f s)", err, self.claims_backoff.cap)
            # STATUS= gets the gist (grpc's "last error: ..." tail stays in the log line above).
            self.claims_error = str(err).split("; last error:", 1)[0]
            self._claims_next = self._clock() + delay
            return
        if self.claims_error is not None:
            log.info("%s: PodResources answers again", self.resource_name)
        self.claims_error = None
        self.claims_backoff.reset()
        self.state.set_held(held_elsewhere(assignments, self.resource_name, self.state.devices.by_id))
        # Keep watching only while something is held; a reload or restart asks again.
        self._claims_due = bool(self.state.held)
        self._claims_next = self._clock() + CLAIMS_POLL

    # -- StreamObserver (called by the servicer on the loop) ------------------
    def opened(self) -> object:
        """The first stream after a Register started is kubelet's; any other is some local client's."""
        token = object()
        if self._kubelet_stream is None and self.registrar.state in (RegState.REGISTERING, RegState.REGISTERED):
            self._kubelet_stream = token
            self._stream_due_at = None
        else:
            log.debug("%s: a ListAndWatch stream that is not kubelet's opened", self.resource_name)
        return token

    def ended(self, token: object) -> None:
        if token is not self._kubelet_stream:
            # Another local client's stream, or one of an older registration: not a loss.
            log.debug("%s: a ListAndWatch stream that is not kubelet's ended; nothing to do", self.resource_name)
            return
        self._kubelet_stream = None
        log.warning("%s: kubelet ended the ListAndWatch stream; registering again", self.resource_name)
        self._stream_lost = True
        self._poked.set()


@dataclass(frozen=True)
class Planned:
    """The resources to run after an enumeration, with what the naming and sharing rules said."""

    resources: dict[object, tuple[str, DeviceState]]
    warnings: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    mps: dict[str, int] = field(default_factory=dict)  # MPS resource name → replicas per device


def plan_resources(settings: ServeSettings, inventory: NodeInventory) -> Planned:
    """Resource key → (resource name, its fresh device state), by MIG strategy, name patterns and sharing.

    Resources with no devices are left out (no socket, no registration). A
    GPU NVML could not fully query starts Unhealthy, and so do its MIG
    devices and replicas.
    """
    plan = plan_devices(inventory, settings.naming)
    shared = plan_sharing(plan.resources, settings.sharing,
                          compute_capabilities={g.uuid: g.compute_capability for g in inventory.gpus})
    sharing = settings.sharing
    mps = sharing is not None and sharing.kind == "mps"
    errored = {g.uuid for g in inventory.gpus if g.error is not None}
    resources: dict[object, tuple[str, DeviceState]] = {}
    for name, devices in shared.resources.items():
        policy = replace(settings.policy, resource_name=name)
        if sharing is not None and name in shared.replicas:
            policy = replace(policy, fail_requests_greater_than_one=sharing.fail_requests_greater_than_one,
                             mps=MpsAllocation(root=settings.mps_root) if mps else None)
        state = DeviceState(DeviceSet(devices, inventory.links), policy)
        unhealthy = [d.id for d in devices if d.gpu_uuid in errored]
        if unhealthy:
            state.devices.set_health(unhealthy, Health.UNHEALTHY)
        resources[(name, settings.socket_dir)] = (name, state)
    return Planned(
        resources=resources, warnings=plan.warnings + shared.warnings, errors=plan.errors + shared.errors,
        mps=dict(shared.replicas) if mps else {},
    )
