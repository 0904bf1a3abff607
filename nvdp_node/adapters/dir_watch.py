"""Wake the supervisor when something changes in the kubelet device-plugin directory.

Kubelet restarts show up here: it deletes every plugin socket and creates
``kubelet.sock`` again. :class:`DirWatcher` uses inotify (through libc, no
extra dependency) on the directory and calls ``wake()`` on any create, delete
or move inside it, or when the directory itself goes away. It is only a
trigger: the supervisor re-checks the real state (inodes) on every wake, and a
periodic poll covers anything inotify cannot see (inotify unavailable, the
directory recreated, a full event queue).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import struct
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
WATCH_MASK = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF
_EVENT_HEADER = struct.Struct("iIII")


class _Inotify:
    """The three libc calls, loaded lazily so non-Linux imports still work."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.init1 = libc.inotify_init1
        self.add_watch = libc.inotify_add_watch
        self.add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]


class DirWatcher:
    """inotify on one directory; ``wake(reason)`` is called on the event loop."""

    def __init__(self, directory: Path, wake: Callable[[str], None]) -> None:
        self.directory = directory
        self._wake = wake
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def active(self) -> bool:
        return self._fd is not None

    def start(self) -> bool:
        """Start watching; False (and a log line) when inotify or the directory is unavailable."""
        self.stop()
        try:
            lib = _Inotify()
        except (OSError, AttributeError) as err:
            log.warning("inotify unavailable (%s); polling %s instead", err, self.directory)
            return False
        fd = lib.init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            log.warning("inotify_init1 failed: %s; polling instead", os.strerror(ctypes.get_errno()))
            return False
        if lib.add_watch(fd, os.fsencode(self.directory), WATCH_MASK) < 0:
            err = os.strerror(ctypes.get_errno())
            os.close(fd)
            log.debug("cannot watch %s: %s", self.directory, err)
            return False
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._readable)
        return True

    def stop(self) -> None:
        if self._fd is not None:
            assert self._loop is not None
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None

    def _readable(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, 64 * 1024)
        except BlockingIOError:
            return
        reasons = []
        lost = False
        for mask, name in parse_events(data):
            if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED):
                lost = True
            reasons.append(f"{describe(mask)} {name}".strip())
        if lost:
            log.warning("%s was removed or moved; falling back to polling until it is back", self.directory)
            self.stop()
        if reasons:
            self._wake("; ".join(reasons))


def parse_events(data: bytes) -> list[tuple[int, str]]:
    """Split a read() of an inotify fd into (mask, name) pairs."""
    events = []
    offset = 0
    while offset + _EVENT_HEADER.size <= len(data):
        _wd, mask, _cookie, length = _EVENT_HEADER.unpack_from(data, offset)
        offset += _EVENT_HEADER.size
        name = data[offset : offset + length].split(b"\0", 1)[0].decode(errors="replace")
        offset += length
        events.append((mask, name))
    return events


def describe(mask: int) -> str:
    names = {
        IN_CREATE: "created",
        IN_DELETE: "deleted",
        IN_MOVED_FROM: "moved away",
        IN_MOVED_TO: "moved in",
        IN_DELETE_SELF: "directory deleted",
        IN_MOVE_SELF: "directory moved",
        IN_Q_OVERFLOW: "event queue overflow",
    }
    return ",".join(text for bit, text in names.items() if mask & bit)
