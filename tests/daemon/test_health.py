"""GPU health end to end: mock NVML events → health worker → ListAndWatch → kubelet's counts."""

from __future__ import annotations

import os
from pathlib import Path
import time

import pytest

from tests.daemon.conftest import clean_env

GPU = "nvidia.com/gpu"




def start(nvdp_daemon, kubelet_peer, h100, tmp_path, *, config=None, env=None):
    daemon = nvdp_daemon(
        kubelet_peer.plugin_dir, env={**clean_env(), **h100.env(), **(env or {})},
        sysfs_root=tmp_path / "sys", config=config,
    )
    kubelet_peer.wait_node_status(GPU, (8, 8))
    return daemon


def unhealthy(kubelet_peer):
    return sorted(d.id for d in kubelet_peer.devices(GPU) if d.health != "Healthy")


def uuid(h100, index):
    return h100.profile["gpus"][index]["uuid"]


def wait_watching(h100):
    """Events injected before the worker registered its event set would never arrive."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any("nvmlDeviceRegisterEvents" in c for c in h100.calls()):
            return
        time.sleep(0.02)
    raise AssertionError(f"the health worker never registered for events; calls: {h100.calls()[-20:]}")


def test_xid_79_on_gpu_3_makes_exactly_that_gpu_unhealthy(nvdp_daemon, kubelet_peer, h100, tmp_path):
    start(nvdp_daemon, kubelet_peer, h100, tmp_path)
    wait_watching(h100)
    h100.control.xid(3, 79)
    kubelet_peer.wait_node_status(GPU, (7, 8))
    assert unhealthy(kubelet_peer) == [uuid(h100, 3)]


def test_an_ignored_xid_changes_nothing(nvdp_daemon, kubelet_peer, h100, tmp_path):
    start(nvdp_daemon, kubelet_peer, h100, tmp_path)
    wait_watching(h100)
    h100.control.xid(3, 13)
    h100.control.xid(5, 79)  # a marker: once GPU 5 is unhealthy, the XID 13 before it was handled
    kubelet_peer.wait_node_status(GPU, (7, 8))
    assert unhealthy(kubelet_peer) == [uuid(h100, 5)]


def test_a_force_enabled_xid_marks_its_gpu(nvdp_daemon, kubelet_peer, h100, tmp_path):
    start(nvdp_daemon, kubelet_peer, h100, tmp_path, config="[health]\nforce_enabled_xids = [13]\n")
    wait_watching(h100)
    h100.control.xid(2, 13)
    kubelet_peer.wait_node_status(GPU, (7, 8))
    assert unhealthy(kubelet_peer) == [uuid(h100, 2)]


def test_upstreams_dp_enable_healthchecks_force_enables_an_xid(nvdp_daemon, kubelet_peer, h100, tmp_path):
    start(nvdp_daemon, kubelet_peer, h100, tmp_path, env={"DP_ENABLE_HEALTHCHECKS": "31"})
    wait_watching(h100)
    h100.control.xid(1, 31)
    kubelet_peer.wait_node_status(GPU, (7, 8))


def test_a_lost_gpu_becomes_unhealthy(nvdp_daemon, kubelet_peer, h100, tmp_path):
    start(nvdp_daemon, kubelet_peer, h100, tmp_path)
    wait_watching(h100)
    h100.control.lose(6)
    kubelet_peer.wait_node_status(GPU, (7, 8), timeout=15)
    assert unhealthy(kubelet_peer) == [uuid(h100, 6)]


@pytest.mark.parametrize(
    "config,env",
    [("[health]\nenabled = false\n", {}), ("", {"DP_DISABLE_HEALTHCHECKS": "all"})],
    ids=["health-disabled-in-config", "upstream-env-disables-all"],
)
def test_with_health_checks_off_no_worker_touches_nvml_events(nvdp_daemon, kubelet_peer, h100, tmp_path, config, env):
    daemon = start(nvdp_daemon, kubelet_peer, h100, tmp_path, config=config, env=env)
    time.sleep(0.5)
    h100.control.xid(3, 79)
    time.sleep(0.5)
    assert not [c for c in h100.calls() if "nvmlEventSet" in c or "RegisterEvents" in c]
    assert kubelet_peer.node_status() == {GPU: (8, 8)}
    assert daemon.proc.poll() is None


def test_continuous_wait_errors_mark_all_devices_and_do_not_spin_the_cpu(nvdp_daemon, kubelet_peer, h100, tmp_path):
    daemon = start(nvdp_daemon, kubelet_peer, h100, tmp_path)
    wait_watching(h100)
    h100.control.wait_errors("NVML_ERROR_UNKNOWN", -1)
    kubelet_peer.wait_node_status(GPU, (0, 8))
    time.sleep(1.0)  # let the back-off reach its cap
    before = cpu_seconds(daemon.proc.pid)
    time.sleep(3.0)
    used = cpu_seconds(daemon.proc.pid) - before
    assert used < 0.3, f"nvdp used {used:.2f} s of CPU in 3 s while NVML waits kept failing"
    assert daemon.log().count("error waiting for NVML events") <= 2, "errors are rate-limited in the log"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
