"""Which socket file is at a path: the identity used to tell "still ours" from "replaced".

Called by :class:`~nvdp_node.adapters.plugin_server.PluginServer` for its own
socket and by the app layer for ``kubelet.sock``. A file is identified by
``(st_dev, st_ino)`` plus ``st_mtime_ns``: an inode number freed by an unlink
can come straight back for the next socket, and the modification time (set at
bind) tells the two apart. ctime is deliberately not used: ``chmod``,
``chown``, ``link`` and ``unlink`` of another name all change it, and none of
them makes the socket a different one (kubelet may chmod its socket, nvdp
hard-links its own and removes the first name).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import NamedTuple


class SocketIdentity(NamedTuple):
    dev: int
    ino: int
    mtime_ns: int


def socket_identity(path: Path | str) -> SocketIdentity | None:
    """The identity of the socket at ``path`` itself (``lstat``: a symlink is not followed).

    None when nothing is there or the entry is not a socket (a symlink, a
    regular file): nothing can be connected to or registered with there.
    """
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISSOCK(st.st_mode):
        return None
    return SocketIdentity(st.st_dev, st.st_ino, st.st_mtime_ns)
