"""A tiny, steerable device plugin for the kubelet stand-in's own tests (real gRPC, real sockets).

``TinyPlugin`` serves ``v1beta1.DevicePlugin`` on a unix socket in the peer's directory and
registers the way a device plugin registers with kubelet: a device list, health pushes and
per-method error injection. Used by tests/test_kubelet_peer.py and tests/kubelet_peer_tests/.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from nvdp_node.api import deviceplugin_v1beta1_pb2 as pb
from nvdp_node.api import deviceplugin_v1beta1_pb2_grpc as pb_grpc

RES = "example.com/gpu"


def dev(dev_id: str, health: str = "Healthy", numa: tuple[int, ...] = ()) -> pb.Device:
    d = pb.Device(ID=dev_id, health=health)
    if numa:
        d.topology.nodes.extend(pb.NUMANode(ID=n) for n in numa)
    return d


class TinyPlugin(pb_grpc.DevicePluginServicer):
    """A steerable DevicePlugin: device list, health pushes, per-method error injection."""

    def __init__(
        self,
        plugin_dir: Path,
        name: str = "tiny.sock",
        devices: list[pb.Device] | None = None,
        *,
        preferred: bool = False,
        pre_start: bool = False,
    ):
        self.plugin_dir = Path(plugin_dir)
        self.name = name
        self.socket_path = self.plugin_dir / name
        self.options = pb.DevicePluginOptions(pre_start_required=pre_start, get_preferred_allocation_available=preferred)
        self.fail: dict[str, str] = {}  # method -> error text (status UNKNOWN)
        self.list_and_watch_fail_after: int | None = None  # abort the stream after N messages
        self.preferred_answer: list[str] | None = None
        self.allocate_response: pb.AllocateResponse | None = None
        self.requests: list[tuple[str, Any]] = []
        self._devices = list(devices or [])
        self._version = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._server: grpc.Server | None = None
        self.active_streams = 0

    # steering ----------------------------------------------------------------
    def start(self) -> TinyPlugin:
        self._stopping = False
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        pb_grpc.add_DevicePluginServicer_to_server(self, server)
        server.add_insecure_port(f"unix:{self.socket_path}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._server is not None:
            self._server.stop(None).wait(5)
            self._server = None

    def register(self, resource: str = RES, version: str = "v1beta1", endpoint: str | None = None) -> None:
        with grpc.insecure_channel(f"unix:{self.plugin_dir / 'kubelet.sock'}") as ch:
            pb_grpc.RegistrationStub(ch).Register(
                pb.RegisterRequest(version=version, endpoint=self.name if endpoint is None else endpoint,
                                   resource_name=resource, options=self.options),
                timeout=15,
                wait_for_ready=True,
            )

    def set_devices(self, devices: list[pb.Device]) -> None:
        with self._cond:
            self._devices = list(devices)
            self._version += 1
            self._cond.notify_all()

    def set_health(self, dev_id: str, health: str) -> None:
        with self._cond:
            devices = []
            for d in self._devices:
                c = pb.Device()
                c.CopyFrom(d)
                if c.ID == dev_id:
                    c.health = health
                devices.append(c)
        self.set_devices(devices)

    def called(self, method: str) -> list[Any]:
        return [r for m, r in list(self.requests) if m == method]

    # servicer -----------------------------------------------------------------
    def _enter(self, method: str, request: Any, context: grpc.ServicerContext) -> None:
        self.requests.append((method, request))
        if method in self.fail:
            context.abort(grpc.StatusCode.UNKNOWN, self.fail[method])

    def GetDevicePluginOptions(self, request, context):  # noqa: N802
        self._enter("GetDevicePluginOptions", request, context)
        return self.options

    def ListAndWatch(self, request, context) -> Iterator[pb.ListAndWatchResponse]:  # noqa: N802
        self._enter("ListAndWatch", request, context)
        with self._cond:
            self.active_streams += 1
        context.add_callback(self._stream_ended)
        sent, seen = 0, -1
        while True:
            if self.list_and_watch_fail_after is not None and sent >= self.list_and_watch_fail_after:
                context.abort(grpc.StatusCode.UNKNOWN, "injected ListAndWatch failure")
            with self._cond:
                if self._stopping or not context.is_active():
                    return
                if self._version == seen:
                    self._cond.wait(0.05)
                    continue
                seen = self._version
                msg = pb.ListAndWatchResponse(devices=self._devices)
            yield msg
            sent += 1

    def _stream_ended(self) -> None:
        with self._cond:
            self.active_streams -= 1
            self._cond.notify_all()

    def wait_streams(self, count: int, timeout: float = 5.0) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.active_streams == count, timeout), self.active_streams

    def GetPreferredAllocation(self, request, context):  # noqa: N802
        self._enter("GetPreferredAllocation", request, context)
        creq = request.container_requests[0]
        answer = self.preferred_answer
        if answer is None:
            # sorted, so the answer does not depend on the (shuffled) request order
            answer = sorted(creq.must_include_deviceIDs) + sorted(
                d for d in creq.available_deviceIDs if d not in creq.must_include_deviceIDs
            )
            answer = answer[: creq.allocation_size]
        return pb.PreferredAllocationResponse(
            container_responses=[pb.ContainerPreferredAllocationResponse(deviceIDs=answer)]
        )

    def Allocate(self, request, context):  # noqa: N802
        self._enter("Allocate", request, context)
        if self.allocate_response is not None:
            return self.allocate_response
        return pb.AllocateResponse(
            container_responses=[
                pb.ContainerAllocateResponse(envs={"TINY_DEVICES": ",".join(c.devices_ids)})
                for c in request.container_requests
            ]
        )

    def PreStartContainer(self, request, context):  # noqa: N802
        self._enter("PreStartContainer", request, context)
        return pb.PreStartContainerResponse()


@contextmanager
def plugin_factory(plugin_dir: Path) -> Iterator[Callable[..., TinyPlugin]]:
    """``make(devices, name=..., **kw)`` -> a started TinyPlugin in ``plugin_dir``; all stopped at exit."""
    made: list[TinyPlugin] = []

    def make(devices: list[pb.Device] | None = None, name: str = "tiny.sock", **kw: Any) -> TinyPlugin:
        p = TinyPlugin(plugin_dir, name, devices, **kw).start()
        made.append(p)
        return p

    try:
        yield make
    finally:
        for p in made:
            p.stop()


def tiny_devices(resp: pb.ContainerAllocateResponse) -> list[str]:
    """The ids TinyPlugin's Allocate saw, sorted: kubelet sends them in no particular order."""
    return sorted(resp.envs["TINY_DEVICES"].split(","))


def rpc_error_text(excinfo: pytest.ExceptionInfo[grpc.RpcError]) -> tuple[grpc.StatusCode, str]:
    err = excinfo.value
    return err.code(), err.details()  # type: ignore[attr-defined]

