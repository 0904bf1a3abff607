"""What each import costs the serving process: time and RSS, each measured in a fresh interpreter.

Used by ``side_by_side.py`` (the start and RSS goals are relative to these)
and printed with its table. Each module is imported alone in a new
``python -c``, so a figure includes everything that module pulls in; the
interpreter's own RSS is printed first.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(ROOT / ".venv/bin/python")
# The third-party modules `nvdp serve` has loaded once it is registered (what its start cannot avoid).
SERVE_DEPS = ("import grpc, grpc.aio, pynvml, pydantic, pydantic_settings, sdnotify, tomli_w, google.protobuf, "
              "prometheus_client")
MODULES = (
    "grpc", "grpc.aio", "google.protobuf", "pynvml", "pydantic", "pydantic_settings", "sdnotify", "tomli_w",
    "prometheus_client", "yaml", "nvdp_node.api.deviceplugin_v1beta1_pb2", "nvdp_node.config.schema", "nvdp_node.config",
    "nvdp_node.app.cli", "nvdp_node.app.supervisor",
)
PROBE = """
import sys, time
def rss():
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS'))
before = rss(); t = time.perf_counter()
__import__(sys.argv[1])
print(__import__('json').dumps({'ms': (time.perf_counter() - t) * 1000, 'before': before, 'after': rss()}))
"""


def bare_import(env: Mapping[str, str], statement: str) -> float:
    """Seconds for a fresh interpreter to run ``statement`` (interpreter start included, as in a start)."""
    t = time.monotonic()
    subprocess.run([PYTHON, "-c", statement], check=True, env=dict(env))
    return time.monotonic() - t


def import_cost(env: Mapping[str, str], module: str) -> dict[str, float]:
    out = subprocess.run([PYTHON, "-c", PROBE, module], check=True, env={**env, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True).stdout
    result: dict[str, float] = json.loads(out)
    return result


def print_import_costs(env: Mapping[str, str], runs: int = 3) -> None:
    print("   what each import costs, alone in a fresh interpreter (median of "
          f"{runs}; includes what it imports):")
    base = None
    for module in MODULES:
        costs = sorted((import_cost(env, module) for _ in range(runs)), key=lambda c: c["ms"])
        mid = costs[len(costs) // 2]
        if base is None:
            base = mid["before"]
            print(f"     {'python itself':<42} {'':>9} RSS {base / 1024:6.1f} MiB")
        print(f"     {module:<42} {mid['ms']:7.1f} ms  +{(mid['after'] - mid['before']) / 1024:5.1f} MiB")
    sys.stdout.flush()
