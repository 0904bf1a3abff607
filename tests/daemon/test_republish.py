"""PluginServer.republish: after kubelet deleted our socket, the same listener is linked at its name again.

Real grpc.aio servers on unix sockets in tmp dirs. Kubelet removes every
plugin socket when it starts but no directory, so grpc's private name still
listens; linking it again serves in well under a millisecond, where a new
server takes several (the kubelet restart → Register path).
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import grpc

from nvdp_node.adapters.plugin_server import PluginServer
from nvdp_node.adapters.servicer import DevicePluginServicer, DeviceState
from nvdp_node.api import deviceplugin_v1beta1_pb2 as pb
from nvdp_node.api import deviceplugin_v1beta1_pb2_grpc as pb_grpc
from nvdp_node.domain.allocation import AllocationPolicy
from nvdp_node.domain.devices import DeviceSet
from tests.daemon.test_plugin_server import OnCreate

SOCK = "nvidia-gpu.sock"


def new_server(socket_dir: Path) -> PluginServer:
    return PluginServer(socket_dir / SOCK, DevicePluginServicer(DeviceState(DeviceSet([]), AllocationPolicy())))


async def options_through(path: Path) -> pb.DevicePluginOptions:
    async with grpc.aio.insecure_channel(f"unix://{path}") as channel:
        return await pb_grpc.DevicePluginStub(channel).GetDevicePluginOptions(pb.Empty(), timeout=5)


def test_a_socket_kubelet_deleted_is_linked_again_to_the_same_listener(tmp_path):
    async def scenario() -> tuple[list[str], list[str], bool]:
        server = new_server(tmp_path)
        await server.start()
        before = sorted(os.listdir(tmp_path))
        (tmp_path / SOCK).unlink()  # kubelet starting: every plugin socket goes, directories stay
        relinked = await server.republish()
        after = sorted(os.listdir(tmp_path))
        await options_through(tmp_path / SOCK)
        intact = server.intact()
        await server.stop()
        return before, after, relinked and intact

    before, after, relinked = asyncio.run(scenario())
    assert relinked
    assert after == before, "the same private directory serves: no new server was started"


def test_a_deleted_socket_whose_listener_is_gone_too_is_not_linked_again(tmp_path):
    async def scenario() -> tuple[bool, bool]:
        server = new_server(tmp_path)
        await server.start()
        (tmp_path / SOCK).unlink()
        private = next(p for p in tmp_path.iterdir() if p.name.startswith(".nvdp-"))
        (private / "s").unlink()  # someone removed grpc's private name as well
        relinked = await server.republish()
        present = (tmp_path / SOCK).exists()
        await server.stop()
        return relinked, present

    relinked, present = asyncio.run(scenario())
    assert not relinked and not present


def test_a_foreign_socket_at_our_name_is_left_in_place_by_republish(tmp_path):
    foreign = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    async def scenario() -> bool:
        server = new_server(tmp_path)
        await server.start()
        (tmp_path / SOCK).unlink()
        foreign.bind(str(tmp_path / SOCK))  # another plugin is quicker than our re-serve
        identity = os.lstat(tmp_path / SOCK).st_ino
        relinked = await server.republish()
        assert os.lstat(tmp_path / SOCK).st_ino == identity
        await server.stop()
        return relinked

    with foreign:
        assert not asyncio.run(scenario())
        assert (tmp_path / SOCK).is_socket()


def test_a_link_kubelet_deletes_again_at_once_keeps_the_listener_for_the_next_link(tmp_path):
    # Kubelet may still be cleaning the directory when the link appears; waiting for the path
    # would wait out the whole self-dial deadline (seconds) with nothing at the name.
    async def scenario() -> tuple[bool, bool, bool]:
        server = new_server(tmp_path)
        await server.start()
        (tmp_path / SOCK).unlink()
        cleaner = OnCreate(tmp_path, SOCK, lambda path: path.unlink())
        try:
            first = await asyncio.wait_for(server.republish(), 2)
        finally:
            cleaner.close()
        gone = not (tmp_path / SOCK).exists()
        second = await server.republish()  # the deletion's inotify event brings the next pass here
        await options_through(tmp_path / SOCK)
        await server.stop()
        return first, gone, second

    first, gone, second = asyncio.run(scenario())
    assert first and gone, "kept, not serving yet, and no wait for a path that is gone"
    assert second, "the same listener is linked again"
