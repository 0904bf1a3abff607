"""What the metrics cost one RPC: the RpcObserver hook Allocate calls, timed in-process.

Prints figures only (no thresholds): the per-call cost of
``RpcMetrics.rpc_done`` (a counter increment, a histogram observation and
two event sets) next to the cost of an empty Python call, and the time to
render the whole registry for an 8-GPU node and a 48-replica x 8-GPU node
(what the textfile writer thread and the HTTP endpoint do per write or scrape).
Run: .venv/bin/python benchmarks/bench_metrics_overhead.py
"""

from __future__ import annotations

import sys
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import generate_latest  # noqa: E402

from nvdp_node.app.metrics import DeviceFacts, Observer, ResourceFacts, Snapshot  # noqa: E402


def per_call(fn, n: int = 200_000) -> float:
    return min(timeit.repeat(fn, number=n, repeat=5)) / n


def render_time(devices: int) -> float:
    observer = Observer()
    observer.attach(lambda: None, lambda: None)
    facts = tuple(DeviceFacts("nvidia.com/gpu", f"GPU-{i // 48}::{i % 48}", f"GPU-{i // 48}", str(i // 48),
                              "NVIDIA H100 80GB HBM3", True, "", ("ns", f"pod-{i}", "main")) for i in range(devices))
    observer.publish(Snapshot(resources=(ResourceFacts("nvidia.com/gpu", devices, devices, True, True,
                                                       "registered", time.time()),), devices=facts))
    rpc = observer.rpc_metrics("nvidia.com/gpu")
    for method in ("Allocate", "GetPreferredAllocation"):
        rpc.rpc_done(method, "OK", 0.0003)
    return min(timeit.repeat(lambda: generate_latest(observer.registry), number=20, repeat=5)) / 20


def main() -> None:
    observer = Observer()
    observer.attach(lambda: None, lambda: None)
    rpc = observer.rpc_metrics("nvidia.com/gpu")
    hook = per_call(lambda: rpc.rpc_done("Allocate", "OK", 0.0003))
    empty = per_call(lambda: None)
    print(f"rpc_done (Allocate): {hook * 1e6:.2f} us per call; an empty call: {empty * 1e6:.2f} us")
    for devices in (8, 384):
        print(f"render the registry, {devices} devices: {render_time(devices) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
