"""Logging for a journald-managed daemon: plain lines (journald adds time and unit) or JSON.

Called by ``nvdp serve`` at start and again after every successful reload
with the new ``[logging]`` section; each call replaces the handler the last
one installed and nothing else (pytest's, or one a caller added, stay).

Priorities: when stderr is the journal, every line starts with its
sd-daemon(3) prefix (``<3>`` error, ``<4>`` warning, ``<6>`` info, ``<7>``
debug, ``<2>`` critical), which journald strips and stores as the entry's
PRIORITY, so ``journalctl -u nvdp -p warning`` works. Every line of a
multi-line message (a traceback) gets it, because journald makes each line
an entry of its own. "stderr is the journal" means ``$JOURNAL_STREAM`` names
stderr's device and inode, which is how systemd.exec(5) says to detect it;
anywhere else (a terminal, a file, a pipe to another program) the prefix
would only be noise, so it is left out. JSON lines carry ``"priority"`` as
a field as well, and the prefix too when stderr is the journal (journald
strips it, so the stored MESSAGE is still plain JSON).

grpc's own Python loggers are set to CRITICAL: its aio server logs a
traceback at ERROR for every request it cannot handle, so anyone who can
reach the socket could fill the journal. The DevicePlugin handlers
(``adapters/plugin_handlers.py``) count and log such requests themselves.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

_PLAIN = "%(levelname)s %(name)s: %(message)s"
# The aio server's tracebacks come from grpc._cython.cygrpc; grpc._server is
# the threaded server's logger, quieted too in case anything ever uses it.
QUIET_LOGGERS = ("grpc._cython.cygrpc", "grpc._server")


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level (custom levels round down to the next known one)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers that parse structure."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "priority": syslog_priority(record.levelno),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class PriorityPrefix(logging.Formatter):
    """Puts ``<N>`` in front of every line another formatter produced."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))


class _NvdpHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler setup_logging installed, so a second call finds and replaces it."""


def stream_is_journal(stream: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``stream`` is the journal stream systemd connected (``$JOURNAL_STREAM`` = ``dev:ino``)."""
    dev, sep, ino = environ.get("JOURNAL_STREAM", "").partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):  # closed, or not backed by a file descriptor
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def setup_logging(
    level: str = "info",
    fmt: str = "plain",
    *,
    stream: TextIO | None = None,
    environ: Mapping[str, str] = os.environ,
) -> None:
    """Install (or replace) nvdp's handler on the root logger; ``level`` is a logging level name."""
    out = stream if stream is not None else sys.stderr
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else logging.Formatter(_PLAIN)
    if stream_is_journal(out, environ):
        formatter = PriorityPrefix(formatter)
    handler = _NvdpHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.setLevel(level.upper())
    for old in [h for h in root.handlers if isinstance(h, _NvdpHandler)]:
        root.removeHandler(old)
        old.close()  # unregisters it; a StreamHandler never closes its stream
    root.addHandler(handler)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
