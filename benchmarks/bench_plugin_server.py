"""PluginServer start and stop times, printed (not pass/fail); goal: stop < 0.5 s.

Stops are timed in the three states kubelet leaves a plugin in: idle, with a
ListAndWatch stream open (the servicer ends it before the server stops), and
with a unary call still running when stop begins (bounded by STOP_GRACE).
Real grpc.aio servers on unix sockets in a temp dir; no NVML needed.
Run with ``.venv/bin/python benchmarks/bench_plugin_server.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nvdp_node.adapters.plugin_server import STOP_GRACE, PluginServer  # noqa: E402
from nvdp_node.adapters.servicer import DevicePluginServicer, DeviceState  # noqa: E402
from nvdp_node.api import deviceplugin_v1beta1_pb2 as pb  # noqa: E402
from nvdp_node.api import deviceplugin_v1beta1_pb2_grpc as pb_grpc  # noqa: E402
from nvdp_node.domain.allocation import AllocationPolicy  # noqa: E402
from nvdp_node.domain.devices import Device, DeviceSet  # noqa: E402

DEVICES = DeviceSet([Device(id=f"GPU-{i}", index=str(i), gpu_uuid=f"GPU-{i}", numa_node=0) for i in range(8)])


class SlowServicer(DevicePluginServicer):
    """PreStartContainer takes 2 s: a call still in flight when stop begins."""

    async def PreStartContainer(self, request: pb.PreStartContainerRequest, context: object) -> pb.PreStartContainerResponse:
        await asyncio.sleep(2)
        return pb.PreStartContainerResponse()


def ms(values: list[float]) -> str:
    q = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    return f"p50 {q[49] * 1000:6.1f} ms  p99 {q[98] * 1000:6.1f} ms  max {max(values) * 1000:6.1f} ms"


async def one(socket_dir: Path, state: str) -> tuple[float, float]:
    server = PluginServer(socket_dir / "nvidia-gpu.sock", SlowServicer(DeviceState(DEVICES, AllocationPolicy())))
    t0 = time.perf_counter()
    await server.start()
    started = time.perf_counter() - t0
    async with grpc.aio.insecure_channel(f"unix://{server.socket_path}") as channel:
        stub = pb_grpc.DevicePluginStub(channel)
        pending = None
        if state == "stream":
            stream = stub.ListAndWatch(pb.Empty())
            await stream.read()
            pending = stream
        elif state == "call-in-flight":
            pending = asyncio.ensure_future(stub.PreStartContainer(pb.PreStartContainerRequest()))
            await asyncio.sleep(0.05)
        t1 = time.perf_counter()
        await server.stop()
        stopped = time.perf_counter() - t1
        if isinstance(pending, asyncio.Future):
            await asyncio.gather(pending, return_exceptions=True)
        elif pending is not None:
            pending.cancel()
    return started, stopped


async def main(runs: int) -> None:
    print(f"PluginServer, grpcio {grpc.__version__}, STOP_GRACE {STOP_GRACE} s, {runs} runs per state")
    with tempfile.TemporaryDirectory(prefix="nvdp-bench-") as tmp:
        for state in ("idle", "stream", "call-in-flight"):
            starts, stops = [], []
            for _ in range(runs):
                started, stopped = await one(Path(tmp), state)
                starts.append(started)
                stops.append(stopped)
            print(f"  {state:<15} start {ms(starts)}   stop {ms(stops)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50)
    asyncio.run(main(parser.parse_args().runs))
