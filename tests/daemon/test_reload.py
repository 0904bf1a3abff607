"""SIGHUP (systemctl reload): apply only the difference, never lose capacity."""

from __future__ import annotations

import signal

import pytest

from tests.daemon.conftest import clean_env

GPU = "nvidia.com/gpu"
# The stand-in's record of the old endpoint's ListAndWatch ending (kubelet's own log text).
OLD_STREAM_ENDED = f"ListAndWatch ended unexpectedly for device plugin {GPU} "


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
    old_socket_when_new_accepted: list[bool] = []

    def on_event(kind, payload):
        # Runs on the stand-in's thread as kubelet accepts the Register: what exists at that instant.
        if kind == "registration" and payload.resource == "example.com/accel" and payload.ok:
            old_socket_when_new_accepted.append(daemon.socket.is_socket())

    kubelet_peer.add_listener(on_event)
    config.write_text('resource_name = "example.com/accel"\n')
    reload_and_wait(daemon, notify_socket, ready_count(notify_socket))
    kubelet_peer.wait_node_status("example.com/accel", (8, 8))
    kubelet_peer.wait_until(lambda: kubelet_peer.endpoint_stopped(GPU), what="old endpoint stopped")
    new_registration = kubelet_peer.wait_registered("example.com/accel")
    old_stream_ends = [t for t, line in kubelet_peer.events if line.startswith(OLD_STREAM_ENDED)]
    assert old_socket_when_new_accepted == [True], "the old socket was gone when kubelet accepted the new name"
    assert len(old_stream_ends) == 1, kubelet_peer.events
    assert new_registration.time < old_stream_ends[0], "the old stream ended before the new name was registered"


def test_a_broken_config_keeps_the_old_one_serving_and_status_says_so(running, kubelet_peer, notify_socket):
    daemon, config = running
    config.write_text("resource_name = \n")
    reload_and_wait(daemon, notify_socket, ready_count(notify_socket))
    _, message = notify_socket.wait_for(lambda m: "Reload failed" in m.get("STATUS", ""))
    assert "keeping previous config" in message["STATUS"]
    assert daemon.proc.poll() is None
    assert kubelet_peer.node_status() == {GPU: (8, 8)}
    assert kubelet_peer.registration_count(GPU) == 1


def test_a_reload_whose_host_checks_fail_under_policy_fail_keeps_the_running_config_and_the_daemon(
    running, kubelet_peer, notify_socket
):
    daemon, config = running
    # The mock driver is 550.x: this minimum fails the driver check whatever else the host has.
    config.write_text(
        'resource_name = "example.com/accel"\n'
        '[runtime_check]\npolicy = "fail"\nmin_driver_version = "999.0"\n'
    )
    reload_and_wait(daemon, notify_socket, ready_count(notify_socket))
    _, message = notify_socket.wait_for(lambda m: "Reload failed" in m.get("STATUS", ""), what="Reload failed")
    assert "host checks failed: driver" in message["STATUS"]
    assert daemon.proc.poll() is None
    assert kubelet_peer.node_status() == {GPU: (8, 8)}
    assert kubelet_peer.registration_count("example.com/accel") == 0


def test_a_deleted_config_file_fails_the_reload_naming_the_file_and_keeps_serving(
    running, kubelet_peer, notify_socket
):
    daemon, config = running
    config.unlink()
    reload_and_wait(daemon, notify_socket, ready_count(notify_socket))
    _, message = notify_socket.wait_for(lambda m: "Reload failed" in m.get("STATUS", ""), what="Reload failed")
    assert str(config) in message["STATUS"]
    assert daemon.proc.poll() is None
    assert kubelet_peer.node_status() == {GPU: (8, 8)}
    assert kubelet_peer.registration_count(GPU) == 1


def test_a_reload_to_debug_logging_makes_debug_lines_appear(running, notify_socket):
    daemon, config = running
    assert "DEBUG " not in daemon.log()
    config.write_text('[logging]\nlevel = "debug"\n')
    reload_and_wait(daemon, notify_socket, ready_count(notify_socket))
    # The loop pokes every resource after a reload, and each resource pass logs a debug line.
    daemon.wait_log("DEBUG nvdp_node.")


def test_the_effective_configuration_is_logged_in_one_line_at_start_and_after_a_reload(running, notify_socket):
    daemon, config = running
    config.write_text('[plugin]\ndevice_id_strategy = "index"\n')
    reload_and_wait(daemon, notify_socket, ready_count(notify_socket))
    out = daemon.wait_log_count("effective configuration:", 2)
    lines = [line for line in out.splitlines() if "effective configuration:" in line]
    assert len(lines) == 2, out
    assert 'plugin.device_id_strategy="uuid"' in lines[0]
    assert 'plugin.device_id_strategy="index"' in lines[1]
