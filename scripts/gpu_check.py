"""nvdp on a real NVIDIA GPU: everything into one output directory, read-only towards the GPU.

Run by ``scripts/gpu-check`` (see there); tested against the mock NVML by
``tests/daemon/test_gpu_check.py`` with ``--seconds 3``. Steps, each one
written to its own file and summed up in ``report.md``:

1. ``nvdp devices --json`` (the inventory and the resources serve would advertise);
2. the link table through pynvml (and how long reading it takes) next to
   ``nvidia-smi topo -m``, pair by pair;
3. ``nvdp serve`` against the kubelet stand-in (``tests/kubelet_peer``) for
   ``--seconds``: registration, the health worker's event registration as
   logged, CPU time, context switches (wake-ups) of every thread, RSS; then
   GetPreferredAllocation at every size over the plugin socket;
4. ``nvdp cdi generate``, if this nvdp has that command.

The output directory gets three files, ``report.md``, ``summary.json`` and
``details.txt`` (every raw output, one section each), to stay within the
device tool's limits on what comes back (8 files, 16 MiB each). ``nvdp`` is
``.venv/bin/nvdp`` where that exists, else ``python -m nvdp_node`` with this
Python (the offline wheels of ``scripts/gpu_wheels.py`` on ``PYTHONPATH``).

It never changes GPU settings: the only nvidia-smi call is ``topo -m``, and
nvdp itself only reads NVML.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


DETAIL_CAP = 2 * 2**20  # bytes kept of each raw file in details.txt (the tail, where errors are)


class Report:
    """``report.md``, ``summary.json`` and ``details.txt`` in the output directory; raw files in ``raw`` meanwhile."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.raw = Path(tempfile.mkdtemp(prefix="nvdp-gpu-check-raw-", dir="/tmp"))
        self.lines: list[str] = []
        self.summary: dict[str, Any] = {}

    def say(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def file(self, name: str, text: str) -> Path:
        path = self.raw / name
        path.write_text(text)
        return path

    def close(self) -> None:
        (self.out / "report.md").write_text("\n".join(self.lines) + "\n")
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=2) + "\n")
        with (self.out / "details.txt").open("w") as details:
            for path in sorted(self.raw.iterdir()):
                data = path.read_bytes()
                cut = f" (last {DETAIL_CAP} of {len(data)} bytes)" if len(data) > DETAIL_CAP else ""
                details.write(f"===== {path.name}{cut} =====\n")
                details.write(data[-DETAIL_CAP:].decode(errors="replace").rstrip("\n") + "\n\n")
        shutil.rmtree(self.raw, ignore_errors=True)


def run(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env or child_env(), cwd=ROOT)


def nvdp_command() -> list[str]:
    """The ``nvdp`` entry point of this virtualenv (``.venv``), else this checkout's package run as a module.

    Outside a virtualenv ``/usr/bin/nvdp`` would be an installed package, not this checkout.
    """
    script = Path(sys.executable).parent / "nvdp"
    if sys.prefix != sys.base_prefix and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "nvdp_node"]


def child_env() -> dict[str, str]:
    """This environment with the repository first on ``PYTHONPATH``, keeping whatever was there (the wheels)."""
    path = os.pathsep.join(x for x in (str(ROOT), os.environ.get("PYTHONPATH", "")) if x)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def step_devices(r: Report, nvdp: list[str], config: Path) -> None:
    r.say("## 1. nvdp devices --json")
    p = run([*nvdp, "--config", str(config), "devices", "--json"], 60)
    r.file("devices.json", p.stdout)
    r.file("devices.stderr", p.stderr)
    r.summary["devices_rc"] = p.returncode
    try:
        data = json.loads(p.stdout)
        gpus = data.get("devices", [])
        r.say(f"exit {p.returncode}; driver {data.get('driver_version')}, {len(gpus)} GPU(s): "
              + ", ".join(f"{g.get('index')}:{g.get('name')}" for g in gpus))
        r.summary["gpus"] = len(gpus)
    except ValueError:
        r.say(f"exit {p.returncode}; no JSON (see devices.stderr in details.txt): {p.stderr.strip()[:300]}")


