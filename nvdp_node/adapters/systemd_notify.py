"""sd_notify(3) messages to systemd over ``NOTIFY_SOCKET``, through the ``sdnotify`` package.

Used by the supervisor (and by ``serve`` for its last STATUS= before exit 72).
``sdnotify.SystemdNotifier`` sends the datagrams; this wrapper fixes what it
gets wrong for a long-running daemon. Its constructor reads the process
environment, connects once, and on a failed connect drops the socket
unclosed; its ``notify`` encodes latin-1 while systemd expects UTF-8. So the
connection is made here (:class:`_Connection` replaces only the constructor)
and the text is handed over as UTF-8 bytes mapped 1:1 onto latin-1. Here:

* a failed connect is retried on the next send (``NOTIFY_SOCKET`` may name a
  socket that appears later); a send that fails on a connection that worked
  before reconnects and is retried once (systemd re-creates its socket on
  ``daemon-reexec``); every reconnect closes the old socket first, and
  :meth:`Notifier.close` closes the last;
* a failure is logged once, until a send succeeds again (the watchdog pings
  every 15 s must not fill the journal);
* outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

import sdnotify

log = logging.getLogger(__name__)


class _Connection(sdnotify.SystemdNotifier):
    """sdnotify's notifier on a socket we connect (and can close) ourselves."""

    def __init__(self, address: str) -> None:  # noqa: D107 - deliberately not calling super()
        self.debug = True  # notify() raises instead of swallowing errors
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(address)
        except OSError:
            sock.close()
            raise
        self.socket = sock

    def send(self, data: bytes) -> None:
        # sdnotify encodes latin-1: mapping UTF-8 bytes 1:1 onto latin-1 code
        # points makes it put exactly those UTF-8 bytes on the wire.
        self.notify(data.decode("latin-1"))

    def close(self) -> None:
        self.socket.close()


class Notifier:
    """The messages nvdp sends; ``status`` remembers the last text for logs and tests."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self.address = environ.get("NOTIFY_SOCKET", "")
        self.enabled = bool(self.address)
        self._sock: _Connection | None = None
        self._failed = False
        self.status = ""
        if self.enabled:
            self._connect()

    def send(self, *fields: str) -> None:
        """Send fields (``KEY=value``) in one datagram."""
        if not self.enabled:
            return
        data = "\n".join(fields).encode("utf-8")
        if self._sock is not None:
            try:
                self._sock.send(data)
            except OSError:
                # systemd may have re-created its socket (daemon-reexec): the
                # fresh connection below gets this message there.
                self._drop()
            else:
                self._failed = False
                return
        if not self._connect():
            return
        assert self._sock is not None
        try:
            self._sock.send(data)
        except OSError as err:
            self._drop()
            self._fail(err)
        else:
            self._failed = False

    def close(self) -> None:
        self._drop()
        self.enabled = False

    def _connect(self) -> bool:
        self._drop()
        # "@name" is an abstract socket: its address starts with a NUL byte.
        address = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            self._sock = _Connection(address)
        except OSError as err:
            self._fail(err)
            return False
        return True

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _fail(self, err: OSError) -> None:
        if not self._failed:
            log.warning("cannot notify systemd (NOTIFY_SOCKET=%s): %s; retrying on the next message", self.address, err)
        self._failed = True

    def ready(self, status: str | None = None) -> None:
        self.send("READY=1", *self._status_fields(status))

    def set_status(self, status: str) -> None:
        if status != self.status:
            self.send(*self._status_fields(status))

    def reloading(self) -> None:
        # RELOADING=1 and MONOTONIC_USEC must share one datagram (Type=notify-reload on systemd >= 253).
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str | None = None) -> None:
        self.send("STOPPING=1", *self._status_fields(status))

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def _status_fields(self, status: str | None) -> tuple[str, ...]:
        if status is None:
            return ()
        self.status = " ".join(status.split())  # STATUS= is one line
        log.info("status: %s", self.status)
        return (f"STATUS={self.status}",)


def watchdog_interval(environ: Mapping[str, str] = os.environ, pid: int | None = None) -> float | None:
    """Seconds between pings (half of WatchdogSec), or None when the watchdog is off for us."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and owner != str(pid if pid is not None else os.getpid()):
        return None
    return int(usec) / 2_000_000
