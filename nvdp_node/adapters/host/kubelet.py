"""kubelet as nvdp meets it: the device-plugin directory, kubelet.sock, ``kubelet --version``.

Called by ``nvdp_node.app.host_checks``. Writability is asked with
``os.access`` (injectable: tests run as root, for whom mode bits never
refuse). The version comes from running the kubelet binary with a short
timeout; no binary, a hang or odd output only make the version unknown.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable

from nvdp_node.adapters.host.paths import HostRoot
from nvdp_node.domain.checks import KubeletFacts, PathState

Access = Callable[[str | os.PathLike[str], int], bool]


def read_kubelet(
    paths: HostRoot, *, socket_dir: str, kubelet_socket: str, access: Access = os.access,
) -> KubeletFacts:
    """Facts about kubelet; ``socket_dir``/``kubelet_socket`` are host paths from the config."""
    binary = paths.locate(paths.kubelet_binary)
    output, error = _version(paths, binary) if binary else (None, "")
    return KubeletFacts(
        socket_dir=socket_dir,
        socket_dir_state=_dir_state(paths, socket_dir, access),
        kubelet_socket=kubelet_socket,
        kubelet_socket_state=_socket_state(paths, kubelet_socket),
        binary=binary, version_output=output, version_error=error,
    )


def _dir_state(paths: HostRoot, host_path: str, access: Access) -> PathState:
    path = paths.at(host_path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return PathState.MISSING
    except NotADirectoryError:
        return PathState.WRONG_KIND
    except OSError:
        return PathState.NOT_WRITABLE
    if not stat.S_ISDIR(mode):
        return PathState.WRONG_KIND
    # Creating a socket needs write and search permission on the directory.
    return PathState.PRESENT if access(path, os.W_OK | os.X_OK) else PathState.NOT_WRITABLE


def _socket_state(paths: HostRoot, host_path: str) -> PathState:
    try:
        mode = paths.at(host_path).stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return PathState.MISSING
    except OSError:
        return PathState.WRONG_KIND
    return PathState.PRESENT if stat.S_ISSOCK(mode) else PathState.WRONG_KIND


def _version(paths: HostRoot, binary: str) -> tuple[str | None, str]:
    """(stdout, "") on success, else (None, why)."""
    try:
        done = subprocess.run(
            [str(paths.at(binary)), "--version"], capture_output=True, text=True, errors="replace",
            timeout=paths.command_timeout, check=False, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return None, f"no answer within {paths.command_timeout:g} s"
    except OSError as err:
        return None, err.strerror or str(err)
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or [""])[0][:120]
        return None, f"exit status {done.returncode}" + (f": {detail}" if detail else "")
    return done.stdout, ""
