"""Which devices an NVML event marks unhealthy: upstream's rules with the #1930 fix."""

from __future__ import annotations

import pytest

from nvdp_node.domain.health_policy import (
    EVENT_DOUBLE_BIT_ECC,
    EVENT_SINGLE_BIT_ECC,
    EVENT_XID_CRITICAL,
    DeviceRef,
    HealthEvent,
    HealthPolicy,
    RecoveryPolicy,
    judge,
    lost_gpu,
)

WHOLE = [DeviceRef(f"GPU-{i}", f"GPU-{i}") for i in range(4)]
MIG = [
    DeviceRef("MIG-a", "GPU-0", 1, 0),
    DeviceRef("MIG-b", "GPU-0", 2, 0),
    DeviceRef("MIG-c", "GPU-0", 2, 1),
    DeviceRef("MIG-d", "GPU-1", 1, 0),
]
DEFAULT = HealthPolicy()


def xid(n: int, gpu: str | None = "GPU-3", gi: int | None = None, ci: int | None = None, kind: int = EVENT_XID_CRITICAL):
    return HealthEvent(event_type=kind, xid=n, gpu_uuid=gpu, gpu_instance=gi, compute_instance=ci)


@pytest.mark.parametrize(
    "event,devices,policy,expected",
    [
        (xid(79), WHOLE, DEFAULT, ("GPU-3",)),
        (xid(48, gpu="GPU-0"), WHOLE, DEFAULT, ("GPU-0",)),
        *[(xid(n), WHOLE, DEFAULT, ()) for n in (13, 31, 43, 45, 68, 109)],
        (xid(13), WHOLE, HealthPolicy(force_enabled_xids=frozenset({13})), ("GPU-3",)),
        (xid(94), WHOLE, HealthPolicy(ignored_xids=frozenset({94})), ()),
        (xid(79, kind=EVENT_DOUBLE_BIT_ECC), WHOLE, DEFAULT, ()),
        (xid(0, kind=EVENT_SINGLE_BIT_ECC), WHOLE, DEFAULT, ()),
        (xid(79, gpu=None), WHOLE, DEFAULT, ("GPU-0", "GPU-1", "GPU-2", "GPU-3")),
        (xid(79, gpu=None), WHOLE, HealthPolicy(unattributed_marks_all=False), ()),
        (xid(79, gpu="GPU-unknown"), WHOLE, DEFAULT, ()),
        (xid(79, gpu="GPU-0"), MIG, DEFAULT, ("MIG-a", "MIG-b", "MIG-c")),
        (xid(79, gpu="GPU-0", gi=2), MIG, DEFAULT, ("MIG-b", "MIG-c")),
        (xid(79, gpu="GPU-0", gi=2, ci=1), MIG, DEFAULT, ("MIG-c",)),
        (xid(79, gpu="GPU-0", gi=7, ci=0), MIG, DEFAULT, ()),
        (xid(79, gpu="GPU-1", gi=1, ci=0), MIG, DEFAULT, ("MIG-d",)),
    ],
    ids=[
        "xid-79-marks-its-gpu",
        "xid-48-marks-its-gpu",
        *[f"default-ignored-xid-{n}" for n in (13, 31, 43, 45, 68, 109)],
        "force-enabled-beats-default-ignore",
        "configured-ignore",
        "double-bit-ecc-only-logged",
        "single-bit-ecc-only-logged",
        "unattributed-marks-all",
        "unattributed-ignored-when-configured",
        "unknown-gpu-ignored",
        "gpu-event-marks-every-mig-device-of-the-gpu",
        "gi-filters-mig-devices",
        "gi-and-ci-filter-to-one",
        "other-instance-marks-nothing",
        "other-gpu-mig",
    ],
)
def test_judge(event, devices, policy, expected):
    assert judge(event, devices, policy).device_ids == expected


def test_force_enabled_xid_wins_over_a_configured_ignore():
    policy = HealthPolicy(ignored_xids=frozenset({31}), force_enabled_xids=frozenset({31}))
    assert policy.is_critical(31)


def test_a_lost_gpu_marks_every_device_derived_from_it():
    assert lost_gpu("GPU-0", MIG).device_ids == ("MIG-a", "MIG-b", "MIG-c")


@pytest.mark.parametrize(
    "enabled,quiet,elapsed,due",
    [(False, 10, 100, False), (True, 10, 9.9, False), (True, 10, 10, True)],
    ids=["off-by-default", "before-quiet-period", "after-quiet-period"],
)
def test_recovery_is_due_only_when_enabled_and_quiet_long_enough(enabled, quiet, elapsed, due):
    assert RecoveryPolicy(enabled=enabled, quiet_period=quiet).due(100.0, 100.0 + elapsed) is due


def test_recovery_is_off_by_default():
    assert RecoveryPolicy().enabled is False


@pytest.mark.parametrize("n", [79, 13], ids=["critical", "ignored"])
def test_a_verdict_names_the_xid_and_its_gpu_for_the_metrics(n):
    verdict = judge(xid(n), WHOLE, DEFAULT)
    assert (verdict.xid, verdict.gpu_uuid, verdict.lost) == (n, "GPU-3", False)


def test_a_lost_gpu_verdict_says_lost():
    verdict = lost_gpu("GPU-0", MIG)
    assert (verdict.lost, verdict.gpu_uuid, verdict.xid) == (True, "GPU-0", None)
