"""A lost GPU never takes the healthy ones away: not at start, not on reload, not on restart.

Seen: after one GPU was lost, the next SIGHUP ended the daemon and every later
start exited 1, so under Restart=always the unit ended failed and all 8 GPUs
left kubelet.
"""

from __future__ import annotations

import signal

from tests.daemon.conftest import clean_env
from tests.daemon.test_discovery import lose_all_but_identity

GPU = "nvidia.com/gpu"


def start(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket):
    env = {**clean_env(), **h100.env(), "NOTIFY_SOCKET": str(notify_socket.path)}
    return nvdp_daemon(kubelet_peer.plugin_dir, env=env, sysfs_root=tmp_path / "sys", config="")


def test_a_gpu_lost_before_start_is_left_out_and_counted(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket):
    h100.control.lose(3)
    start(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket)
    kubelet_peer.wait_node_status(GPU, (7, 7))
    notify_socket.wait_for(lambda m: m.get("STATUS", "").startswith(
        "Serving 7 of 8 GPUs (1 not identified) as nvidia.com/gpu, registered with kubelet"))
    assert h100.profile["gpus"][3]["uuid"] not in {d.id for d in kubelet_peer.devices(GPU)}


def test_a_gpu_identified_but_not_queryable_is_advertised_unhealthy(
    nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket
):
    lose_all_but_identity(h100, 5)
    start(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket)
    kubelet_peer.wait_node_status(GPU, (7, 8))  # (allocatable, capacity)
    unhealthy = [d.id for d in kubelet_peer.devices(GPU) if d.health != "Healthy"]
    assert unhealthy == [h100.profile["gpus"][5]["uuid"]]


def test_a_reload_after_a_gpu_was_lost_keeps_the_daemon_and_the_healthy_gpus(
    nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket
):
    daemon = start(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket)
    kubelet_peer.wait_node_status(GPU, (8, 8))
    h100.control.lose(3)
    kubelet_peer.wait_node_status(GPU, (7, 8))  # (allocatable, capacity): the health worker's probe saw it
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("reloaded configuration")
    kubelet_peer.wait_node_status(GPU, (7, 7))
    assert daemon.proc.poll() is None
    assert daemon.stop() == 0
    again = start(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket)
    kubelet_peer.wait_registered(GPU, count=2)
    kubelet_peer.wait_node_status(GPU, (7, 7))
    assert again.proc.poll() is None, "a restart with a lost GPU must serve the others"
