"""``nvdp status`` on a serving, a waiting and a stopped daemon; the labels file it keeps (issue 16).

A real ``nvdp serve`` (mock NVML, kubelet test peer) writes its state file and
NFD features file under ``tmp_path``; ``nvdp status`` runs as a separate
process with a stand-in systemctl that answers ``is-active`` as told.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.daemon.conftest import ROOT, clean_env

GPU = "nvidia.com/gpu"


def fake_systemctl(tmp_path: Path, answer: str) -> Path:
    path = tmp_path / f"systemctl-{answer}"
    code = 0 if answer == "active" else 3
    path.write_text(f'#!/bin/sh\n[ "$1" = is-active ] && [ "$2" = nvdp ] || exit 2\necho {answer}\nexit {code}\n')
    path.chmod(0o755)
    return path


def status(tmp_path: Path, *args: str, unit: str = "active") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nvdp_node", "status", "--state-file", str(tmp_path / "state.json"),
         "--systemctl", str(fake_systemctl(tmp_path, unit)), *args],
        capture_output=True, text=True, cwd=ROOT, env={**clean_env(), "PYTHONPATH": str(ROOT)}, timeout=30,
    )


def start(nvdp_daemon, socket_dir: Path, node, tmp_path: Path, extra: str = ""):
    config = (f'[metrics]\ntextfile = "{tmp_path}/nvdp.prom"\ntextfile_interval = 1\n'
              f'[labels]\npath = "{tmp_path}/features"\n{extra}')
    return nvdp_daemon(socket_dir, env={**clean_env(), **node.env()}, sysfs_root=tmp_path / "sys", config=config,
                       args=("--state-file", str(tmp_path / "state.json")))


def wait_state(tmp_path: Path, ok: Callable[[dict[str, Any]], bool], timeout: float = 15.0) -> dict[str, Any]:
    deadline, doc = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        try:
            doc = json.loads((tmp_path / "state.json").read_text())
        except (FileNotFoundError, ValueError):
            doc = {}
        if doc and ok(doc):
            return doc
        time.sleep(0.1)
    raise AssertionError(f"state never matched; last: {doc}")


def registered(doc: dict[str, Any]) -> bool:
    return bool(doc["resources"]) and all(r["registered"] for r in doc["resources"])


def test_status_of_a_serving_daemon_shows_its_resource_and_exits_0(nvdp_daemon, kubelet_peer, h100, tmp_path):
    start(nvdp_daemon, kubelet_peer.plugin_dir, h100, tmp_path)
    kubelet_peer.wait_registered(GPU)
    wait_state(tmp_path, registered)
    done = status(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nvdp.service: active" in done.stdout
    assert "status: Serving 8 GPUs as nvidia.com/gpu, registered with kubelet" in done.stdout
    row = next(line for line in done.stdout.splitlines() if line.startswith(GPU))
    assert row.split()[:4] == [GPU, "8", "8", "registered"]


def test_status_of_a_daemon_waiting_for_kubelet_says_so_and_exits_1(nvdp_daemon, h100, tmp_path):
    socket_dir = tmp_path / "device-plugins"
    socket_dir.mkdir()
    start(nvdp_daemon, socket_dir, h100, tmp_path)
    wait_state(tmp_path, lambda d: bool(d["resources"]) and d["serving"])
    done = status(tmp_path)
    assert done.returncode == 1, done.stdout
    assert "waiting for kubelet socket" in done.stdout
    assert f"kubelet socket: {socket_dir}/kubelet.sock (missing)" in done.stdout


def test_status_of_a_stopped_daemon_exits_3(nvdp_daemon, kubelet_peer, h100, tmp_path):
    daemon = start(nvdp_daemon, kubelet_peer.plugin_dir, h100, tmp_path)
    wait_state(tmp_path, registered)
    assert daemon.stop() == 0
    done = status(tmp_path, unit="inactive")
    assert done.returncode == 3, done.stdout
    assert "status: Stopped" in done.stdout
    assert not (tmp_path / "nvdp.prom").exists(), "a stopped daemon's textfile would claim it still serves"


def test_status_of_a_failed_unit_exits_3_whatever_the_state_file_says(nvdp_daemon, kubelet_peer, h100, tmp_path):
    start(nvdp_daemon, kubelet_peer.plugin_dir, h100, tmp_path)
    wait_state(tmp_path, registered)
    assert status(tmp_path, unit="failed").returncode == 3


def test_status_json_gives_an_unhealthy_devices_reason(nvdp_daemon, kubelet_peer, h100, tmp_path):
    start(nvdp_daemon, kubelet_peer.plugin_dir, h100, tmp_path)
    kubelet_peer.wait_node_status(GPU, (8, 8))
    h100.control.xid(4, 79)
    kubelet_peer.wait_node_status(GPU, (7, 8))
    wait_state(tmp_path, lambda d: any(not x["healthy"] for x in d["devices"]))
    doc = json.loads(status(tmp_path, "--json").stdout)
    bad = [d for d in doc["devices"] if not d["healthy"]]
    assert [d["device"] for d in bad] == [h100.profile["gpus"][4]["uuid"]]
    assert bad[0]["reason"].startswith("XID 79 at ")
    assert (doc["unit"], doc["exit"]) == ("active", 0), "an unhealthy GPU is reported, the daemon still serves"


def test_status_without_a_state_file_says_nvdp_is_not_running(tmp_path):
    done = status(tmp_path, unit="inactive")
    assert done.returncode == 3
    assert "nvdp is not running" in done.stdout


def test_status_watch_prints_again_when_the_state_changes(nvdp_daemon, kubelet_peer, h100, tmp_path):
    start(nvdp_daemon, kubelet_peer.plugin_dir, h100, tmp_path)
    wait_state(tmp_path, registered)
    watch = subprocess.Popen(
        [sys.executable, "-m", "nvdp_node", "status", "--watch", "--state-file", str(tmp_path / "state.json"),
         "--systemctl", str(fake_systemctl(tmp_path, "active"))],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**clean_env(), "PYTHONPATH": str(ROOT)},
    )
    try:
        assert watch.stdout is not None
        first = watch.stdout.readline()
        assert first.startswith("nvdp.service: active")
        h100.control.xid(1, 79)
        for line in watch.stdout:
            if line.strip() == "---":
                break
        after = "".join(watch.stdout.readline() for _ in range(9))
        assert "7 unhealthy" not in after and "1 unhealthy" in after
    finally:
        watch.send_signal(signal.SIGINT)
        watch.wait(10)
        if watch.stdout is not None:
            watch.stdout.close()


def test_the_labels_file_is_written_at_start_and_removed_when_turned_off(nvdp_daemon, kubelet_peer, h100, tmp_path):
    daemon = start(nvdp_daemon, kubelet_peer.plugin_dir, h100, tmp_path)
    features = tmp_path / "features"
    wait_state(tmp_path, registered)
    deadline = time.monotonic() + 10
    while not features.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3\n" in features.read_text()
    daemon.config_path.write_text(daemon.config_path.read_text() + "enabled = false\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("reloaded configuration")
    wait_state(tmp_path, lambda d: d["last_reload"] is not None and d["last_reload"]["ok"])
    deadline = time.monotonic() + 10
    while features.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not features.exists()


def test_a_missing_textfile_directory_is_a_note_not_a_failure(nvdp_daemon, kubelet_peer, h100, tmp_path):
    nvdp_daemon(kubelet_peer.plugin_dir, env={**clean_env(), **h100.env()}, sysfs_root=tmp_path / "sys",
                config=f'[metrics]\ntextfile = "{tmp_path}/absent/nvdp.prom"\n[labels]\nenabled = false\n',
                args=("--state-file", str(tmp_path / "state.json")))
    doc = wait_state(tmp_path, lambda d: "textfile" in d["notes"])
    assert "its directory is missing" in doc["notes"]["textfile"]
    kubelet_peer.wait_registered(GPU)


def test_a_mig_re_layout_rewrites_the_labels_and_counts_the_change(nvdp_daemon, kubelet_peer, mock_nvml, tmp_path):
    a100 = mock_nvml.use("a100-mig-8")
    start(nvdp_daemon, kubelet_peer.plugin_dir, a100, tmp_path,
          extra='[plugin]\nmig_strategy = "mixed"\nmig_check_interval = 1\n')
    features = tmp_path / "features"
    kubelet_peer.wait_node_status("nvidia.com/mig-4g.20gb", (1, 1))
    wait_state(tmp_path, registered)
    assert "nvidia.com/mig-4g.20gb.count=1\n" in features.read_text()
    a100.control.mig(7, mode=1, devices=["7g.40gb"])  # was 4g.20gb + 3g.20gb
    kubelet_peer.wait_node_status("nvidia.com/mig-7g.40gb", (1, 1), timeout=15)
    deadline = time.monotonic() + 10
    while "mig-7g.40gb.count=1" not in features.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    text = features.read_text()
    assert "nvidia.com/mig-7g.40gb.count=1\n" in text and "mig-4g.20gb" not in text
    assert "nvdp_mig_layout_changes_total 1.0" in (tmp_path / "nvdp.prom").read_text()

