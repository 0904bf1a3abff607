"""``scripts/gpu-check`` against the mock NVML: it writes its whole report and only ever reads the GPU."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.daemon.conftest import ROOT, clean_env

FIXTURE = ROOT / "tests/fixtures/gpu_check/nvidia-smi-topo-dgx1.txt"
# Answers `topo -m` from a fixture, records every argument list, and refuses anything else.
FAKE_SMI = """#!/bin/sh
echo "$*" >> "{log}"
[ "$*" = "topo -m" ] || {{ echo "not a read-only call: $*" >&2; exit 3; }}
cat "{fixture}"
"""


def run_check(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_SMI.format(log=tmp_path / "smi-calls", fixture=FIXTURE))
    smi.chmod(0o755)
    full = {**env, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OUT": str(tmp_path / "out")}
    return subprocess.run([str(ROOT / "scripts/gpu-check"), "--seconds", "3"], env=full, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_gpu_check_writes_its_report_into_out_and_calls_nvidia_smi_only_for_topo(mock_nvml, tmp_path):
    node = mock_nvml.use("dgx1-v100-8")
    done = run_check(tmp_path, {**clean_env(), **node.env()})
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed_steps"] == [] and summary["devices_rc"] == 0 and summary["gpus"] == 8
    assert summary["registered"] is True
    assert summary["node_status"] == {"nvidia.com/gpu": {"allocatable": 8, "capacity": 8}}
    assert summary["topo_compare"] == "same"
    assert [p["size"] for p in summary["preferred"]] == list(range(1, 9))
    assert {"idle", "link_scan_ms", "cdi"} <= set(summary) and "read the links of 8 GPU(s)" in summary["serve_link_scan"]
    assert summary["idle"]["rss_mib"] > 0 and summary["idle"]["threads"] >= 1
    assert all(h in (out / "report.md").read_text() for h in ("## 1.", "## 2.", "## 3.", "## 4."))
    assert (tmp_path / "smi-calls").read_text() == "topo -m\n"
