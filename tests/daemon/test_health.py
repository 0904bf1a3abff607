"""GPU health end to end: mock NVML events → health worker → ListAndWatch → kubelet's counts."""

from __future__ import annotations

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


WORKER_CALLS = ("nvmlEventSet", "nvmlDeviceRegisterEvents", "nvmlDeviceGetHandleByUUID")  # only the worker's


def test_with_health_checks_disabled_no_worker_starts_and_gpus_stay_healthy(
    nvdp_daemon, kubelet_peer, h100, tmp_path
):
    daemon = start(nvdp_daemon, kubelet_peer, h100, tmp_path, config="[health]\nenabled = false\n")
    # Logged where the worker would be started, on the loop that would start it.
    daemon.wait_log("health checking is disabled; devices stay Healthy")
    assert not [c for c in h100.calls() if c.startswith(WORKER_CALLS)]
    assert kubelet_peer.node_status() == {GPU: (8, 8)}


@pytest.mark.parametrize(
    "config,env",
    [("[health]\nxid_events = false\n", {}), ("", {"DP_DISABLE_HEALTHCHECKS": "all"})],
    ids=["xid-events-off-in-config", "upstream-env-disables-all"],
)
def test_with_xid_checks_off_an_xid_changes_nothing_and_no_nvml_event_is_waited_for(
    nvdp_daemon, kubelet_peer, h100, tmp_path, config, env
):
    start(nvdp_daemon, kubelet_peer, h100, tmp_path, config=config, env=env)
    wait_for_call(h100, "nvmlDeviceGetHandleByUUID")  # the probe-only worker has its handles
    h100.control.xid(3, 79)
    h100.control.lose(5)  # a marker: once GPU 5 is unhealthy, the worker ran past the XID
    kubelet_peer.wait_node_status(GPU, (7, 8), timeout=15)
    assert unhealthy(kubelet_peer) == [uuid(h100, 5)]
    assert not [c for c in h100.calls() if c.startswith(("nvmlEventSet", "nvmlDeviceRegisterEvents"))]


def test_a_wait_error_marks_every_device_unhealthy(nvdp_daemon, kubelet_peer, h100, tmp_path):
    start(nvdp_daemon, kubelet_peer, h100, tmp_path)
    wait_watching(h100)
    h100.control.wait_errors("NVML_ERROR_UNKNOWN", 1)
    kubelet_peer.wait_node_status(GPU, (0, 8))


def test_repeated_wait_errors_are_logged_once_a_minute(nvdp_daemon, kubelet_peer, h100, tmp_path):
    daemon = start(nvdp_daemon, kubelet_peer, h100, tmp_path)
    wait_watching(h100)
    h100.control.wait_errors("NVML_ERROR_UNKNOWN", 4)  # backing off 0.1 + 0.2 + 0.4 s in between
    wait_until(lambda: h100.control.consumed("wait_error") == 4, "4 consumed wait errors")
    h100.control.xid(3, 79)  # a marker: the wait after the 4th error delivers it
    log = daemon.wait_log(f"XID 79 on {uuid(h100, 3)}; marking unhealthy")
    assert log.count("error waiting for NVML events") == 1, log


def test_a_health_worker_hung_in_nvml_makes_nvdp_withhold_its_watchdog_pings(
    nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket
):
    # The worker's first wait hangs for 2 minutes (or until cleared). nvdp counts it as stuck after one
    # wait timeout (5 s) plus STALL_ALLOWANCE (10 s): this test takes about 17 s.
    h100.control.wait_hang(ms=120_000)
    env = {"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "1000000"}  # a ping every 0.5 s
    daemon = start(nvdp_daemon, kubelet_peer, h100, tmp_path, env=env)
    try:
        wait_until(lambda: h100.control.consumed("wait_hang") == 1, "the worker blocked in its NVML wait")
        notify_socket.wait_for(lambda m: "WATCHDOG" in m, what="a watchdog ping before the stall counts")
        daemon.wait_log("health worker made no progress; withholding the watchdog ping", timeout=30)
        pinged = pings(notify_socket)
        daemon.wait_log_count("health worker made no progress; withholding the watchdog ping", 4)
        assert pings(notify_socket) == pinged, "pinged while the health worker was stuck"
        h100.control.clear()
        wait_until(lambda: pings(notify_socket) > pinged, "a watchdog ping once the worker moved again")
    finally:
        h100.control.clear()


def pings(listener) -> int:
    return sum(d == b"WATCHDOG=1" for _, d in list(listener.datagrams))


def wait_for_call(node, function: str) -> None:
    wait_until(lambda: any(c.startswith(function) for c in node.calls()), f"a call of {function}")


def wait_until(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.02)
