"""One NVML health worker for the whole node, its verdicts fanned out to every resource.

The supervisor owns one :class:`HealthFanout`. A GPU may back devices of
several resources (during a rename, and with MIG or sharing), but NVML events
are per GPU, so one worker watches the union of devices and each verdict goes
to every resource's state, which keeps the ids it knows. The worker is
replaced only when the devices or the health settings change, and every
worker carries a token: a verdict from a worker that was stopped (it may
linger for one NVML wait) is dropped on the loop, never applied.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from nvdp_node.adapters.nvml_health import HealthWorker
from nvdp_node.app.resource_plugin import ResourcePlugin
from nvdp_node.app.settings import HealthSettings
from nvdp_node.domain.devices import Health
from nvdp_node.domain.health_policy import DeviceRef, Verdict

log = logging.getLogger(__name__)

STALL_ALLOWANCE = 10.0  # beyond one NVML wait timeout, before the worker counts as stuck
WorkerFactory = Callable[..., HealthWorker]


class HealthFanout:
    def __init__(self, make_worker: WorkerFactory = HealthWorker, clock: Callable[[], float] = time.monotonic) -> None:
        self._make_worker = make_worker
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_change: Callable[[], None] = lambda: None
        self._on_verdict: Callable[[Verdict], None] = lambda _v: None
        self._plugins: list[ResourcePlugin] = []
        self.worker: HealthWorker | None = None
        self._token: object = None
        self._watching: tuple[object, ...] | None = None

    def attach(self, loop: asyncio.AbstractEventLoop, on_change: Callable[[], None],
               on_verdict: Callable[[Verdict], None] = lambda _v: None) -> None:
        """``on_verdict`` hears every XID and lost GPU on the loop, marking or not (metrics)."""
        self._loop, self._on_change, self._on_verdict = loop, on_change, on_verdict

    def update(self, settings: HealthSettings, plugins: Iterable[ResourcePlugin]) -> None:
        """Watch the devices of ``plugins`` under ``settings``; restart the worker only if either changed."""
        self._plugins = list(plugins)
        refs = sorted(
            {DeviceRef(device_id=d.id, gpu_uuid=d.gpu_uuid, gpu_instance=d.gpu_instance,
                       compute_instance=d.compute_instance)
             for p in self._plugins for d in p.state.devices.by_id.values()},
            key=lambda r: (r.gpu_uuid, r.device_id),
        )
        watching = (settings, tuple(refs))
        if watching == self._watching and self.worker is not None:
            return
        self.stop()
        self._watching = watching
        if not refs:
            return
        if not settings.enabled:
            log.info("health checking is disabled; devices stay Healthy")
            return
        token = self._token = object()
        self.worker = self._make_worker(
            refs, settings.policy, lambda ids, health, reason: self._report(token, ids, health),
            recovery=settings.recovery, xid_events=settings.xid_events,
            on_verdict=lambda verdict: self._verdict(token, verdict),
        )
        self.worker.start()

    def stop(self) -> None:
        self._token, self._watching = None, None
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def stalled(self) -> bool:
        return self.worker is not None and self.worker.stalled(self._clock(), allowance=STALL_ALLOWANCE)

    def _report(self, token: object, device_ids: tuple[str, ...], health: Health) -> None:
        """Called on the worker's thread: hand over to the loop."""
        if self._loop is not None and token is self._token:
            try:
                self._loop.call_soon_threadsafe(self._apply, token, device_ids, health)
            except RuntimeError:  # the loop closed: nvdp is stopping
                pass

    def _verdict(self, token: object, verdict: Verdict) -> None:
        """Called on the worker's thread, before the verdict's report: hand over to the loop."""
        if self._loop is not None and token is self._token:
            try:
                self._loop.call_soon_threadsafe(self._verdict_on_loop, token, verdict)
            except RuntimeError:
                pass

    def _verdict_on_loop(self, token: object, verdict: Verdict) -> None:
        if token is self._token:
            self._on_verdict(verdict)

    def _apply(self, token: object, device_ids: tuple[str, ...], health: Health) -> None:
        if token is not self._token:
            return  # a stopped worker's last words
        if any([p.state.set_health(device_ids, health) for p in self._plugins]):
            self._on_change()
