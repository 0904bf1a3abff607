"""Section 10: one node with 896 devices (8 GPUs × 7 MIG devices × 16 time-slice replicas).

Called by ``bench_daemon.py``. The mock NVML's ``h100-mig-8`` profile gets
seven 1g.10gb MIG devices on each of its 8 GPUs (``Control.mig``); nvdp
serves them with ``mig_strategy = "single"`` and 16 time-slicing replicas of
``nvidia.com/gpu``, so one resource carries 896 devices. Measured against
the kubelet stand-in, over real sockets (issue 15's goals in brackets):
start → all 896 allocatable (< 1 s), an XID on one MIG device → kubelet's
ListAndWatch update with all 896 devices and that device's 16 replicas
Unhealthy (< 50 ms), Allocate of one replica (< 5 ms), GetPreferredAllocation
of 1..8 out of all 896 (< 5 ms), and RSS once idle.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from benchmarks.harness import ms, pct
from nvdp_node.api import deviceplugin_v1beta1_pb2 as pb
from nvdp_node.api import deviceplugin_v1beta1_pb2_grpc as pb_grpc
from tests.kubelet_peer import KubeletPeer
from tests.mock_nvml.environment import prepare

ROOT = Path(__file__).resolve().parents[1]

GPU = "nvidia.com/gpu"
GPUS, MIG_PER_GPU, REPLICAS = 8, 7, 16
DEVICES = GPUS * MIG_PER_GPU * REPLICAS
CONFIG = f"""[plugin]
mig_strategy = "single"

