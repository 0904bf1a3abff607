"""One round of the side-by-side measurements against one v1beta1 plugin binary, as JSON on stdout.

``side_by_side.py`` runs this module once per side and round, each time
inside a private mount namespace with a tmpfs over ``/var/lib``, so that
``/var/lib/kubelet/device-plugins`` (the directory NVIDIA's plugin cannot be
told to leave) is private to the round and both plugins run with their
defaults. The stand-in kubelet (:class:`~tests.kubelet_peer.KubeletPeer`)
runs in this process, in the same namespace; the plugin runs as a child
on the mock NVML the caller put in the environment. Only raw samples
(seconds, KiB) are printed; the caller aggregates them over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nvdp_node.api import deviceplugin_v1beta1_pb2 as pb  # noqa: E402
from nvdp_node.api import deviceplugin_v1beta1_pb2_grpc as pb_grpc  # noqa: E402
from tests.kubelet_peer import KubeletPeer  # noqa: E402

GPU = "nvidia.com/gpu"
PLUGIN_DIR = Path("/var/lib/kubelet/device-plugins")
POD_RESOURCES = Path("/var/lib/kubelet/pod-resources/kubelet.sock")
EMPTY_SOCKET = Path("/var/lib/kubelet/empty.sock")


def rss_kib(pid: int) -> int:
    return next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS"))


def calls(socket: Path, ids: list[str], n: int) -> dict[str, list[float]]:
    """Allocate (2 GPUs) and the empty unary call interleaved, then GetPreferredAllocation of 1..8 of 8."""
    with grpc.insecure_channel(f"unix://{socket}") as a, grpc.insecure_channel(f"unix://{EMPTY_SOCKET}") as b:
        plugin, empty = pb_grpc.DevicePluginStub(a), pb_grpc.DevicePluginStub(b).PreStartContainer
        alloc = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=ids[:2])])
        prefs = [pb.PreferredAllocationRequest(container_requests=[pb.ContainerPreferredAllocationRequest(
            available_deviceIDs=ids, allocation_size=size)]) for size in range(1, len(ids) + 1)]
        ereq = pb.PreStartContainerRequest()
        for _ in range(100):  # warm both channels
            plugin.Allocate(alloc)
            empty(ereq)
        out: dict[str, list[float]] = {"allocate": [], "empty": [], "preferred": []}
        for _ in range(n):
            t = time.perf_counter()
            plugin.Allocate(alloc)
            out["allocate"].append(time.perf_counter() - t)
            t = time.perf_counter()
            empty(ereq)
            out["empty"].append(time.perf_counter() - t)
        for i in range(n // 4):
            t = time.perf_counter()
            plugin.GetPreferredAllocation(prefs[i % len(prefs)])
            out["preferred"].append(time.perf_counter() - t)
    return out


def restarts(peer: KubeletPeer, n: int) -> dict[str, list[float]]:
    """kubelet restart → the first accepted Register: from the restart call and from kubelet.sock listening."""
    from_restart, from_listen = [], []
    for _ in range(n):
        t = time.monotonic()
        peer.restart()
        reg = peer.wait_until(
            lambda t=t: next((r for r in peer.registrations if r.ok and r.resource == GPU and r.time > t), None),
            10, "Register after the restart")
        from_restart.append(reg.time - t)
        from_listen.append(reg.time - peer.served_at)
        peer.wait_node_status(GPU, (8, 8), timeout=10)
    return {"restart": from_restart, "restart_listen": from_listen}


def run_round(argv: list[str], ids: list[str], n_calls: int, n_restarts: int, settle: float) -> dict[str, object]:
    empty = subprocess.Popen([sys.executable, "-c", empty_server(), str(EMPTY_SOCKET)], stdout=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert empty.stdout is not None and empty.stdout.readline().strip() == b"ready"
    try:
        with KubeletPeer(PLUGIN_DIR, pod_resources_socket=POD_RESOURCES) as peer:
            t = time.monotonic()
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                reg = peer.wait_registered(GPU, timeout=20)
                started = reg.time - t
                peer.wait_node_status(GPU, (len(ids), len(ids)), timeout=20)
                time.sleep(settle)  # idle: registered, kubelet's stream open, nothing asked yet
                idle_rss = rss_kib(proc.pid)
                result: dict[str, object] = {"start": started, "rss_kib": idle_rss, "empty_rss_kib": rss_kib(empty.pid)}
                result.update(calls(PLUGIN_DIR / reg.endpoint, ids, n_calls))
                result.update(restarts(peer, n_restarts))
                result["alive"] = proc.poll() is None
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    finally:
        empty.terminate()
        empty.wait()
    return result


def empty_server() -> str:
    from benchmarks.bench_daemon import EMPTY_SERVER  # the same empty call as section 1

    return EMPTY_SERVER


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ids", required=True, help="comma-separated device ids the plugin advertises")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--restarts", type=int, default=20)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("argv", nargs=argparse.REMAINDER, help="the plugin's command line (after --)")
    args = parser.parse_args()
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    result = run_round(argv, args.ids.split(","), args.calls, args.restarts, args.settle)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
