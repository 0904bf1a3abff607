"""``scripts/gpu-check`` against the mock NVML: it writes its whole report and only ever reads the GPU.

The offline case packs real wheels for this machine's ``/usr/bin/python3``
(``scripts/gpu-check --pack --python-version 3.11``, which needs the pip
index or its cache) and runs the check with that Python and no ``.venv``, as
on the device machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon.conftest import ROOT, clean_env

FIXTURE = ROOT / "tests/fixtures/gpu_check/nvidia-smi-topo-dgx1.txt"
# Answers `topo -m` from a fixture, records every argument list, and refuses anything else.
FAKE_SMI = """#!/bin/sh
echo "$*" >> "{log}"
[ "$*" = "topo -m" ] || {{ echo "not a read-only call: $*" >&2; exit 3; }}
cat "{fixture}"
"""


SYSTEM_PYTHON = "/usr/bin/python3"


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
    assert sorted(p.name for p in out.iterdir()) == ["details.txt", "report.md", "summary.json"]


@pytest.fixture(scope="module")
def system_wheels(tmp_path_factory) -> Path:
    """Wheels of every pin for /usr/bin/python3, from the pip index or cache; the test skips without them."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"no {SYSTEM_PYTHON} to run the offline check with")
    version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    dest = tmp_path_factory.mktemp("gpu-wheels")
    packed = subprocess.run([sys.executable, str(ROOT / "scripts/gpu_wheels.py"), "pack", "--dest", str(dest),
                             "--python-version", version], capture_output=True, text=True, timeout=600)
    if packed.returncode != 0:
        pytest.skip(f"could not pack the pinned wheels for Python {version} (no pip index or cache?): "
                    + packed.stderr.strip()[-500:])
    return dest


def test_gpu_check_without_venv_runs_on_the_packed_wheels_with_the_system_python(mock_nvml, tmp_path,
                                                                                   system_wheels):
    node = mock_nvml.use("dgx1-v100-8")
    site = tmp_path / "site"
    offline = {"NVDP_GPU_CHECK_OFFLINE": "1", "NVDP_GPU_WHEELS": str(system_wheels), "NVDP_GPU_SITE": str(site),
               "NVDP_GPU_PYTHON": SYSTEM_PYTHON}
    done = run_check(tmp_path, {**clean_env(), **node.env(), **offline})
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed_steps"] == [] and summary["gpus"] == 8 and summary["registered"] is True
    assert summary["node_status"] == {"nvidia.com/gpu": {"allocatable": 8, "capacity": 8}}
    assert f"nvdp as `{SYSTEM_PYTHON} -m nvdp_node`" in (out / "report.md").read_text()
    assert (site / "pydantic").is_dir() and (site / "grpc").is_dir()
