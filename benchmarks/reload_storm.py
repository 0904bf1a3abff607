"""Section 6 of ``bench_daemon.py``: Allocate latency while nvdp reloads, back to back.

A client calls Allocate over the plugin socket without pause the whole time.
Three windows are compared:

* idle: no reload;
* burst: 100 SIGHUPs sent as fast as ``kill`` goes (the kernel and the
  supervisor coalesce them: a SIGHUP that arrives during a reload asks for
  one more reload, not for one each), until the last reload asked for ends;
* back to back: 100 reloads, each SIGHUP sent the moment the previous
  reload's ``READY=1`` arrives, so 100 reloads really run.

Reported: Allocate p50/p99/max per window, Allocate errors (goal 0), the
SIGHUP → ``READY=1`` time of each reload, registrations seen by the kubelet
stand-in (goal: still 1), whether capacity ever dipped, and whether the daemon
is still running at the end (goal: yes).
"""

from __future__ import annotations

import signal
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.harness import AllocateLoop, NotifyLog, nth, ready_after_reload, spread
from tests.kubelet_peer import KubeletPeer

if TYPE_CHECKING:
    from benchmarks.bench_daemon import Bench

GPU = "nvidia.com/gpu"


def reload_storm(bench: Bench, reloads: int, idle_calls: int) -> None:
    ids = [g["uuid"] for g in bench.node.profile["gpus"]][:2]
    notify = NotifyLog(Path(tempfile.mkdtemp(prefix="ns-", dir="/tmp")))
    try:
        with KubeletPeer(Path(tempfile.mkdtemp(prefix="kp-", dir="/tmp"))) as peer:
            proc = bench.start_nvdp(peer.plugin_dir, {"NOTIFY_SOCKET": str(notify.path)})
            try:
                peer.wait_node_status(GPU, (8, 8), timeout=20)
                notify.wait(nth("READY"), 20, "READY=1")
                with AllocateLoop(peer.plugin_dir / "nvidia-gpu.sock", ids) as loop:
                    loop.wait_count(200)  # warm-up
                    idle_start = time.monotonic()
                    loop.wait_count(200 + idle_calls)
                    idle_end = burst_start = time.monotonic()
                    for _ in range(reloads):
                        proc.send_signal(signal.SIGHUP)
                    last_sent = time.monotonic()
                    burst_end = notify.wait(lambda d: ready_after_reload(d, last_sent), 60, "the burst's last reload")
                    durations = []
                    for _ in range(reloads):
                        sent = time.monotonic()
                        proc.send_signal(signal.SIGHUP)
                        ready = notify.wait(lambda d, s=sent: ready_after_reload(d, s), 30, "READY=1 after a reload")
                        durations.append(ready - sent)
                    serial_end = time.monotonic()
                idle, idle_errors = loop.between(idle_start, idle_end)
                burst, burst_errors = loop.between(burst_start, burst_end)
                serial, serial_errors = loop.between(burst_end, serial_end)
                burst_reloads = len(notify.times("RELOADING", after=burst_start, before=burst_end + 1e-9))
                failed = sum("Reload failed" in f.get("STATUS", "") for _, f in notify.datagrams)
                registrations = peer.registration_count(GPU)
                dipped = peer.history(GPU) != [(8, 8)]
                alive = proc.poll() is None
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait()
    finally:
        notify.close()
    print("6. Allocate (2 GPUs) while nvdp reloads; the client never pauses")
    print(f"   idle, n={len(idle)}:{' ' * 20}{spread(idle)}; errors {len(idle_errors)}")
    print(f"   burst of {reloads} SIGHUPs ({burst_reloads} reloads ran), n={len(burst)}: {spread(burst)}; "
          f"errors {len(burst_errors)}")
    print(f"   {reloads} reloads back to back, n={len(serial)}: {spread(serial)}; errors {len(serial_errors)}")
    print(f"   SIGHUP -> READY=1 per reload: {spread(durations)}")
    print(f"   failed reloads {failed}; registrations {registrations} (goal 1); capacity "
          f"{'dipped' if dipped else 'stayed 8/8'}; daemon {'still running' if alive else 'ENDED'} (goal: running)")
