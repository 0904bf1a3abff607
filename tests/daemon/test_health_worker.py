"""The health worker in-process against the mock NVML: MIG placement and recovery."""

from __future__ import annotations

import queue

import pytest

from nvdp_node.adapters.nvml_health import HealthWorker
from nvdp_node.domain.devices import Health
from nvdp_node.domain.health_policy import DeviceRef, HealthPolicy, RecoveryPolicy


class Reports:
    def __init__(self) -> None:
        self.q: queue.Queue = queue.Queue()

    def __call__(self, ids, health, reason) -> None:
        self.q.put((ids, health))

    def next(self, timeout: float = 10.0):
        return self.q.get(timeout=timeout)


@pytest.fixture
def mig_node(mock_nvml):
    return mock_nvml.use("a100-mig-8")


def mig_refs(node):
    refs = []
    for gpu in node.profile["gpus"]:
        for mig in gpu.get("mig_devices", []):
            refs.append(DeviceRef(mig["uuid"], gpu["uuid"], mig["gpu_instance_id"], mig["compute_instance_id"]))
    return refs


def running_worker(refs, policy=HealthPolicy(), **kw):
    reports = Reports()
    worker = HealthWorker(refs, policy, reports, wait_timeout_ms=200, **kw)
    worker.start()
    return worker, reports


def wait_registered(node):
    import time

    deadline = time.monotonic() + 10
    while not any("nvmlDeviceRegisterEvents" in c for c in node.calls()):
        assert time.monotonic() < deadline, "worker never registered events"
        time.sleep(0.02)


def test_an_xid_naming_a_mig_instance_marks_only_that_mig_device(mig_node):
    refs = mig_refs(mig_node)
    target = refs[1]
    worker, reports = running_worker(refs)
    try:
        wait_registered(mig_node)
        mig_node.control.xid(target.gpu_uuid, 79, gi=target.gpu_instance, ci=target.compute_instance)
        assert reports.next() == ((target.device_id,), Health.UNHEALTHY)
    finally:
        worker.stop(timeout=5)


def test_an_xid_on_a_mig_enabled_gpu_without_instance_marks_all_its_mig_devices(mig_node):
    refs = mig_refs(mig_node)
    parent = refs[0].gpu_uuid
    worker, reports = running_worker(refs)
    try:
        wait_registered(mig_node)
        mig_node.control.xid(parent, 79)
        ids, health = reports.next()
        assert health is Health.UNHEALTHY
        assert set(ids) == {r.device_id for r in refs if r.gpu_uuid == parent}
    finally:
        worker.stop(timeout=5)


def test_opt_in_recovery_returns_a_device_after_the_quiet_period(mock_nvml):
    node = mock_nvml.use("t4-1")
    gpu = node.profile["gpus"][0]["uuid"]
    refs = [DeviceRef(gpu, gpu)]
    worker, reports = running_worker(refs, recovery=RecoveryPolicy(enabled=True, quiet_period=0.3), probe_every=0.1)
    try:
        wait_registered(node)
        node.control.xid(0, 79)
        assert reports.next() == ((gpu,), Health.UNHEALTHY)
        assert reports.next() == ((gpu,), Health.HEALTHY)
    finally:
        worker.stop(timeout=5)


def test_without_recovery_a_device_stays_unhealthy(mock_nvml):
    node = mock_nvml.use("t4-1")
    gpu = node.profile["gpus"][0]["uuid"]
    worker, reports = running_worker([DeviceRef(gpu, gpu)], probe_every=0.1)
    try:
        wait_registered(node)
        node.control.xid(0, 79)
        assert reports.next() == ((gpu,), Health.UNHEALTHY)
        with pytest.raises(queue.Empty):
            reports.next(timeout=1.0)
    finally:
        worker.stop(timeout=5)


def until(predicate, what: str, timeout: float = 10.0) -> None:
    """Poll ``predicate`` on the real monotonic clock until it holds, or fail naming ``what``."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.01)


def test_a_worker_blocked_in_nvml_longer_than_its_wait_timeout_counts_as_stalled(mock_nvml):
    import time

    node = mock_nvml.use("t4-1")
    gpu = node.profile["gpus"][0]["uuid"]
    node.control.wait_hang(ms=60_000)  # its first wait blocks for a minute, or until cleared
    worker = HealthWorker([DeviceRef(gpu, gpu)], HealthPolicy(), Reports(), wait_timeout_ms=200)
    worker.start()
    try:
        until(lambda: node.control.consumed("wait_hang") == 1, "the worker never entered its NVML wait")
        until(lambda: worker.stalled(time.monotonic(), allowance=0.2), "the hung worker never counted as stalled")
        node.control.clear()
        until(lambda: not worker.stalled(time.monotonic(), allowance=0.2),
              "the worker still counts as stalled after its wait returned")
    finally:
        node.control.clear()
        worker.stop(timeout=5)
