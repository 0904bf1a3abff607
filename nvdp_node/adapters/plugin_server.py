"""nvdp's gRPC server on its unix socket in the kubelet device-plugin directory.

Used by the app layer: one :class:`PluginServer` per resource and serve. It
touches no file in that directory but its own socket, with no window in which
the socket exists with the wrong mode or under a name it did not check:

1. grpc core unlinks a unix listener's path when it binds and again when it
   shuts down, whatever socket is there by then (kubelet deletes plugin
   sockets; another process may have created one in its place). So grpc
   never sees the final path: it binds ``<dir>/.nvdp-<12 hex>/s`` in a
   private 0700 directory, under ``umask(0o177)`` (the socket is born 0600;
   the bind happens in ``add_insecure_port``).
2. The socket then appears at the final path through ``link()``, which is
   atomic and fails instead of replacing anything: a stale socket there is
   removed first, anything else (a symlink, a file) is an error and is left
   alone. Nothing is chmod-ed, so nothing can follow a planted symlink.
3. The server dials itself through the final path (kubelet dials back during
   Register, so Register must never go out before this).
4. When kubelet deletes the final name (it does on every start) the private
   one still listens, so :meth:`PluginServer.republish` links it again.
5. At stop grpc unlinks only its private name; the final path is removed only
   if :func:`~nvdp_node.adapters.fs_identity.socket_identity` still finds our
   socket there. Between that ``lstat`` and the ``unlink`` another process
   could still swap the file; no system call closes that window for a path
   in a directory others write to (there is no unlink-if-inode), and it is
   microseconds wide, against the seconds-long window of grpc's own unlink.

Private directories of processes that died without stopping (only the
pattern, holding nothing but a socket ``s`` nobody listens on) are removed at
start. OS errors keep their text: ``TemporaryError("cannot listen on <path>:
[Errno 30] Read-only file system")``.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import socket
import stat
from pathlib import Path

import grpc

from nvdp_node.adapters.fs_identity import SocketIdentity, socket_identity
from nvdp_node.adapters.plugin_handlers import DevicePluginHandlers, RpcObserver
from nvdp_node.adapters.servicer import DevicePluginServicer
from nvdp_node.api import deviceplugin_v1beta1_pb2 as pb
from nvdp_node.api import deviceplugin_v1beta1_pb2_grpc as pb_grpc
from nvdp_node.domain.errors import TemporaryError

log = logging.getLogger(__name__)

SELF_DIAL_TIMEOUT = 5.0
REPUBLISH_DIAL_TIMEOUT = 1.0
# The servicer ends its ListAndWatch streams before the server stops, so the
# grace only covers a unary call in flight; stop must stay well under 0.5 s.
STOP_GRACE = 0.2
PRIVATE_DIR = re.compile(r"\.nvdp-[0-9a-f]{12}")
BOUND_NAME = "s"

_live_private_dirs: set[Path] = set()  # this process's, never "leftovers"


def unix_target(path: Path) -> str:
    return f"unix://{path}"


class PluginServer:
    """A started-and-proven DevicePlugin server, or nothing."""

    def __init__(self, socket_path: Path, servicer: DevicePluginServicer, *, rpc: RpcObserver | None = None) -> None:
        self.socket_path = socket_path
        self.servicer = servicer
        self._rpc = rpc
        self._server: grpc.aio.Server | None = None
        self._handlers: DevicePluginHandlers | None = None
        self._private: Path | None = None
        self._identity: SocketIdentity | None = None

    async def start(self) -> None:
        remove_leftover_private_dirs(self.socket_path.parent)
        self._handlers = DevicePluginHandlers(self.servicer, rpc=self._rpc)
        self._server = grpc.aio.server()
        self._handlers.add_to(self._server)
        try:
            self._private = _make_private_dir(self.socket_path.parent)
            bound = self._private / BOUND_NAME
            _bind(self._server, bound)
            await self._server.start()
            self._identity = socket_identity(bound)
            _publish(bound, self.socket_path)
        except OSError as err:
            await self.stop()
            raise TemporaryError(f"cannot listen on {self.socket_path}: {_os_text(err)}", delay=1.0) from err
        except BaseException:
            await self.stop()
            raise
        if not self._owns_socket():
            await self.stop()
            raise TemporaryError(f"{self.socket_path} was replaced as soon as it appeared", delay=1.0)
        await self._self_dial()
        log.info("serving on %s", self.socket_path)

    async def _self_dial(self) -> None:
        try:
            await self._call_options(SELF_DIAL_TIMEOUT)
        except grpc.aio.AioRpcError as err:
            await self.stop()
            raise TemporaryError(f"own socket {self.socket_path} does not answer: {err.details()}") from err

    async def answers(self, timeout: float = 2.0) -> bool:
        """A liveness probe through the real socket (used before each watchdog ping)."""
        try:
            await self._call_options(timeout)
        except grpc.aio.AioRpcError as err:
            log.warning("self-check on %s failed: %s", self.socket_path, err.details())
            return False
        return True

    async def _call_options(self, timeout: float, *, wait_for_ready: bool = True) -> None:
        async with grpc.aio.insecure_channel(unix_target(self.socket_path)) as channel:
            stub = pb_grpc.DevicePluginStub(channel)
            await stub.GetDevicePluginOptions(pb.Empty(), timeout=timeout, wait_for_ready=wait_for_ready)

    async def republish(self) -> bool:
        """Put our socket back at its final name, same listener, after kubelet deleted it.

        Kubelet removes every plugin socket when it starts but leaves
        directories, so grpc still listens on its private name: a new link
        (and the self-dial) serves again in well under a millisecond, where a
        new server takes several. False when that listener is gone too or does
        not answer (the caller then stops this server and starts a new one);
        True, not serving yet, when the new link was deleted again at once
        (the deletion wakes the next pass, which links it again).
        """
        if self._server is None or self._private is None or self._identity is None:
            return False
        bound = self._private / BOUND_NAME
        try:
            if socket_identity(bound) != self._identity:
                return False
            os.link(bound, self.socket_path)  # never replaces anything: whatever is there now stays
        except OSError as err:
            log.debug("cannot link %s again: %s", self.socket_path, err)
            return False
        try:
            # Fail fast: kubelet may still be cleaning the directory and delete the new link at
            # once, and a dial that waits for the path would wait out its whole deadline.
            await self._call_options(REPUBLISH_DIAL_TIMEOUT, wait_for_ready=False)
        except grpc.aio.AioRpcError as err:
            if not self._owns_socket():
                log.debug("%s was removed again while dialling it; the next pass links it again", self.socket_path)
                return True
            log.warning("own socket %s does not answer after linking it again: %s", self.socket_path, err.details())
            return False
        log.info("serving on %s again (same listener)", self.socket_path)
        return True

    def intact(self) -> bool:
        """True while serving and our socket file is still ours (kubelet deletes it on restart)."""
        return self._server is not None and self._owns_socket()

    async def stop(self) -> None:
        """Stop serving; remove our socket if it is still ours, and our private directory."""
        self.servicer.close()
        if self._server is not None:
            await self._server.stop(grace=STOP_GRACE)
            self._server = None
        if self._handlers is not None:
            self._handlers.close()
            self._handlers = None
        if self._owns_socket():
            self.socket_path.unlink(missing_ok=True)
        self._identity = None
        if self._private is not None:
            _remove_private_dir(self._private)
            self._private = None

    def _owns_socket(self) -> bool:
        if self._identity is None:
            return False
        try:
            return socket_identity(self.socket_path) == self._identity
        except OSError:
            return False


def _make_private_dir(socket_dir: Path) -> Path:
    private = socket_dir / f".nvdp-{secrets.token_hex(6)}"
    os.mkdir(private, 0o700)
    _live_private_dirs.add(private)
    return private


def _bind(server: grpc.aio.Server, path: Path) -> None:
    # umask is process-wide: a file another thread creates in these
    # microseconds is born 0600 too, which nvdp's unit (UMask=0077) does anyway.
    old = os.umask(0o177)
    try:
        server.add_insecure_port(unix_target(path))
    except RuntimeError as err:
        failed = err
    else:
        return
    finally:
        os.umask(old)
    _probe_bind(path)
    raise TemporaryError(f"cannot listen on {path}: {failed}", delay=1.0)


def _probe_bind(path: Path) -> None:
    """grpc only says "Failed to bind": bind a plain socket there to raise the OSError it hit."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.bind(str(path))
    path.unlink(missing_ok=True)


