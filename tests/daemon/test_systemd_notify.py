"""What nvdp tells systemd over a real NOTIFY_SOCKET, and in which order."""

from __future__ import annotations

import logging
import signal
import time

import pytest

from nvdp_node.adapters.systemd_notify import Notifier, watchdog_interval
from tests.daemon.conftest import clean_env

GPU = "nvidia.com/gpu"




def start(nvdp_daemon, peer_dir, h100, tmp_path, notify_socket, extra_env=None, **kw):
    env = {**clean_env(), **h100.env(), "NOTIFY_SOCKET": str(notify_socket.path), **(extra_env or {})}
    return nvdp_daemon(peer_dir, env=env, sysfs_root=tmp_path / "sys", **kw)


def test_ready_comes_once_with_a_status_after_the_socket_serves(
    nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket
):
    daemon = start(nvdp_daemon, kubelet_peer.plugin_dir, h100, tmp_path, notify_socket)
    _, ready = notify_socket.wait_for(lambda m: "READY" in m, what="READY=1")
    assert ready["READY"] == "1"
    assert ready["STATUS"].startswith("Serving 8 GPUs as nvidia.com/gpu")
    kubelet_peer.wait_registered(GPU)
    notify_socket.wait_for(lambda m: m.get("STATUS") == "Serving 8 GPUs as nvidia.com/gpu, registered with kubelet")
    assert daemon.socket.exists()
    assert sum("READY" in m for m in notify_socket.messages()) == 1


def test_status_says_when_nvdp_waits_for_kubelet(nvdp_daemon, kubelet_peer_factory, h100, tmp_path, notify_socket):
    peer = kubelet_peer_factory(start=False)
    peer.plugin_dir.mkdir(parents=True, exist_ok=True)
    start(nvdp_daemon, peer.plugin_dir, h100, tmp_path, notify_socket)
    notify_socket.wait_for(lambda m: "waiting for kubelet socket" in m.get("STATUS", ""))


def test_sigterm_sends_stopping(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket):
    daemon = start(nvdp_daemon, kubelet_peer.plugin_dir, h100, tmp_path, notify_socket)
    kubelet_peer.wait_registered(GPU)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    last = notify_socket.messages()[-1]
    assert last["STOPPING"] == "1"


def test_a_reload_sends_reloading_with_monotonic_usec_in_one_datagram_then_ready(
    nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket
):
    daemon = start(nvdp_daemon, kubelet_peer.plugin_dir, h100, tmp_path, notify_socket)
    kubelet_peer.wait_registered(GPU)
    daemon.signal(signal.SIGHUP)
    i, reloading = notify_socket.wait_for(lambda m: "RELOADING" in m, what="RELOADING=1")
    assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
    kubelet_peer.wait_until(lambda: any("READY" in m for m in notify_socket.messages()[i + 1 :]), what="READY after reload")


def test_watchdog_pings_keep_coming_while_nvdp_is_healthy(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket):
    # The period (half of WatchdogSec) is test_watchdog_interval's; how evenly they come is a benchmark's.
    start(nvdp_daemon, kubelet_peer.plugin_dir, h100, tmp_path, notify_socket, extra_env={"WATCHDOG_USEC": "1000000"})
    kubelet_peer.wait_registered(GPU)
    notify_socket.wait_for(lambda m: "WATCHDOG" in m, what="a first watchdog ping")
    first = sum(d == b"WATCHDOG=1" for _, d in list(notify_socket.datagrams))
    kubelet_peer.wait_until(lambda: sum(d == b"WATCHDOG=1" for _, d in list(notify_socket.datagrams)) >= first + 3,
                            what="three more watchdog pings")


@pytest.mark.parametrize(
    "environ,pid,expected",
    [
        ({}, 1, None),
        ({"WATCHDOG_USEC": "30000000"}, 1, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, 1, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "2"}, 1, None),
        ({"WATCHDOG_USEC": "0"}, 1, None),
        ({"WATCHDOG_USEC": "banana"}, 1, None),
    ],
    ids=["unset", "half-of-usec", "pid-matches", "pid-is-someone-else", "zero", "garbage"],
)
def test_watchdog_interval(environ, pid, expected):
    assert watchdog_interval(environ, pid) == expected


def test_status_text_goes_out_as_utf8(notify_socket, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket.path))
    notifier = Notifier()
    notifier.set_status("Warten auf kubelet … ✓")
    notify_socket.wait_for(lambda m: m.get("STATUS") == "Warten auf kubelet … ✓")
    notifier.close()


# No filterwarnings marker: a socket left unclosed by a failed connect would be an error here.
def test_a_failing_notify_socket_is_logged_once(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.WARNING)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    notifier = Notifier()
    for _ in range(5):
        notifier.set_status("x")
        notifier.watchdog()
    warnings = [r for r in caplog.records if "cannot notify systemd" in r.getMessage()]
    assert len(warnings) == 1


def test_without_notify_socket_nothing_is_sent_or_logged(caplog, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    notifier.ready("hello")
    assert not notifier.enabled
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
