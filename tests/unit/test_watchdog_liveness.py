"""The watchdog is pinged only while every part makes progress: a wedged part must stop the pings."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from nvdp_node.adapters.servicer import DeviceState
from nvdp_node.app.health_fanout import STALL_ALLOWANCE, HealthFanout
from nvdp_node.app.resource_plugin import ResourcePlugin
from nvdp_node.app.settings import MpsHost, ServeSettings
from nvdp_node.app.supervisor import Supervisor
from nvdp_node.adapters.host import HostRoot
from nvdp_node.config import load_config
from nvdp_node.domain.allocation import AllocationPolicy
from nvdp_node.domain.devices import Device, DeviceSet
from nvdp_node.adapters.nvml_health import HealthWorker
from nvdp_node.domain.health_policy import DeviceRef, HealthPolicy

GPU = "GPU-00000000-0000-0000-0000-000000000000"


def settings(tmp: Path) -> ServeSettings:
    config = load_config(tmp / "absent.toml", environ={}, overrides={"kubelet.socket_dir": str(tmp)}).config
    return ServeSettings.from_config(config, HostRoot(), MpsHost())


def test_a_running_health_worker_counts_as_stalled_only_past_a_wait_plus_the_allowance(mock_nvml):
    mock_nvml.use("h100-sxm-8")

    now = [0.0]
    fanout = HealthFanout(clock=lambda: now[0])
    worker = HealthWorker([DeviceRef("x", "GPU-none")], HealthPolicy(), lambda *a: None, wait_timeout_ms=100)
    fanout.worker = worker
    worker.start()
    try:
        now[0] = worker.last_progress + 1.0
        assert not fanout.stalled()
        now[0] = worker.last_progress + worker._wait_timeout_ms / 1000 + STALL_ALLOWANCE + 1.0
        assert fanout.stalled(), "no progress for longer than a wait plus the allowance is a stall"
    finally:
        worker.stop()


def test_a_server_that_no_longer_answers_withholds_the_ping():
    async def body() -> None:
        with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
            directory = Path(tmp)
            devices = DeviceSet([Device(id=GPU, index="0", gpu_uuid=GPU, numa_node=None)])
            plugin = ResourcePlugin("nvidia.com/gpu", DeviceState(devices, AllocationPolicy()),
                                    socket_dir=directory, kubelet_socket=directory / "kubelet.sock")
            plugin.start()
            await asyncio.wait_for(plugin.first_pass.wait(), 10)
            supervisor = Supervisor(settings(directory))
            supervisor.plugins = {"gpu": plugin}
            assert plugin.serving and await supervisor._alive()
            await plugin._server._server.stop(None)  # wedge it: the socket file stays, nothing answers
            assert plugin.serving, "the socket is still ours, so the server counts as serving"
            assert not await supervisor._alive()
            await plugin.stop()
    asyncio.run(body())

