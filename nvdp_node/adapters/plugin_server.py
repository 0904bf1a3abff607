"""nvdp's gRPC server on its unix socket in the kubelet device-plugin directory.

Used by the supervisor: one :class:`PluginServer` per resource and serve.
It owns the socket file: it removes a stale one before listening, keeps it
0600, proves it serves by dialling itself (kubelet dials back during Register,
so Register must never go out before this), and on stop removes the socket
only if it is still the one it created.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import grpc

from nvdp_node.adapters.servicer import DevicePluginServicer
from nvdp_node.api import deviceplugin_v1beta1_pb2 as pb
from nvdp_node.api import deviceplugin_v1beta1_pb2_grpc as pb_grpc
from nvdp_node.domain.errors import TemporaryError

log = logging.getLogger(__name__)

SELF_DIAL_TIMEOUT = 5.0


def unix_target(path: Path) -> str:
    return f"unix://{path}"


class PluginServer:
    """A started-and-proven DevicePlugin server, or nothing."""

    def __init__(self, socket_path: Path, servicer: DevicePluginServicer) -> None:
        self.socket_path = socket_path
        self.servicer = servicer
        self._server: grpc.aio.Server | None = None
        self._identity: tuple[int, int] | None = None

    async def start(self) -> None:
        remove_stale_socket(self.socket_path)
        server = grpc.aio.server()
        pb_grpc.add_DevicePluginServicer_to_server(self.servicer, server)
        try:
            server.add_insecure_port(unix_target(self.socket_path))
        except RuntimeError as err:
            raise TemporaryError(f"cannot listen on {self.socket_path}: {err}", delay=1.0) from err
        await server.start()
        self._server = server
        os.chmod(self.socket_path, 0o600)
        self._identity = _identity(self.socket_path)
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

    async def _call_options(self, timeout: float) -> None:
        async with grpc.aio.insecure_channel(unix_target(self.socket_path)) as channel:
            stub = pb_grpc.DevicePluginStub(channel)
            await stub.GetDevicePluginOptions(pb.Empty(), timeout=timeout, wait_for_ready=True)

    def intact(self) -> bool:
        """True while serving and our socket file is still ours (kubelet deletes it on restart)."""
        return self._server is not None and self._owns_socket()

    async def stop(self) -> None:
        self.servicer.close()
        if self._server is not None:
            await self._server.stop(grace=0.5)
            self._server = None
        if self._owns_socket():
            self.socket_path.unlink(missing_ok=True)
        self._identity = None

    def _owns_socket(self) -> bool:
        return self._identity is not None and _identity(self.socket_path) == self._identity


def _identity(path: Path) -> tuple[int, int] | None:
    """(inode, ctime): a socket re-created at once may get the same inode number back."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_ctime_ns)


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