[[sharing.time_slicing.resources]]
name = "nvidia.com/gpu"
replicas = {REPLICAS}
"""


def scale(bench: Any, starts: int, calls: int, xids: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="nvdp-scale-", dir="/tmp"))
    node = prepare("h100-mig-8", work / "nvml")
    node.write_sysfs(work / "sys")
    for gpu in range(GPUS):
        node.control.mig(gpu, 1, ["1g.10gb"] * MIG_PER_GPU)
    config = work / "config.toml"
    config.write_text(CONFIG)
    env = {**bench.env, **node.env()}
    cmd = [str(ROOT / ".venv/bin/nvdp"), "--config", str(config), "serve", "--sysfs-root", str(work / "sys")]

    def start(peer: KubeletPeer) -> tuple[subprocess.Popen[bytes], float]:
        t = time.monotonic()
        proc = subprocess.Popen([*cmd, "--socket-dir", str(peer.plugin_dir), "--kubelet-socket",
                                 str(peer.plugin_dir / "kubelet.sock")], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peer.wait_node_status(GPU, (DEVICES, DEVICES), timeout=30)
        return proc, time.monotonic() - t

    up = []
    for _ in range(starts):
        with KubeletPeer(Path(tempfile.mkdtemp(prefix="kp-", dir="/tmp"))) as peer:
            proc, took = start(peer)
            up.append(took)
            stop(proc)
    with KubeletPeer(Path(tempfile.mkdtemp(prefix="kp-", dir="/tmp"))) as peer:
        proc, _ = start(peer)
        try:
            time.sleep(2)
            rss = next(int(line.split()[1]) for line in open(f"/proc/{proc.pid}/status") if line.startswith("VmRSS"))
            ids = sorted(d.id for d in peer.devices(GPU))
            with grpc.insecure_channel(f"unix://{peer.plugin_dir}/nvidia-gpu.sock") as channel:
                alloc, pref = rpc_latencies(pb_grpc.DevicePluginStub(channel), ids, calls)
            updates = xid_updates(peer, proc, node, xids)
        finally:
            stop(proc)
    print(f"10. {DEVICES} devices ({GPUS} GPUs x {MIG_PER_GPU} MIG 1g.10gb x {REPLICAS} time-slice replicas, "
          f"one resource):")
    print(f"   start -> all {DEVICES} allocatable: median {ms(statistics.median(up))}, max {ms(max(up))} "
          f"over {starts} starts (goal < 1 s)")
    received, shown, listed, hit = (list(x) for x in zip(*updates))
    print(f"   XID 79 on one MIG device -> a ListAndWatch client receives the update ({min(listed)}-{max(listed)} "
          f"devices, {min(hit)}-{max(hit)} Unhealthy), n={len(received)}: p50 {ms(pct(received, 50))}, "
          f"max {ms(max(received))} (goal < 50 ms)")
    print(f"   ... -> the kubelet stand-in shows it (its own Python accounting of {DEVICES} devices included): "
          f"p50 {ms(pct(shown, 50))}, max {ms(max(shown))}")
    print(f"   Allocate (1 replica), n={len(alloc)}: p50 {ms(pct(alloc, 50))}, p99 {ms(pct(alloc, 99))} (goal < 5 ms)")
    print(f"   GetPreferredAllocation (1..8 of {DEVICES}), n={len(pref)}: p50 {ms(pct(pref, 50))}, "
          f"p99 {ms(pct(pref, 99))} (goal < 5 ms)")
    print(f"   idle RSS, {DEVICES} devices: {rss / 1024:.1f} MiB", flush=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait()


def rpc_latencies(stub: Any, ids: list[str], n: int) -> tuple[list[float], list[float]]:
    allocs = [pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=[i])])
              for i in ids[:64]]
    prefs = [pb.PreferredAllocationRequest(container_requests=[pb.ContainerPreferredAllocationRequest(
        available_deviceIDs=ids, allocation_size=size)]) for size in range(1, 9)]
    for i in range(50):
        stub.Allocate(allocs[i % len(allocs)])
        stub.GetPreferredAllocation(prefs[i % len(prefs)])
    alloc, pref = [], []
    for i in range(n):
        t = time.perf_counter()
        stub.Allocate(allocs[i % len(allocs)])
        alloc.append(time.perf_counter() - t)
        t = time.perf_counter()
        stub.GetPreferredAllocation(prefs[i % len(prefs)])
        pref.append(time.perf_counter() - t)
    return alloc, pref


class Listener:
    """A second ListAndWatch client (nvdp counts only kubelet's): the arrival time of every full update."""

    def __init__(self, socket: Path) -> None:
        self._channel = grpc.insecure_channel(f"unix://{socket}")
        self._stream = pb_grpc.DevicePluginStub(self._channel).ListAndWatch(pb.Empty())
        self.updates: list[tuple[float, int, int]] = []  # (time.monotonic(), devices, unhealthy)
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="scale-listener", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for response in self._stream:
                now = time.monotonic()
                bad = sum(d.health != "Healthy" for d in response.devices)
                with self._cond:
                    self.updates.append((now, len(response.devices), bad))
                    self._cond.notify_all()
        except grpc.RpcError:
            return

    def first_after(self, t: float, unhealthy: int) -> tuple[float, int, int]:
        with self._cond:
            found = self._cond.wait_for(lambda: next((u for u in self.updates if u[0] > t and u[2] >= unhealthy),
                                                     None), 10)
        if found is None:
            raise TimeoutError("no ListAndWatch update with the XID's devices Unhealthy within 10 s")
        return found

    def close(self) -> None:
        self._stream.cancel()
        self._channel.close()
        self._thread.join(5)


def xid_updates(peer: KubeletPeer, proc: subprocess.Popen[bytes], node: Any, runs: int) -> list[tuple[float, ...]]:
    """XID 79 with one MIG device's instance ids → (s until a ListAndWatch client has the full update,
    s until the kubelet stand-in shows it, devices in that update, devices Unhealthy)."""
    profile = node.control.current_profile()
    delays = []
    for i in range(runs):
        listener = Listener(peer.plugin_dir / "nvidia-gpu.sock")
        gpu = i % GPUS
        mig = profile["gpus"][gpu]["mig_devices"][i % MIG_PER_GPU]
        t = time.monotonic()
        node.control.xid(gpu, 79, mig["gpu_instance_id"], mig["compute_instance_id"])
        arrived, listed, bad = listener.first_after(t, REPLICAS)
        peer.wait_until(lambda: sum(d.health != "Healthy" for d in peer.devices(GPU)) >= REPLICAS
                        and len(peer.devices(GPU)) == DEVICES, 10, "the replicas Unhealthy")
        delays.append((arrived - t, time.monotonic() - t, listed, bad))
        listener.close()
        proc.send_signal(signal.SIGHUP)  # a reload re-enumerates: every device Healthy again
        peer.wait_until(lambda: all(d.health == "Healthy" for d in peer.devices(GPU)), 20, "all Healthy again")
        time.sleep(0.3)  # the restarted health worker registers its events
    return delays
