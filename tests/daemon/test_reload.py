"""SIGHUP (systemctl reload): apply only the difference, never lose capacity."""

from __future__ import annotations

import signal

import pytest

from tests.daemon.conftest import clean_env

GPU = "nvidia.com/gpu"


@pytest.fixture
def running(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket):
    env = {**clean_env(), **h100.env(), "NOTIFY_SOCKET": str(notify_socket.path)}
    daemon = nvdp_daemon(kubelet_peer.plugin_dir, env=env, sysfs_root=tmp_path / "sys", config="# defaults\n")
    kubelet_peer.wait_node_status(GPU, (8, 8))
    return daemon, daemon.config_path


def reload_and_wait(daemon, notify_socket, count_before):
    daemon.signal(signal.SIGHUP)
    notify_socket.wait_for(
        lambda m: "READY" in m and sum("READY" in x for x in notify_socket.messages()) > count_before,
        what="READY=1 after the reload",
    )


def ready_count(notify_socket):
    return sum("READY" in m for m in notify_socket.messages())


def test_an_unchanged_config_is_not_registered_again_and_loses_no_capacity(running, kubelet_peer, notify_socket):
    daemon, _ = running
    reload_and_wait(daemon, notify_socket, ready_count(notify_socket))
    assert kubelet_peer.registration_count(GPU) == 1
    assert kubelet_peer.history(GPU) == [(8, 8)]


def test_a_new_resource_name_is_registered_before_the_old_one_goes(running, kubelet_peer, notify_socket):
    daemon, config = running
    config.write_text('resource_name = "example.com/accel"\n')
    reload_and_wait(daemon, notify_socket, ready_count(notify_socket))
    kubelet_peer.wait_node_status("example.com/accel", (8, 8))
    kubelet_peer.wait_until(lambda: kubelet_peer.endpoint_stopped(GPU), what="old endpoint stopped")
    kubelet_peer.wait_until(lambda: not daemon.socket.exists(), what="the old socket removed")
    assert (kubelet_peer.plugin_dir / "nvidia-example.com-accel.sock").is_socket()
    new_registration = kubelet_peer.wait_registered("example.com/accel")
    old_stop = [t for t, line in kubelet_peer.events if "nvidia.com/gpu" in line and "ended" in line.lower()]
    assert not old_stop or new_registration.time <= old_stop[-1]


def test_a_broken_config_keeps_the_old_one_serving_and_status_says_so(running, kubelet_peer, notify_socket):
    daemon, config = running
    config.write_text("resource_name = \n")
    reload_and_wait(daemon, notify_socket, ready_count(notify_socket))
    _, message = notify_socket.wait_for(lambda m: "Reload failed" in m.get("STATUS", ""))
    assert "keeping previous config" in message["STATUS"]
    assert daemon.proc.poll() is None
    assert kubelet_peer.node_status() == {GPU: (8, 8)}
    assert kubelet_peer.registration_count(GPU) == 1
