"""Fixtures to run the real ``nvdp serve`` as a subprocess against the test stand-ins."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


class Daemon:
    """A running ``nvdp serve``; its combined output goes to ``log_path``."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path, socket_dir: Path, config_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path
        self.socket_dir = socket_dir
        self.config_path = config_path

    @property
    def socket(self) -> Path:
        return self.socket_dir / "nvidia-gpu.sock"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.log()
            if text in out:
                return out
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not logged within {timeout} s; log:\n{self.log()}")

    def wait_log_count(self, text: str, count: int, timeout: float = 10.0) -> str:
        """Wait until ``text`` was logged at least ``count`` times."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.log()
            if out.count(text) >= count:
                return out
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not logged {count} times within {timeout} s; log:\n{self.log()}")

    def wait_exit(self, timeout: float = 10.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"nvdp did not exit within {timeout} s; log:\n{self.log()}") from None

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)


@pytest.fixture
def nvdp_daemon(tmp_path: Path) -> Iterator:
    """Factory: ``nvdp_daemon(socket_dir, env=..., config="toml text", args=[...], pod_resources=...)`` → a Daemon."""
    daemons: list[Daemon] = []

    def start(
        socket_dir: Path,
        *,
        env: Mapping[str, str],
        config: str | None = None,
        args: tuple[str, ...] = (),
        sysfs_root: Path | None = None,
        pod_resources: Path | str = "",
    ) -> Daemon:
        n = len(daemons)
        cfg = tmp_path / f"config-{n}.toml"
        if config is not None:
            cfg.write_text(config)
        log_path = tmp_path / f"nvdp-{n}.log"
        cmd = [
            sys.executable, "-m", "nvdp_node", "--config", str(cfg), "serve",
            "--socket-dir", str(socket_dir), "--kubelet-socket", str(socket_dir / "kubelet.sock"),
            "--sysfs-root", str(sysfs_root or tmp_path / "no-sysfs"),
            # "" (the default here): most tests are not about PodResources; those that are pass the peer's.
            "--pod-resources-socket", str(pod_resources), *args,
        ]
        full_env = {**env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT)
        daemon = Daemon(proc, log_path, socket_dir, cfg)
        daemons.append(daemon)
        return daemon

    yield start
    for d in daemons:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def clean_env() -> dict[str, str]:
    """The test's environment without anything that would redirect nvdp's config or notify."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("NVDP_", "NOTIFY_SOCKET", "WATCHDOG_", "DP_"))}


@pytest.fixture
def notify_socket() -> Iterator:
    from tests.daemon.notify_listener import NotifyListener

    listener = NotifyListener()
    yield listener
    listener.close()


@pytest.fixture
def h100(mock_nvml, tmp_path):
    """The 8×H100 mock node, with its sysfs NUMA files under ``tmp_path / "sys"``."""
    node = mock_nvml.use("h100-sxm-8")
    node.write_sysfs(tmp_path / "sys")
    return node
