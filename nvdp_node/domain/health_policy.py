"""Which devices an NVML health event makes unhealthy (and when they may recover).

Pure rules, table-tested, used by the NVML health worker
(``nvdp_node.adapters.nvml_health``). They follow NVIDIA's plugin with its
later fixes: only XID critical errors count; a default list of application
XIDs is ignored; an event on a GPU marks every device derived from it (all
MIG devices, filtered by GPU/compute instance when the event carries them:
upstream #1929/#1930); an event that cannot be attributed marks everything,
unless configured otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# nvmlEventType* bits (nvml.h); kept here so the domain needs no pynvml.
EVENT_SINGLE_BIT_ECC = 0x1
EVENT_DOUBLE_BIT_ECC = 0x2
EVENT_XID_CRITICAL = 0x8
WANTED_EVENTS = EVENT_XID_CRITICAL | EVENT_DOUBLE_BIT_ECC | EVENT_SINGLE_BIT_ECC
NO_INSTANCE = 0xFFFFFFFF  # NVML's "event is not about a MIG instance"

# 13 graphics engine exception, 31 GPU memory page fault, 43 GPU stopped
# processing, 45 preemptive cleanup, 68 video processor exception, 109
# context switch timeout: caused by applications, not by a broken GPU.
DEFAULT_IGNORED_XIDS = frozenset({13, 31, 43, 45, 68, 109})


@dataclass(frozen=True)
class HealthPolicy:
    ignored_xids: frozenset[int] = DEFAULT_IGNORED_XIDS
    force_enabled_xids: frozenset[int] = frozenset()
    unattributed_marks_all: bool = True

    def is_critical(self, xid: int) -> bool:
        return xid in self.force_enabled_xids or xid not in self.ignored_xids


@dataclass(frozen=True)
class DeviceRef:
    """A device as the health worker sees it: its id, its GPU, and its MIG placement if any."""

    device_id: str
    gpu_uuid: str
    gpu_instance: int | None = None
    compute_instance: int | None = None


@dataclass(frozen=True)
class HealthEvent:
    event_type: int
    xid: int
    gpu_uuid: str | None  # None: NVML could not say which GPU
    gpu_instance: int | None = None
    compute_instance: int | None = None


@dataclass(frozen=True)
class Verdict:
    """What to do about one event: the ids to mark unhealthy and a line for the log.

    ``xid`` and ``gpu_uuid`` (when known) and ``lost`` say what happened, for
    the metrics and ``nvdp status``.
    """

    device_ids: tuple[str, ...]
    reason: str
    xid: int | None = None
    gpu_uuid: str | None = None
    lost: bool = False


def judge(event: HealthEvent, devices: Sequence[DeviceRef], policy: HealthPolicy) -> Verdict:
    if event.event_type != EVENT_XID_CRITICAL:
        return Verdict((), f"skipping non-XID event (type {event.event_type:#x}) on {event.gpu_uuid}")
    xid, uuid = event.xid, event.gpu_uuid
    if not policy.is_critical(event.xid):
        return Verdict((), f"skipping ignored XID {event.xid} on {event.gpu_uuid}", xid, uuid)
    if event.gpu_uuid is None:
        if policy.unattributed_marks_all:
            return Verdict(_ids(devices), f"XID {event.xid} on an unknown GPU; marking all devices unhealthy", xid)
        return Verdict((), f"XID {event.xid} on an unknown GPU; ignored (unattributed events are ignored)", xid)
    hit = [
        d
        for d in devices
        if d.gpu_uuid == event.gpu_uuid and _instance_matches(d, event.gpu_instance, event.compute_instance)
    ]
    if not hit:
        return Verdict((), f"XID {event.xid} on {event.gpu_uuid} concerns no advertised device", xid, uuid)
    return Verdict(_ids(hit), f"XID {event.xid} on {event.gpu_uuid}; marking unhealthy", xid, uuid)


def lost_gpu(gpu_uuid: str, devices: Sequence[DeviceRef]) -> Verdict:
    return Verdict(_ids(d for d in devices if d.gpu_uuid == gpu_uuid), f"GPU {gpu_uuid} is lost",
                   gpu_uuid=gpu_uuid, lost=True)


def _instance_matches(device: DeviceRef, gi: int | None, ci: int | None) -> bool:
    # Whole-GPU devices take every event of their GPU; MIG devices only their
    # own instance's, when the event names one.
    if device.gpu_instance is None or gi is None:
        return True
    if device.gpu_instance != gi:
        return False
    return ci is None or device.compute_instance is None or device.compute_instance == ci


def _ids(devices: Iterable[DeviceRef]) -> tuple[str, ...]:
    return tuple(sorted({d.device_id for d in devices}))


@dataclass(frozen=True)
class RecoveryPolicy:
    """Opt-in return to Healthy: after ``quiet_period`` seconds with no new event and a passing probe."""

    enabled: bool = False
    quiet_period: float = 600.0

    def due(self, last_event_at: float, now: float) -> bool:
        return self.enabled and now - last_event_at >= self.quiet_period
