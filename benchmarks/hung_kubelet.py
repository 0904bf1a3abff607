"""Section 7 of ``bench_daemon.py``: READY, watchdog and stop times when kubelet never answers.

Each run starts ``nvdp serve`` against a ``kubelet.sock`` that accepts the
connection and never speaks (so nvdp's Register hangs until its 20 s
deadline), with ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC=2000000`` (a ping is
due every 1 s). Measured from the datagrams' arrival times: process start →
``READY=1``, the gaps between watchdog pings while Register hangs, and
SIGTERM → process exit. Goals (issue 11): READY ≤ 1 s whatever kubelet does,
pings on time, SIGTERM → exit < 1 s.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.harness import NotifyLog, SilentKubelet, nth, spread

if TYPE_CHECKING:
    from benchmarks.bench_daemon import Bench

WATCHDOG_USEC = 2_000_000


def hung_kubelet(bench: Bench, runs: int, pings: int = 4) -> None:
    ready, first_ping, gaps, stops, codes = [], [], [], [], []
    still_hung = 0
    for _ in range(runs):
        directory = Path(tempfile.mkdtemp(prefix="hk-", dir="/tmp"))
        kubelet = SilentKubelet(directory / "kubelet.sock")
        notify = NotifyLog(directory)
        try:
            started = time.monotonic()
            proc = bench.start_nvdp(directory, {"NOTIFY_SOCKET": str(notify.path),
                                                "WATCHDOG_USEC": str(WATCHDOG_USEC)})
            try:
                ready_at = notify.wait(nth("READY"), 20, "READY=1")
                last = notify.wait(nth("WATCHDOG", pings), 20, f"{pings} watchdog pings")
                times = notify.times("WATCHDOG", before=last + 1e-9)
                # Register is still in flight: kubelet holds the connection and never answered.
                still_hung += kubelet.connected.is_set() and proc.poll() is None
                sent = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                codes.append(proc.wait(10))
                stops.append(time.monotonic() - sent)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        finally:
            notify.close()
            kubelet.close()
            shutil.rmtree(directory, ignore_errors=True)
        ready.append(ready_at - started)
        first_ping.append(times[0] - started)
        gaps += [b - a for a, b in zip(times, times[1:])]
    print(f"7. kubelet.sock accepts and never answers (Register hangs), n={runs}")
    print(f"   process start -> READY=1:         {spread(ready)}  (goal <= 1 s)")
    print(f"   process start -> first ping:      {spread(first_ping)}")
    print(f"   gap between watchdog pings, n={len(gaps)}: {spread(gaps)}  "
          f"(goal: every {WATCHDOG_USEC / 2e6:.0f} s; WatchdogSec {WATCHDOG_USEC / 1e6:.0f} s)")
    print(f"   SIGTERM -> exit:                  {spread(stops)}  (goal < 1 s); exit codes {sorted(set(codes))}")
    print(f"   runs where Register was still hanging when SIGTERM came: {still_hung} of {runs}")