def step_links(r: Report) -> None:
    from nvdp_node.adapters import nvml
    from nvdp_node.domain.topology import describe

    r.say("\n## 2. Link table vs nvidia-smi topo -m")
    t = time.perf_counter()
    nvml.discover()
    t_bare = time.perf_counter() - t
    t = time.perf_counter()
    inventory = nvml.discover(links=True)
    t_links = time.perf_counter() - t
    scan = time_link_scan(inventory)
    r.say(f"discovery {t_bare * 1e3:.1f} ms without the link table, {t_links * 1e3:.1f} ms with it; "
          f"the link scan alone {scan * 1e3:.1f} ms for {len(inventory.gpus)} GPU(s)")
    r.summary["link_scan_ms"] = round(scan * 1e3, 2)
    uuids = [g.uuid for g in inventory.gpus]
    cells = describe(inventory.links, uuids)
    table = ["       " + " ".join(f"GPU{i:<3}" for i in range(len(uuids)))]
    table += [f"GPU{i:<3} " + " ".join(f"{c:<6}" for c in row) for i, row in enumerate(cells)]
    r.file("links.txt", "\n".join(table) + "\n")
    r.file("links.json", json.dumps([[a, b, x.level, x.nvlinks, x.score] for a, b, x in inventory.links.pairs],
                                    indent=1) + "\n")
    r.say("```\n" + "\n".join(table) + "\n```")
    smi = shutil.which("nvidia-smi")
    if smi is None:
        r.say("nvidia-smi not found: comparison skipped")
        r.summary["topo_compare"] = "skipped"
        return
    p = run([smi, "topo", "-m"], 60)  # read-only; nothing else of nvidia-smi is ever called
    r.file("nvidia-smi-topo.txt", p.stdout + p.stderr)
    theirs = parse_topo(p.stdout)
    diffs = [f"GPU{i}-GPU{j}: nvdp {cells[i][j]}, nvidia-smi {theirs[i][j]}"
             for i in range(len(cells)) for j in range(len(cells))
             if i != j and i < len(theirs) and j < len(theirs[i]) and cells[i][j] != theirs[i][j]]
    r.file("topo-compare.txt", "\n".join(diffs) + "\n")
    same = len(theirs) == len(cells) and not diffs
    r.say("nvidia-smi topo -m agrees on every pair" if same else
          f"{len(diffs)} pair(s) differ (NVSwitch nodes: nvidia-smi prints NV<n>, nvdp and upstream count no "
          f"GPU-to-GPU link), see topo-compare.txt in details.txt; nvidia-smi rows {len(theirs)}, nvdp {len(cells)}")
    r.summary["topo_compare"] = "same" if same else f"{len(diffs)} differ"


def time_link_scan(inventory: Any) -> float:
    """Seconds :func:`read_link_table` takes on its own, inside one NVML session."""
    import pynvml

    from nvdp_node.adapters.nvml import nvml_session
    from nvdp_node.adapters.nvml_topology import LinkedGpu, read_link_table

    with nvml_session():
        gpus = [LinkedGpu(g.uuid, pynvml.nvmlDeviceGetHandleByIndex(g.index), g.pci_bus_id) for g in inventory.gpus]
        t = time.perf_counter()
        read_link_table(gpus)
        return time.perf_counter() - t


