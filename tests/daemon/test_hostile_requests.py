"""Requests that are not DevicePlugin messages, or that make the servicer fail, stay cheap.

In-process: a real PluginServer on a unix socket in a tmp dir, called with raw
bytes through a grpc.aio channel. End to end: the real ``nvdp serve`` flooded
with garbage, its log read back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from nvdp_node.adapters.plugin_server import PluginServer
from nvdp_node.adapters.servicer import DevicePluginServicer, DeviceState
from nvdp_node.api import deviceplugin_v1beta1_pb2 as pb
from nvdp_node.domain.allocation import AllocationPolicy
from nvdp_node.domain.devices import Device, DeviceSet
from tests.daemon.conftest import clean_env

GPU = "nvidia.com/gpu"
GARBAGE = b"\xff\xff\xff\xff"  # a field header with a truncated varint: never a valid message
HANDLERS_LOG = "nvdp_node.adapters.plugin_handlers"
ONE_GPU = DeviceSet([Device(id="GPU-0", index="0", gpu_uuid="GPU-0", numa_node=None)])


@asynccontextmanager
async def serving(socket_dir: Path, servicer_type: type = DevicePluginServicer) -> AsyncIterator[grpc.aio.Channel]:
    server = PluginServer(socket_dir / "nvidia-gpu.sock", servicer_type(DeviceState(ONE_GPU, AllocationPolicy())))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"unix://{server.socket_path}") as channel:
            yield channel
    finally:
        await server.stop()


async def raw_unary(channel: grpc.aio.Channel, method: str, body: bytes) -> bytes:
    return await channel.unary_unary(f"/v1beta1.DevicePlugin/{method}")(body, timeout=5)


async def raw_stream(channel: grpc.aio.Channel, method: str, body: bytes) -> list[bytes]:
    return [r async for r in channel.unary_stream(f"/v1beta1.DevicePlugin/{method}")(body, timeout=5)]


def rpc_error(call: Callable[[], Awaitable[object]]) -> grpc.aio.AioRpcError:
    try:
        asyncio.run(call())  # type: ignore[arg-type]
    except grpc.aio.AioRpcError as err:
        return err
    raise AssertionError("the call succeeded")


@pytest.mark.parametrize(
    "method,call",
    [
        ("GetDevicePluginOptions", raw_unary),
        ("ListAndWatch", raw_stream),
        ("GetPreferredAllocation", raw_unary),
        ("Allocate", raw_unary),
        ("PreStartContainer", raw_unary),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_an_undecodable_request_fails_with_invalid_argument(tmp_path, method, call):
    async def scenario() -> None:
        async with serving(tmp_path) as channel:
            await call(channel, method, GARBAGE)

    err = rpc_error(scenario)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith(f"the request to /v1beta1.DevicePlugin/{method} could not be decoded: ")


def test_two_hundred_undecodable_requests_log_one_warning_then_the_count_at_stop(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)

    async def scenario() -> bytes:
        async with serving(tmp_path) as channel:
            for _ in range(200):
                with pytest.raises(grpc.aio.AioRpcError):
                    await raw_unary(channel, "Allocate", GARBAGE)
            request = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=["GPU-0"])])
            return await raw_unary(channel, "Allocate", request.SerializeToString())

    answer = pb.AllocateResponse.FromString(asyncio.run(scenario()))
    assert answer.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == "GPU-0"
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == HANDLERS_LOG]
    assert [level for level, _ in lines] == ["WARNING", "WARNING"]
    assert lines[0][1].startswith(
        "1 undecodable request in the last minute, e.g. to /v1beta1.DevicePlugin/Allocate: Error parsing message"
    )
    assert lines[1][1].startswith("199 undecodable requests in the last minute")
    assert not [r for r in caplog.records if r.exc_info], "no tracebacks"


class FailingServicer(DevicePluginServicer):
    async def Allocate(self, request: pb.AllocateRequest, context: object) -> pb.AllocateResponse:
        raise RuntimeError("a bug")


def test_a_servicer_exception_fails_the_call_with_internal_and_is_logged_once_with_its_traceback(tmp_path, caplog):
    async def scenario() -> list[grpc.aio.AioRpcError]:
        errors = []
        async with serving(tmp_path, FailingServicer) as channel:
            for _ in range(5):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await raw_unary(channel, "Allocate", pb.AllocateRequest().SerializeToString())
                errors.append(err.value)
        return errors

    errors = asyncio.run(scenario())
    assert {(e.code(), e.details()) for e in errors} == {
        (grpc.StatusCode.INTERNAL, "nvdp could not answer /v1beta1.DevicePlugin/Allocate: RuntimeError")
    }
    lines = [r for r in caplog.records if r.name == HANDLERS_LOG]
    assert [r.getMessage() for r in lines] == [
        "1 failed request in the last minute, e.g. /v1beta1.DevicePlugin/Allocate: RuntimeError: a bug",
        "4 failed requests in the last minute, e.g. /v1beta1.DevicePlugin/Allocate: RuntimeError: a bug",
    ]
    assert lines[0].levelname == "ERROR" and lines[0].exc_info is not None


def test_a_megabyte_unknown_id_gets_invalid_argument_with_a_short_text(tmp_path):
    huge = "GPU-" + "9" * 1_000_000
    request = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=[huge])])

    async def scenario() -> None:
        async with serving(tmp_path) as channel:
            await raw_unary(channel, "Allocate", request.SerializeToString())

    err = rpc_error(scenario)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().endswith(f"unknown device: {huge[:64]}… (1000004 bytes)")


def test_a_flood_of_garbage_leaves_the_daemons_log_small_and_allocate_working(
    nvdp_daemon, kubelet_peer, h100, tmp_path
):
    daemon = nvdp_daemon(
        kubelet_peer.plugin_dir,
        env={**clean_env(), **h100.env()},
        sysfs_root=tmp_path / "sys",
        config='version = 1\n[runtime_check]\npolicy = "off"\n',  # no host-check lines arriving meanwhile
    )
    kubelet_peer.wait_node_status(GPU, (8, 8))
    daemon.wait_log("registered with kubelet")
    before = daemon.log().count("\n")

    async def flood() -> None:
        async with grpc.aio.insecure_channel(f"unix://{daemon.socket}") as channel:
            for _ in range(200):
                with pytest.raises(grpc.aio.AioRpcError):
                    await raw_unary(channel, "Allocate", GARBAGE)

    asyncio.run(flood())
    uuid = h100.profile["gpus"][0]["uuid"]
    response = kubelet_peer.call_allocate(GPU, [uuid])
    assert response.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == uuid
    new_lines = daemon.log().splitlines()[before:]
    # grpc's own logging would have added 200 tracebacks of 7 lines; allow for a late status line.
    assert len(new_lines) <= 3, new_lines
    reports = [line for line in new_lines if "undecodable" in line]
    assert len(reports) == 1 and reports[0].startswith(
        "WARNING nvdp_node.adapters.plugin_handlers: 1 undecodable request in the last minute, "
        "e.g. to /v1beta1.DevicePlugin/Allocate: Error parsing message"
    )


def test_two_hundred_allocates_of_unknown_ids_each_fail_and_log_one_line(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=HANDLERS_LOG)
    bad = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=["GPU-" + "7" * 5000])])

    async def scenario() -> list[grpc.StatusCode]:
        codes = []
        async with serving(tmp_path) as channel:
            for _ in range(200):
                try:
                    await raw_unary(channel, "Allocate", bad.SerializeToString())
                except grpc.aio.AioRpcError as err:
                    codes.append(err.code())
            good = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=["GPU-0"])])
            assert pb.AllocateResponse.FromString(await raw_unary(channel, "Allocate", good.SerializeToString()))
        return codes

    assert asyncio.run(scenario()) == [grpc.StatusCode.INVALID_ARGUMENT] * 200
    lines = [r.getMessage() for r in caplog.records if "Allocate request" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("1 rejected Allocate request in the last minute, e.g. invalid allocation request")
    assert len(lines[0]) < 300, "the id is cut in the log too"
