"""Notifier over a real AF_UNIX datagram NOTIFY_SOCKET: late sockets, reconnects, no leaked fds."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from nvdp_node.adapters.systemd_notify import Notifier
from tests.daemon.notify_listener import NotifyListener


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_socket_that_appears_after_the_first_send_gets_the_next_message(tmp_path, caplog):
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify")})  # nobody listens there yet
    notifier.set_status("starting")
    late = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with late:
        late.bind(str(tmp_path / "notify"))
        notifier.ready("serving")
        late.settimeout(5)
        assert late.recv(4096) == b"READY=1\nSTATUS=serving"
    notifier.close()
    assert [r.getMessage() for r in caplog.records if "cannot notify" in r.getMessage()] == [
        f"cannot notify systemd (NOTIFY_SOCKET={tmp_path / 'notify'}): [Errno 2] No such file or directory; "
        "retrying on the next message"
    ]


def test_failed_connects_leave_no_socket_open(tmp_path):
    before = open_fds()
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    for _ in range(20):
        notifier.watchdog()
    assert open_fds() == before
    notifier.close()


def test_close_closes_the_socket_and_later_messages_go_nowhere(tmp_path):
    listener = NotifyListener()
    try:
        before = open_fds()
        notifier = Notifier({"NOTIFY_SOCKET": str(listener.path)})
        notifier.watchdog()
        listener.wait_for(lambda m: "WATCHDOG" in m)
        assert open_fds() == before + 1
        notifier.close()
        assert open_fds() == before
        notifier.ready("after close")
        assert open_fds() == before
    finally:
        listener.close()


def test_a_re_created_socket_gets_the_very_next_message_and_the_old_connection_is_closed(tmp_path, caplog):
    path = tmp_path / "notify"
    first = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    first.bind(str(path))
    notifier = Notifier({"NOTIFY_SOCKET": str(path)})
    notifier.watchdog()
    assert first.recv(4096) == b"WATCHDOG=1"
    first.close()  # systemd re-executes: its socket goes away and comes back
    path.unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as second:
        second.bind(str(path))
        second.settimeout(5)
        fds = open_fds()
        notifier.ready("again")
        assert second.recv(4096) == b"READY=1\nSTATUS=again"
        assert open_fds() == fds
    notifier.close()
    assert not [r for r in caplog.records if "cannot notify" in r.getMessage()]


def test_an_abstract_notify_socket_is_reached(tmp_path):
    name = f"nvdp-test-{os.getpid()}-{id(tmp_path)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as abstract:
        abstract.bind("\0" + name)
        abstract.settimeout(5)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        notifier.ready()
        assert abstract.recv(4096) == b"READY=1"
        notifier.close()
