"""The test stand-ins of tests/mps_control/: the MPS control daemon and client, and the fake systemctl's rules."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mps_control.fake_systemctl import exec_argv, expand_specifiers, parse_env_file, unescape

CONTROL = Path(__file__).resolve().parent / "mps_control/nvidia-cuda-mps-control"
SMI = Path(__file__).resolve().parent / "mps_control/nvidia-smi"


class Mps:
    def __init__(self, tmp: Path) -> None:
        self.pipe = tmp / "pipe"
        self.log = tmp / "log"
        self.env = {"CUDA_MPS_PIPE_DIRECTORY": str(self.pipe), "CUDA_MPS_LOG_DIRECTORY": str(self.log)}

    def run(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(CONTROL), *args], input=stdin, env=self.env, capture_output=True, text=True,
                              timeout=30)

    def commands(self) -> list[str]:
        lines = (self.log / "control.log").read_text().splitlines()
        return [line.split("command: ", 1)[1] for line in lines if "command: " in line]

    def pid(self) -> int:
        first = (self.log / "control.log").read_text().splitlines()[0]
        return int(first.split("Control ", 1)[1].split(":", 1)[0])


@pytest.fixture
def mps(tmp_path: Path) -> Iterator[Mps]:
    m = Mps(tmp_path)
    yield m
    if (m.pipe / "control").exists():
        m.run(stdin="quit\n")


def test_the_daemon_returns_once_its_control_fifo_exists_in_the_pipe_directory(mps):
    assert mps.run("-d").returncode == 0
    assert stat.S_ISFIFO((mps.pipe / "control").stat().st_mode)
    assert "started: pipe directory" in (mps.log / "control.log").read_text()


def test_a_second_daemon_on_the_same_pipe_directory_is_refused(mps):
    mps.run("-d")
    second = mps.run("-d")
    assert second.returncode == 1
    assert "already running" in second.stderr


def test_the_client_without_a_daemon_fails_with_a_message(mps):
    done = mps.run(stdin="get_default_active_thread_percentage\n")
    assert done.returncode == 1
    assert done.stderr.startswith("Cannot find MPS control daemon process")


def test_the_client_sends_each_stdin_line_and_prints_the_answers(mps):
    mps.run("-d")
    done = mps.run(stdin="get_default_active_thread_percentage\nset_default_active_thread_percentage 25\n"
                         "get_default_active_thread_percentage\n")
    assert (done.returncode, done.stdout) == (0, "100.0\n25.0\n25.0\n")


def test_the_daemon_records_every_command_it_receives(mps):
    mps.run("-d")
    mps.run(stdin="set_default_device_pinned_mem_limit 0 20480M\n")
    mps.run(stdin="get_default_device_pinned_mem_limit 0\n")
    assert mps.commands() == ["set_default_device_pinned_mem_limit 0 20480M", "get_default_device_pinned_mem_limit 0"]


@pytest.mark.parametrize(
    "command",
    ["bogus", "set_default_active_thread_percentage 0", "set_default_active_thread_percentage lots",
     "set_default_device_pinned_mem_limit x 1M", "set_default_device_pinned_mem_limit 0 1T"],
    ids=["unknown", "zero-percent", "not-a-number", "bad-device", "bad-unit"],
)
def test_a_command_the_daemon_refuses_makes_the_client_exit_1_with_the_reason(mps, command):
    mps.run("-d")
    done = mps.run(stdin=command + "\n")
    assert done.returncode == 1 and done.stdout.strip()


def test_quit_ends_the_daemon_and_removes_its_control_fifo(mps):
    mps.run("-d")
    pid = mps.pid()
    assert mps.run(stdin="quit\n").returncode == 0
    assert not (mps.pipe / "control").exists()
    _wait_gone(pid)


def test_sigterm_ends_the_daemon_and_removes_its_control_fifo(mps):
    mps.run("-d")
    pid = mps.pid()
    os.kill(pid, signal.SIGTERM)
    _wait_gone(pid)
    assert not (mps.pipe / "control").exists()


def test_the_nvidia_smi_stand_in_records_compute_modes(tmp_path):
    record = tmp_path / "smi.log"
    env = {"NVIDIA_SMI_STANDIN_LOG": str(record)}
    done = subprocess.run([str(SMI), "-i", "GPU-1", "-c", "EXCLUSIVE_PROCESS"], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("Set compute mode to EXCLUSIVE_PROCESS for GPU GPU-1.")
    assert record.read_text() == "GPU-1 EXCLUSIVE_PROCESS\n"
    assert subprocess.run([str(SMI), "-q"], env=env, capture_output=True).returncode == 2


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    # The daemon's parent has exited, so nobody here reaps it: gone means no /proc entry, or a zombie.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.01)
    raise AssertionError(f"daemon {pid} still running after {timeout} s")


# ---------------------------------------------------------------- the fake systemctl's rules (systemd.service(5))


def test_the_fake_expands_variables_as_systemd_does():
    env = {"ONE": "a b", "DIR": "/x y"}
    assert exec_argv("/bin/echo $ONE ${DIR}/z '$$ONE' pre${ONE}", env) == (
        False, ["/bin/echo", "a", "b", "/x y/z", "$ONE", "prea b"],
    )


def test_the_fake_takes_the_minus_and_plus_prefixes_in_either_order():
    assert exec_argv("-+/bin/true", {}) == (True, ["/bin/true"])
    assert exec_argv("+-/bin/true", {}) == (True, ["/bin/true"])
    assert exec_argv("+/bin/true", {}) == (False, ["/bin/true"])


def test_the_fake_expands_specifiers_and_unescapes_the_instance():
    spec = {"i": "nvidia.com-mig\\x2d1g", "I": unescape("nvidia.com-mig\\x2d1g"), "n": "u", "N": "u", "p": "u", "t": "/run"}
    assert expand_specifiers("%t/%i %I 100%%", spec) == "/run/nvidia.com-mig\\x2d1g nvidia.com/mig-1g 100%"


def test_the_fake_reads_environment_files_with_quotes():
    text = '# c\nA=1\nB="x y"\nC=\'$z\'\n\nD="a\\"b"\n'
    assert parse_env_file(text) == {"A": "1", "B": "x y", "C": "$z", "D": 'a"b'}