def _publish(bound: Path, final: Path) -> None:
    try:
        os.link(bound, final)
        return
    except FileExistsError:
        pass
    remove_stale_socket(final)
    os.link(bound, final)


def remove_stale_socket(path: Path) -> None:
    """Remove a leftover socket at ``path``; refuse to delete anything that is not a socket."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise TemporaryError(f"{path} exists and is not a socket; not removing it", delay=5.0)
    log.info("removing stale socket %s", path)
    path.unlink(missing_ok=True)


def _remove_private_dir(private: Path) -> None:
    _live_private_dirs.discard(private)
    try:
        (private / BOUND_NAME).unlink(missing_ok=True)  # grpc has unlinked it unless the bind failed
        private.rmdir()
    except FileNotFoundError:
        pass
    except OSError as err:
        log.warning("cannot remove %s: %s", private, _os_text(err))


def remove_leftover_private_dirs(socket_dir: Path) -> list[str]:
    """Remove the private directories of dead nvdp processes; return their names.

    Only a directory named ``.nvdp-<12 hex>`` holding nothing, or nothing but
    a socket ``s`` that refuses connections, is a leftover; anything else in
    it means it is not ours to remove.
    """
    try:
        entries = list(os.scandir(socket_dir))
    except OSError:
        return []  # the serve that follows reports why the directory is unusable
    removed = []
    for entry in entries:
        path = Path(entry.path)
        if not PRIVATE_DIR.fullmatch(entry.name) or path in _live_private_dirs:
            continue
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            inside = os.listdir(path)
            if inside == [BOUND_NAME]:
                bound = path / BOUND_NAME
                if socket_identity(bound) is None or _listening(bound):
                    continue
                bound.unlink()
            elif inside:
                continue
            path.rmdir()
        except OSError as err:
            log.warning("cannot remove leftover %s: %s", path, _os_text(err))
            continue
        removed.append(entry.name)
    if removed:
        log.info("removed leftover socket directories in %s: %s", socket_dir, ", ".join(removed))
    return removed


def _listening(path: Path) -> bool:
    """Whether a process still accepts connections on the socket at ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)
        try:
            probe.connect(str(path))
        except OSError as err:
            return err.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    return True


def _os_text(err: OSError) -> str:
    """``[Errno 30] Read-only file system``: the error without the file name (the caller names the path)."""
    return f"[Errno {err.errno}] {err.strerror}" if err.errno else str(err)
