"""sd_notify(3) messages to systemd, through the ``sdnotify`` package.

Used by the supervisor only. sdnotify swallows every error and encodes
latin-1, while systemd expects UTF-8; this wrapper fixes both: text is sent as
UTF-8 bytes, and a failed send is logged once (not on every watchdog ping).
Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping

import sdnotify

log = logging.getLogger(__name__)


class Notifier:
    """The messages nvdp sends; ``status`` remembers the last text for logs and tests."""

    def __init__(self) -> None:
        # sdnotify reads NOTIFY_SOCKET from os.environ itself.
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notifier: sdnotify.SystemdNotifier | None = None
        self._failed = False
        self.status = ""
        if self.enabled:
            try:
                self._notifier = sdnotify.SystemdNotifier(debug=True)
            except OSError as err:
                self._fail(err)

    def send(self, *fields: str) -> None:
        """Send fields (``KEY=value``) in one datagram."""
        if self._notifier is None:
            return
        message = "\n".join(fields)
        try:
            # sdnotify encodes latin-1; mapping UTF-8 bytes 1:1 onto latin-1
            # code points makes it put exactly those UTF-8 bytes on the wire.
            self._notifier.notify(message.encode("utf-8").decode("latin-1"))
        except OSError as err:
            self._fail(err)
        else:
            self._failed = False

    def close(self) -> None:
        if self._notifier is not None and self._notifier.socket is not None:
            self._notifier.socket.close()
        self._notifier = None

    def _fail(self, err: Exception) -> None:
        if not self._failed:
            log.warning("cannot notify systemd (NOTIFY_SOCKET): %s", err)
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
