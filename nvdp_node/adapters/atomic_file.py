"""Files other programs read while nvdp rewrites them: written whole or not at all.

Called (on a thread) by the publisher (``nvdp_node.app.publish``) for the
metrics textfile node_exporter scrapes, the NFD features file and
``/run/nvdp/state.json`` that ``nvdp status`` reads; by the CDI spec writer
(``cdi_writer.py``) and for the nvdp-mps@ units' environment files (``mps.py``). A reader must never see
half a file, so each is written to a temporary name in the same directory,
flushed, given its mode (the unit's ``UMask=0077`` would leave it unreadable
for node_exporter's user) and renamed over the old one.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Replace ``path`` by ``text``; raises OSError (the directory is missing, read-only, …)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())  # after a crash: the old file or the new one, never an empty one
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def remove_file(path: Path) -> bool:
    """Remove ``path`` if it is there; True if it was. Other errors raise OSError."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def read_text(path: Path) -> str | None:
    """The file's text, or None when it does not exist."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
