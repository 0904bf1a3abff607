"""The NVML health worker: XID events and lost GPUs, reported to the event loop.

``nvmlEventSetWait`` blocks (ctypes releases the GIL), so the worker runs on
its own thread. It only turns NVML into :class:`HealthEvent` values and asks
:func:`~nvdp_node.domain.health_policy.judge` what they mean; ``report`` is
called from this thread and must hand over to the loop itself (the
supervisor passes a ``call_soon_threadsafe`` wrapper). ``last_progress`` feeds
the systemd watchdog: a worker stuck inside NVML stops the pings.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable, Sequence

import pynvml

from nvdp_node.adapters.nvml import nvml_session, text
from nvdp_node.domain.devices import Health
from nvdp_node.domain.errors import NvmlUnavailableError
from nvdp_node.domain.health_policy import (
    NO_INSTANCE,
    WANTED_EVENTS,
    DeviceRef,
    HealthEvent,
    HealthPolicy,
    RecoveryPolicy,
    Verdict,
    judge,
    lost_gpu,
)

log = logging.getLogger(__name__)

Report = Callable[[tuple[str, ...], Health, str], None]
WAIT_TIMEOUT_MS = 5000
MAX_ERROR_BACKOFF = 5.0
ERROR_LOG_EVERY = 60.0


class HealthWorker:
    def __init__(
        self,
        devices: Sequence[DeviceRef],
        policy: HealthPolicy,
        report: Report,
        *,
        recovery: RecoveryPolicy = RecoveryPolicy(),
        xid_events: bool = True,
        on_verdict: Callable[[Verdict], None] = lambda _v: None,
        wait_timeout_ms: int = WAIT_TIMEOUT_MS,
        probe_every: float = 5.0,
    ) -> None:
        self.devices = tuple(devices)
        self.policy = policy
        self.recovery = recovery
        self.xid_events = xid_events
        self._report = report
        self._on_verdict = on_verdict  # every judged event, marking or not (metrics), from this thread
        self._wait_timeout_ms = wait_timeout_ms
        self._probe_every = probe_every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nvml-health", daemon=True)
        self.last_progress = time.monotonic()
        self.wait_errors = 0
        self._lost: set[str] = set()
        self._unhealthy_at: dict[str, float] = {}

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 0.2) -> None:
        """Ask the thread to end; it notices within one wait timeout, and is a daemon thread."""
        self._stop.set()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stalled(self, now: float, allowance: float) -> bool:
        """True when the worker made no progress for longer than a wait plus ``allowance``."""
        return self.alive and now - self.last_progress > self._wait_timeout_ms / 1000 + allowance

    # -- thread -------------------------------------------------------------
    def _run(self) -> None:
        try:
            with nvml_session():
                self._watch()
        except NvmlUnavailableError as err:
            log.error("health checks stopped: %s", err)
        except Exception:  # a bug here must not kill the daemon silently
            log.exception("health worker crashed; health checks stopped")

    def _watch(self) -> None:
        if not self.xid_events:
            self._probe_only()
            return
        event_set = pynvml.nvmlEventSetCreate()
        try:
            handles = self._register(event_set)
            next_probe = time.monotonic() + self._probe_every
            backoff = 0.0
            last_error_log = 0.0
            while not self._stop.is_set():
                self.last_progress = time.monotonic()
                try:
                    data = pynvml.nvmlEventSetWait_v2(event_set, self._wait_timeout_ms)
                except pynvml.NVMLError as err:
                    if err.value != pynvml.NVML_ERROR_TIMEOUT:
                        backoff, last_error_log = self._wait_failed(err, backoff, last_error_log)
                        self._stop.wait(backoff)
                        continue
                else:
                    backoff = 0.0
                    self._apply(judge(self._event(data, handles), self.devices, self.policy))
                if time.monotonic() >= next_probe:
                    self._probe(handles)
                    next_probe = time.monotonic() + self._probe_every
        finally:
            pynvml.nvmlEventSetFree(event_set)

    def _probe_only(self) -> None:
        """XID events off: only the periodic lost-GPU probe runs."""
        handles = {}
        for uuid in sorted({d.gpu_uuid for d in self.devices}):
            try:
                handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
            except pynvml.NVMLError as err:
                log.warning("cannot probe GPU %s: %s", uuid, err)
                continue
            handles[_address(handle)] = (uuid, handle)
        while not self._stop.is_set():
            self.last_progress = time.monotonic()
            self._probe(handles)
            self._stop.wait(self._probe_every)

    def _register(self, event_set: object) -> dict[int, tuple[str, object]]:
        """Register every GPU for the wanted events it supports; map handle address → (uuid, handle)."""
        handles: dict[int, tuple[str, object]] = {}
        for uuid in sorted({d.gpu_uuid for d in self.devices}):
            try:
                handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
                mask = WANTED_EVENTS & pynvml.nvmlDeviceGetSupportedEventTypes(handle)
                pynvml.nvmlDeviceRegisterEvents(handle, mask, event_set)
            except pynvml.NVMLError as err:
                if err.value == pynvml.NVML_ERROR_NOT_SUPPORTED:
                    log.warning("GPU %s is too old to support health checking: %s", uuid, err)
                    continue
                self._apply(Verdict(tuple(d.device_id for d in self.devices if d.gpu_uuid == uuid),
                                    f"cannot watch GPU {uuid} for health events: {err}"))
                continue
            handles[_address(handle)] = (uuid, handle)
        return handles

    def _event(self, data: object, handles: dict[int, tuple[str, object]]) -> HealthEvent:
        known = handles.get(_address(data.device))  # type: ignore[attr-defined]
        uuid = known[0] if known else None
        if uuid is None:
            try:
                uuid = text(pynvml.nvmlDeviceGetUUID(data.device))  # type: ignore[attr-defined]
            except pynvml.NVMLError:
                uuid = None
        gi, ci = data.gpuInstanceId, data.computeInstanceId  # type: ignore[attr-defined]
        return HealthEvent(
            event_type=int(data.eventType),  # type: ignore[attr-defined]
            xid=int(data.eventData),  # type: ignore[attr-defined]
            gpu_uuid=uuid,
            gpu_instance=None if gi == NO_INSTANCE else int(gi),
            compute_instance=None if ci == NO_INSTANCE else int(ci),
        )

    def _wait_failed(self, err: pynvml.NVMLError, backoff: float, last_log: float) -> tuple[float, float]:
        # Upstream marks everything unhealthy on a wait error and loops hot;
        # we do the former once per device (already-unhealthy ones do not
        # change) and back off, logging at most once a minute.
        self.wait_errors += 1
        now = time.monotonic()
        if now - last_log >= ERROR_LOG_EVERY:
            log.error("error waiting for NVML events (%d so far): %s; marking all devices unhealthy",
                      self.wait_errors, err)
            last_log = now
        self._apply(Verdict(tuple(d.device_id for d in self.devices), f"NVML event wait failed: {err}"),
                    quiet=True)
        return min(max(backoff * 2, 0.1), MAX_ERROR_BACKOFF), last_log

    def _probe(self, handles: dict[int, tuple[str, object]]) -> None:
        """A cheap query per GPU: a lost GPU answers GPU_IS_LOST; healthy ones allow recovery."""
        now = time.monotonic()
        ok: set[str] = set()
        for uuid, handle in handles.values():
            if uuid in self._lost:
                continue
            try:
                pynvml.nvmlDeviceGetMemoryInfo(handle)
            except pynvml.NVMLError as err:
                if err.value == pynvml.NVML_ERROR_GPU_IS_LOST:
                    self._lost.add(uuid)
                    self._apply(lost_gpu(uuid, self.devices))
                continue
            ok.add(uuid)
        recovered = tuple(
            d.device_id for d in self.devices
            if d.device_id in self._unhealthy_at and d.gpu_uuid in ok
            and self.recovery.due(self._unhealthy_at[d.device_id], now)
        )
        if recovered:
            for device_id in recovered:
                del self._unhealthy_at[device_id]
            self._report(recovered, Health.HEALTHY, "quiet period passed and the probe query succeeded")

    def _apply(self, verdict: Verdict, *, quiet: bool = False) -> None:
        if verdict.xid is not None or verdict.lost:
            self._on_verdict(verdict)
        if not verdict.device_ids:
            log.info("%s", verdict.reason)
            return
        if not quiet:
            log.warning("%s: %s", verdict.reason, ", ".join(verdict.device_ids))
        now = time.monotonic()
        for device_id in verdict.device_ids:
            self._unhealthy_at[device_id] = now
        self._report(verdict.device_ids, Health.UNHEALTHY, verdict.reason)


def _address(handle: object) -> int:
    return ctypes.cast(handle, ctypes.c_void_p).value or 0  # type: ignore[arg-type]
