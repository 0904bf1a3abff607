"""nvdp side by side with another v1beta1 plugin binary (``scripts/bench --peer PATH``), printed with ratios.

Both plugins run on the same mock NVML (8× H100) against the same stand-in
kubelet, each round in its own private mount namespace (``peer_round.py``;
NVIDIA's plugin serves only in ``/var/lib/kubelet/device-plugins``, so each
round gets a tmpfs over ``/var/lib``). Rounds alternate (nvdp first in even
rounds, the peer first in odd ones) so that both see the same machine noise.
``scripts/build-peer`` builds NVIDIA's v0.20.0 plugin for this. The goals
are issue 15's: worst kubelet restart → Register ≤ 10 ms, start → Register ≤
1.1 × the bare import of what ``nvdp serve`` imports, idle RSS ≤ 1.5 × the
peer's, Allocate ≤ 1.05 × nvdp's own empty call.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.harness import ms, pct
from benchmarks.import_costs import SERVE_DEPS, bare_import, print_import_costs

ROOT = Path(__file__).resolve().parents[1]
# The peer is told to serve without a container toolkit: no CDI, the envvar device list, NVML
# discovery, no MIG, and to keep running whatever init finds.
PEER_FLAGS = ["--fail-on-init-error=false", "--mig-strategy=none", "--device-list-strategy=envvar",
              "--device-id-strategy=uuid", "--device-discovery-strategy=nvml", "--pass-device-specs=false"]
# tmpfs over /var/lib in a private mount namespace; the round's command follows as "$@".
NAMESPACE = ('mount --make-rprivate / && mount -t tmpfs -o mode=0755 nvdp-bench /var/lib && '
             'mkdir -p /var/lib/kubelet/device-plugins /var/lib/kubelet/pod-resources && exec "$@"')


def in_namespace(command: list[str]) -> list[str]:
    unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-r", "-m"]
    return [*unshare, "sh", "-c", NAMESPACE, "sh", *command]


def one_round(bench: Any, plugin: list[str], calls: int, restarts: int) -> dict[str, Any]:
    ids = [g["uuid"] for g in bench.node.profile["gpus"]]
    command = [sys.executable, str(ROOT / "benchmarks/peer_round.py"), "--ids", ",".join(ids),
               "--calls", str(calls), "--restarts", str(restarts), "--", *plugin]
    done = subprocess.run(in_namespace(command), env=bench.env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"round of {plugin[0]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def side_by_side(bench: Any, peer_binary: Path, rounds: int, calls: int, restarts: int) -> None:
    nvdp = [str(ROOT / ".venv/bin/nvdp"), "--config", str(bench.config), "serve",
            "--sysfs-root", str(bench.work / "sys")]
    peer = [str(peer_binary), *PEER_FLAGS]
    samples: dict[str, dict[str, list[Any]]] = {"nvdp": {}, "peer": {}}
    for r in range(rounds):
        order = [("nvdp", nvdp), ("peer", peer)] if r % 2 == 0 else [("peer", peer), ("nvdp", nvdp)]
        for side, argv in order:
            result = one_round(bench, argv, calls, restarts)
            for key, value in result.items():
                samples[side].setdefault(key, []).extend(value if isinstance(value, list) else [value])
        print(f"   round {r + 1}/{rounds}: nvdp start {ms(samples['nvdp']['start'][-1])}, "
              f"peer start {ms(samples['peer']['start'][-1])}", flush=True)
    imports = [bare_import(bench.env, SERVE_DEPS) for _ in range(max(3, rounds))]
    report(samples, statistics.median(imports), peer_binary)
    print_import_costs(bench.env)


def report(samples: dict[str, dict[str, list[Any]]], imports: float, peer_binary: Path) -> None:
    a, b = samples["nvdp"], samples["peer"]

    def row(what: str, x: float, y: float, unit: str = "ms", goal: str = "") -> None:
        fx, fy = (ms(x), ms(y)) if unit == "ms" else (f"{x:.1f} MiB", f"{y:.1f} MiB")
        print(f"   {what:<44} {fx:>11} {fy:>11} {x / y:>7.2f}  {goal}")

    print(f"   {'':<44} {'nvdp':>11} {'peer':>11} {'ratio':>7}  goal   (peer: {peer_binary})")
    row("start -> Register (median)", statistics.median(a["start"]), statistics.median(b["start"]))
    for q in (50, 99):
        row(f"Allocate (2 GPUs) p{q}", pct(a["allocate"], q), pct(b["allocate"], q))
        row(f"empty unary call (nvdp's grpc.aio) p{q}", pct(a["empty"], q), pct(b["empty"], q))
    rss_a, rss_b = statistics.median(a["rss_kib"]) / 1024, statistics.median(b["rss_kib"]) / 1024
    row("idle RSS (median)", rss_a, rss_b, unit="MiB", goal="nvdp <= 1.5 x peer")
    floor = statistics.median(a["empty_rss_kib"]) / 1024
    print(f"   {'idle RSS of the empty grpc.aio server':<44} {floor:>7.1f} MiB  (Python + grpcio serving nothing: "
          f"{floor / rss_b:.2f} x peer)")
    for label, key in (("kubelet restart -> Register", "restart"), ("kubelet.sock listening -> Register",
                                                                   "restart_listen")):
        row(f"{label} p50", pct(a[key], 50), pct(b[key], 50))
        row(f"{label} p99", pct(a[key], 99), pct(b[key], 99))
        row(f"{label} max", max(a[key]), max(b[key]), goal="nvdp max <= 10 ms" if key == "restart_listen" else "")
    row("GetPreferredAllocation (1..8 of 8) p50", pct(a["preferred"], 50), pct(b["preferred"], 50))
    row("GetPreferredAllocation (1..8 of 8) p99", pct(a["preferred"], 99), pct(b["preferred"], 99))
    start = statistics.median(a["start"])
    alloc50, alloc99 = pct(a["allocate"], 50) / pct(a["empty"], 50), pct(a["allocate"], 99) / pct(a["empty"], 99)
    print(f"   goals: worst restart -> Register {ms(max(a['restart_listen']))} (<= 10 ms: "
          f"{'met' if max(a['restart_listen']) <= 0.010 else 'missed'}); "
          f"start -> Register {ms(start)} / bare import {ms(imports)} = {start / imports:.2f} (<= 1.1: "
          f"{'met' if start <= 1.1 * imports else 'missed'}); "
          f"idle RSS ratio {rss_a / rss_b:.2f} (<= 1.5: {'met' if rss_a <= 1.5 * rss_b else 'missed'}); "
          f"Allocate / nvdp's empty call p50 {alloc50:.2f}, p99 {alloc99:.2f} (<= 1.05: "
          f"{'met' if alloc50 <= 1.05 else 'missed'} at p50)")
    print(f"   samples: {len(a['start'])} starts, {len(a['allocate'])} Allocate, {len(a['preferred'])} "
          f"GetPreferredAllocation, {len(a['restart'])} restarts per side; all plugins alive after their rounds: "
          f"nvdp {all(a['alive'])}, peer {all(b['alive'])}")
