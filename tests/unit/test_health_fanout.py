"""One health worker for the node: verdicts reach every resource, and never from a stopped worker."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nvdp_node.adapters.servicer import DeviceState
from nvdp_node.app.health_fanout import HealthFanout
from nvdp_node.app.resource_plugin import ResourcePlugin
from nvdp_node.app.settings import HealthSettings
from nvdp_node.domain.allocation import AllocationPolicy
from nvdp_node.domain.devices import Device, DeviceSet, Health
from nvdp_node.domain.health_policy import HealthPolicy, RecoveryPolicy, Verdict

SETTINGS = HealthSettings(enabled=True, xid_events=True, policy=HealthPolicy(), recovery=RecoveryPolicy())


class RecordingWorker:
    """Stands in for the NVML thread: keeps the report callback so the test can call it as the thread would."""

    made: list[RecordingWorker] = []

    def __init__(self, refs, policy, report, **kw) -> None:
        self.refs, self.report, self.running, self.kw = list(refs), report, False, kw
        RecordingWorker.made.append(self)

    def start(self) -> None:
        self.running = True

    def stop(self) -> None:
        self.running = False

    def stalled(self, now: float, allowance: float) -> bool:
        return False


def plugin(name: str, gpus: list[str]) -> ResourcePlugin:
    devices = DeviceSet(Device(id=g, index=str(i), gpu_uuid=g, numa_node=None) for i, g in enumerate(gpus))
    state = DeviceState(devices, AllocationPolicy(resource_name=name))
    return ResourcePlugin(name, state, socket_dir=Path("/nonexistent"), kubelet_socket=Path("/nonexistent/k"))


def run(coro_fn):
    return asyncio.run(coro_fn())


def test_a_verdict_reaches_every_resource_that_holds_the_gpu():
    async def body():
        RecordingWorker.made.clear()
        changes = []
        a, b = plugin("nvidia.com/gpu", ["GPU-1", "GPU-2"]), plugin("example.com/gpu", ["GPU-2"])
        fanout = HealthFanout(make_worker=RecordingWorker)
        fanout.attach(asyncio.get_running_loop(), lambda: changes.append(1))
        fanout.update(SETTINGS, [a, b])
        (worker,) = RecordingWorker.made
        assert sorted(r.device_id for r in worker.refs) == ["GPU-1", "GPU-2"], "one ref per device"
        worker.report(("GPU-2",), Health.UNHEALTHY, "xid 79")
        await asyncio.sleep(0)  # the hand-over to the loop
        assert a.state.devices.health("GPU-2") is Health.UNHEALTHY
        assert b.state.devices.health("GPU-2") is Health.UNHEALTHY
        assert a.state.devices.health("GPU-1") is Health.HEALTHY
        assert changes
    run(body)


def test_a_stopped_worker_cannot_report_to_a_live_resource():
    async def body():
        RecordingWorker.made.clear()
        a = plugin("nvidia.com/gpu", ["GPU-1"])
        fanout = HealthFanout(make_worker=RecordingWorker)
        fanout.attach(asyncio.get_running_loop(), lambda: None)
        fanout.update(SETTINGS, [a])
        other = HealthSettings(enabled=True, xid_events=True, policy=HealthPolicy(ignored_xids=frozenset()),
                               recovery=RecoveryPolicy())
        fanout.update(other, [a])
        old, new = RecordingWorker.made
        assert not old.running and new.running
        old.report(("GPU-1",), Health.UNHEALTHY, "a verdict from before the reload")
        await asyncio.sleep(0)
        assert a.state.devices.health("GPU-1") is Health.HEALTHY
        new.report(("GPU-1",), Health.UNHEALTHY, "the live worker's verdict")
        await asyncio.sleep(0)
        assert a.state.devices.health("GPU-1") is Health.UNHEALTHY
    run(body)


def test_a_report_queued_before_the_stop_is_dropped_on_the_loop():
    async def body():
        RecordingWorker.made.clear()
        a = plugin("nvidia.com/gpu", ["GPU-1"])
        fanout = HealthFanout(make_worker=RecordingWorker)
        fanout.attach(asyncio.get_running_loop(), lambda: None)
        fanout.update(SETTINGS, [a])
        (worker,) = RecordingWorker.made
        worker.report(("GPU-1",), Health.UNHEALTHY, "sent, not yet applied")
        fanout.stop()  # before the loop ran the hand-over
        await asyncio.sleep(0)
        assert a.state.devices.health("GPU-1") is Health.HEALTHY
    run(body)


def test_the_same_devices_and_settings_keep_the_running_worker():
    async def body():
        RecordingWorker.made.clear()
        fanout = HealthFanout(make_worker=RecordingWorker)
        fanout.attach(asyncio.get_running_loop(), lambda: None)
        fanout.update(SETTINGS, [plugin("nvidia.com/gpu", ["GPU-1"])])
        fanout.update(SETTINGS, [plugin("nvidia.com/gpu", ["GPU-1"])])
        assert len(RecordingWorker.made) == 1 and RecordingWorker.made[0].running
    run(body)


def test_a_verdict_reaches_the_metrics_only_from_the_current_worker():
    async def body():
        RecordingWorker.made.clear()
        heard = []
        a = plugin("nvidia.com/gpu", ["GPU-1"])
        fanout = HealthFanout(make_worker=RecordingWorker)
        fanout.attach(asyncio.get_running_loop(), lambda: None, on_verdict=heard.append)
        fanout.update(SETTINGS, [a])
        old = RecordingWorker.made[-1]
        fanout.update(HealthSettings(enabled=True, xid_events=False, policy=HealthPolicy(),
                                     recovery=RecoveryPolicy()), [a])
        new = RecordingWorker.made[-1]
        old.kw["on_verdict"](Verdict(("GPU-1",), "XID 79", xid=79, gpu_uuid="GPU-1"))
        new.kw["on_verdict"](Verdict(("GPU-1",), "XID 48", xid=48, gpu_uuid="GPU-1"))
        await asyncio.sleep(0)
        assert [v.xid for v in heard] == [48]
    run(body)