def parse_topo(text: str) -> list[list[str]]:
    """The GPU×GPU cells of ``nvidia-smi topo -m`` (legend and NIC/CPU columns left out)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", x) for x in text.splitlines()]
    header = next((x.split() for x in lines if x.split()[:1] == ["GPU0"]), [])
    n = sum(1 for h in header if re.fullmatch(r"GPU\d+", h))
    rows = [x.split() for x in lines if re.match(r"^GPU\d+\s", x)]
    return [row[1:1 + n] for row in rows[:n]]


def thread_stats(pid: int) -> dict[str, int]:
    """CPU ticks and context switches summed over the process's threads."""
    total = {"ticks": 0, "voluntary": 0, "nonvoluntary": 0, "threads": 0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text().rsplit(")", 1)[1].split()
            status = (task / "status").read_text()
        except OSError:
            continue
        total["ticks"] += int(stat[11]) + int(stat[12])
        total["voluntary"] += int(re.search(r"voluntary_ctxt_switches:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        total["nonvoluntary"] += int(re.search(r"nonvoluntary_ctxt_switches:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        total["threads"] += 1
    return total


def rss_kib(pid: int) -> int:
    return next(int(x.split()[1]) for x in Path(f"/proc/{pid}/status").read_text().splitlines()
                if x.startswith("VmRSS"))


def step_serve(r: Report, nvdp: list[str], config: Path, seconds: float) -> None:
    r.say(f"\n## 3. nvdp serve against the kubelet stand-in for {seconds:g} s")
    work = Path(tempfile.mkdtemp(prefix="nvdp-gpu-check-", dir="/tmp"))
    plugin_dir = work / "device-plugins"
    plugin_dir.mkdir()
    env = child_env()
    peer_log, serve_log = (r.raw / "kubelet-peer.log").open("w"), (r.raw / "serve.log").open("w")
    peer = subprocess.Popen([sys.executable, "-m", "tests.kubelet_peer", "--dir", str(plugin_dir),
                             "--status-file", str(r.raw / "kubelet-status.json")],
                            stdout=peer_log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    serve = None
    try:
        wait_for(lambda: (plugin_dir / "kubelet.sock").exists(), 10)
        t0 = time.monotonic()
        serve = subprocess.Popen([*nvdp, "--config", str(config), "serve", "--socket-dir", str(plugin_dir),
                                  "--kubelet-socket", str(plugin_dir / "kubelet.sock"), "--pod-resources-socket", ""],
                                 stdout=serve_log, stderr=subprocess.STDOUT, env=env)
        registered = wait_for(lambda: "registered " in (r.raw / "kubelet-peer.log").read_text(), 30)
        t_reg = time.monotonic() - t0
        r.say(f"start → registered: {t_reg * 1e3:.0f} ms" if registered else "not registered within 30 s")
        r.summary["registered"] = registered
        time.sleep(2)  # the health worker registers its events
        before, t1 = thread_stats(serve.pid), time.monotonic()
        time.sleep(seconds)
        after, wall = thread_stats(serve.pid), time.monotonic() - t1
        tick = os.sysconf("SC_CLK_TCK")
        cpu = (after["ticks"] - before["ticks"]) / tick
        wakeups = (after["voluntary"] - before["voluntary"]) + (after["nonvoluntary"] - before["nonvoluntary"])
        idle = {"seconds": round(wall, 1), "cpu_s": cpu, "cpu_pct": round(100 * cpu / wall, 3),
                "wakeups": wakeups, "wakeups_per_s": round(wakeups / wall, 1), "threads": after["threads"],
                "rss_mib": round(rss_kib(serve.pid) / 1024, 1)}
        r.summary["idle"] = idle
        r.say(f"idle over {wall:.0f} s: CPU {cpu:.2f} s = {idle['cpu_pct']} % of a core; "
              f"{wakeups} context switches ({idle['wakeups_per_s']}/s) over {after['threads']} threads; "
              f"RSS {idle['rss_mib']} MiB")
        log = [x for x in (r.raw / "serve.log").read_text().splitlines() if "effective configuration" not in x]
        scans = [x for x in log if "read the links of" in x]
        r.say("serve's own link scan (on a thread once serving): " + (scans[0] if scans else "not logged"))
        r.summary["serve_link_scan"] = scans[0] if scans else None
        events = [x for x in log if re.search(r"event|xid|health", x, re.I)]
        r.say("health worker lines in serve.log (none: events registered without complaint): "
              + ("; ".join(events[:5]) if events else "none"))
        r.summary["health_log"] = events[:20]
        status = r.raw / "kubelet-status.json"
        serving = json.loads(status.read_text()) if status.exists() else {}
        r.file("kubelet-status-serving.json", json.dumps(serving, indent=1) + "\n")
        r.summary["node_status"] = {k: {"allocatable": v.get("allocatable"), "capacity": v.get("capacity")}
                                    for k, v in serving.get("resources", {}).items()}
        r.say(f"kubelet stand-in sees: {r.summary['node_status']}")
        preferred_at_every_size(r, plugin_dir)
    finally:
        for proc in (serve, peer):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        r.summary["serve_rc"] = serve.returncode if serve is not None else None
        r.say(f"serve exit {r.summary['serve_rc']} after SIGTERM")
        shutil.rmtree(work, ignore_errors=True)


def preferred_at_every_size(r: Report, plugin_dir: Path) -> None:
    import grpc

    from nvdp_node.api import deviceplugin_v1beta1_pb2 as pb
    from nvdp_node.api import deviceplugin_v1beta1_pb2_grpc as pb_grpc

    sockets = sorted(plugin_dir.glob("nvidia-*.sock"))
    if not sockets:
        r.say("no plugin socket: GetPreferredAllocation skipped")
        return
    ids = [d["id"] for d in json.loads((r.raw / "devices.json").read_text() or "{}").get("resources", {})
           .get("nvidia.com/gpu", [])]
    answers = []
    with grpc.insecure_channel(f"unix://{sockets[0]}") as channel:
        call = pb_grpc.DevicePluginStub(channel).GetPreferredAllocation
        for size in range(1, len(ids) + 1):
            req = pb.PreferredAllocationRequest(container_requests=[
                pb.ContainerPreferredAllocationRequest(available_deviceIDs=ids, allocation_size=size)])
            times = []
            for _ in range(50):
                t = time.perf_counter()
                got = list(call(req, timeout=5).container_responses[0].deviceIDs)
                times.append(time.perf_counter() - t)
            times.sort()
            answers.append({"size": size, "ids": got, "p50_ms": round(times[25] * 1e3, 3),
                            "max_ms": round(times[-1] * 1e3, 3)})
    r.file("preferred.json", json.dumps(answers, indent=1) + "\n")
    r.summary["preferred"] = [{k: a[k] for k in ("size", "p50_ms", "max_ms")} for a in answers]
    r.say("GetPreferredAllocation (all GPUs available), size: p50/max ms: "
          + ", ".join(f"{a['size']}: {a['p50_ms']}/{a['max_ms']}" for a in answers))


def step_cdi(r: Report, nvdp: list[str], config: Path) -> None:
    r.say("\n## 4. nvdp cdi generate")
    probe = run([*nvdp, "cdi", "generate", "--help"], 30)
    if probe.returncode != 0:
        r.say("this nvdp has no `cdi generate` command: skipped")
        r.summary["cdi"] = "absent"
        return
    cmd = [*nvdp, "--config", str(config), "cdi", "generate"]
    if "--output" in probe.stdout:  # never write into /etc/cdi or /var/run/cdi from a check
        cmd += ["--output", str(r.raw / "cdi.yaml")]
    p = run(cmd, 60)
    r.file("cdi.stdout", p.stdout)
    r.file("cdi.stderr", p.stderr)
    r.summary["cdi"] = p.returncode
    r.say(f"exit {p.returncode}; output in details.txt (cdi.yaml, cdi.stdout)")


def wait_for(ready: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return True
        time.sleep(0.05)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60, help="how long serve idles while measured (default 60)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or f"gpu-check-{time.strftime('%Y%m%d-%H%M%S')}"),
                        help="output directory (default: $OUT, else ./gpu-check-<time>)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    nvdp = nvdp_command()
    r = Report(args.out)
    config = r.file("nvdp.toml", "# gpu-check: the defaults, whatever /etc/nvdp holds\n")
    r.say(f"# nvdp gpu-check, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {platform.node()}, {platform.platform()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, nvdp as `{' '.join(nvdp)}`")
    started = time.monotonic()
    failed = []
    try:
        for name, step in (("devices", lambda: step_devices(r, nvdp, config)), ("links", lambda: step_links(r)),
                           ("serve", lambda: step_serve(r, nvdp, config, args.seconds)),
                           ("cdi", lambda: step_cdi(r, nvdp, config))):
            try:
                step()
            except Exception as err:  # noqa: BLE001 - one failed step must not hide the others' results
                failed.append(name)
                r.say(f"step {name} failed: {type(err).__name__}: {err}")
        r.summary["failed_steps"] = failed
    finally:
        r.say(f"\ntook {time.monotonic() - started:.0f} s; files in {args.out}")
        r.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
