"""MpsControl (nvdp_node/adapters/mps.py) against the stand-in MPS control daemon.

``systemctl`` is tests/mps_control/fake_systemctl.py, which runs the shipped
packaging/systemd/nvdp-mps@.service the way systemd would (environment file,
specifiers, ``$$``, prefixes, ``Type=forking``) with the test's ``/run`` under
``tmp_path``; ``nvidia-cuda-mps-control`` and ``nvidia-smi`` are the stand-ins
in tests/mps_control/. The same unit under a real systemd 252 is
tests/system/test_mps.py.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nvdp_node.adapters.mps import MpsControl, MpsUnitError, unit_instance, unit_name
from nvdp_node.domain.devices import Gpu

ROOT = Path(__file__).resolve().parents[2]
STANDINS = ROOT / "tests/mps_control"
CONTROL = STANDINS / "nvidia-cuda-mps-control"
GPU = "nvidia.com/gpu"
GIB = 2**30


def gpus(n: int = 2, memory: int = 80 * GIB) -> list[Gpu]:
    return [
        Gpu(index=i, uuid=f"GPU-{i:08x}-0000-0000-0000-000000000000", name="NVIDIA H100 80GB HBM3", minor=i,
            pci_bus_id=f"00000000:{i + 0x18:02X}:00.0", memory_total=memory)
        for i in range(n)
    ]


@dataclass
class Host:
    """A fake host: its /run under tmp_path, a systemctl for the shipped unit, the stand-ins' records."""

    run: Path
    unit_dir: Path
    systemctl: Path
    smi_log: Path

    def control(self, **kw: object) -> MpsControl:
        args: dict[str, object] = {
            "root": self.run / "nvidia/mps", "systemctl": str(self.systemctl), "env_dir": self.run / "nvdp/mps",
            "control": str(CONTROL),
        }
        return MpsControl(**{**args, **kw})  # type: ignore[arg-type]

    def commands(self, resource: str = GPU) -> list[str]:
        """What the daemon of ``resource`` received, from its control.log."""
        log = self.run / "nvidia/mps" / resource / "log/control.log"
        return [line.split("command: ", 1)[1] for line in log.read_text().splitlines() if "command: " in line]

    def starts(self, resource: str = GPU) -> int:
        log = self.run / "nvidia/mps" / resource / "log/control.log"
        return sum("started: pipe directory" in line for line in log.read_text().splitlines())

    def daemon_pid(self, resource: str = GPU) -> int:
        log = self.run / "nvidia/mps" / resource / "log/control.log"
        started = [line for line in log.read_text().splitlines() if "started: pipe directory" in line]
        return int(started[-1].split("Control ", 1)[1].split(":", 1)[0])

    def compute_modes(self) -> list[str]:
        return self.smi_log.read_text().splitlines() if self.smi_log.exists() else []


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    for name in ("nvdp-mps@.service", "run-nvidia-mps-shm.mount"):
        (unit_dir / name).write_bytes((ROOT / "packaging/systemd" / name).read_bytes())
    run = tmp_path / "run"
    smi_log = tmp_path / "nvidia-smi.log"
    systemctl = tmp_path / "systemctl"
    systemctl.write_text(
        "#!/bin/sh\n"
        f"exec {sys.executable} {STANDINS / 'fake_systemctl.py'} --unit-dir {unit_dir} --run-dir {run} "
        f"--state-dir {tmp_path / 'systemd'} --path {STANDINS} --setenv NVIDIA_SMI_STANDIN_LOG={smi_log} \"$@\"\n"
    )
    systemctl.chmod(0o755)
    h = Host(run=run, unit_dir=unit_dir, systemctl=systemctl, smi_log=smi_log)
    yield h
    # Whatever a failing test left running: stop it through the fake, as systemd would.
    for env in sorted((run / "nvdp/mps").glob("*.env")):
        subprocess.run([str(systemctl), "stop", f"nvdp-mps@{env.stem}.service"], capture_output=True, timeout=60)


# ---------------------------------------------------------------- names and paths


@pytest.mark.parametrize(
    ("resource", "instance"),
    [
        ("nvidia.com/gpu", "nvidia.com-gpu"),
        ("nvidia.com/gpu.shared", "nvidia.com-gpu.shared"),
        ("nvidia.com/mig-1g.5gb", "nvidia.com-mig\\x2d1g.5gb"),
        ("example.com/a_b", "example.com-a_b"),
        (".hidden/x", "\\x2ehidden-x"),
    ],
    ids=["gpu", "renamed", "dash", "underscore", "leading-dot"],
)
def test_the_unit_instance_is_the_resource_name_as_systemd_escape_writes_it(resource, instance):
    assert unit_instance(resource) == instance
    assert unit_name(resource) == f"nvdp-mps@{instance}.service"


def test_the_daemon_directories_are_upstreams_root_resource_pipe_and_log():
    control = MpsControl()
    assert control.paths("nvidia.com/gpu.shared") == (
        Path("/run/nvidia/mps/nvidia.com/gpu.shared/pipe"),
        Path("/run/nvidia/mps/nvidia.com/gpu.shared/log"),
    )
    assert control.shm_dir() == Path("/run/nvidia/mps/shm")
    assert control.env_file(GPU) == Path("/run/nvdp/mps/nvidia.com-gpu.env")


@pytest.mark.parametrize("resource", ["../etc", "nvidia.com//gpu", "nvidia.com/gpu dir", "/abs", "a/./b"])
def test_a_resource_name_that_could_leave_the_root_is_refused(resource):
    with pytest.raises(ValueError, match="not a resource name"):
        MpsControl().paths(resource)


@pytest.mark.parametrize("root", ["run/nvidia/mps", "/run/nvidia/../mps", "/run/my mps", "/run/mps$HOME"])
def test_a_root_that_is_not_a_plain_absolute_path_is_refused(root):
    with pytest.raises(ValueError, match="plain absolute path"):
        MpsControl(root=Path(root))


# ---------------------------------------------------------------- the environment file


def test_the_environment_file_names_the_directories_gpus_and_upstreams_limits(host):
    text = host.control().render_env(GPU, 4, gpus(2))
    root = host.run / "nvidia/mps"
    assert text.splitlines()[2:] == [
        "NVDP_MPS_RESOURCE=nvidia.com/gpu",
        f"NVDP_MPS_ROOT={root}",
        f"CUDA_MPS_PIPE_DIRECTORY={root}/nvidia.com/gpu/pipe",
        f"CUDA_MPS_LOG_DIRECTORY={root}/nvidia.com/gpu/log",
        "NVDP_MPS_REPLICAS=4",
        'NVDP_MPS_GPUS="GPU-00000000-0000-0000-0000-000000000000 GPU-00000001-0000-0000-0000-000000000000"',
        'NVDP_MPS_PINNED_MEM_LIMITS="0=20480M 1=20480M"',
        "NVDP_MPS_ACTIVE_THREAD_PERCENTAGE=25",
    ]


def test_start_without_gpus_is_refused_and_writes_nothing(host):
    control = host.control()
    with pytest.raises(ValueError, match="no GPUs"):
        control.start(GPU, 4, [])
    assert not control.env_file(GPU).exists()


# ---------------------------------------------------------------- start, probe, stop


def test_start_returns_with_the_daemon_answering(host):
    control = host.control()
    control.start(GPU, 4, gpus(2))
    assert control.probe(GPU) is None
    assert control.answers(GPU)


def test_the_daemon_has_upstreams_limits_before_start_returns(host):
    control = host.control()
    control.start(GPU, 4, gpus(2))
    # Read before anything else talks to the daemon: these came from the unit's ExecStartPost.
    assert host.commands() == [
        "set_default_device_pinned_mem_limit 0 20480M",
        "set_default_device_pinned_mem_limit 1 20480M",
        "set_default_active_thread_percentage 25",
    ]


def test_the_control_pipe_is_a_fifo_any_user_may_write(host):
    control = host.control()
    control.start(GPU, 2, gpus(1))
    pipe_dir, _ = control.paths(GPU)
    mode = (pipe_dir / "control").stat().st_mode
    assert stat.S_ISFIFO(mode) and stat.S_IMODE(mode) == 0o666
    assert stat.S_IMODE(pipe_dir.stat().st_mode) == 0o755
    assert stat.S_IMODE(control.shm_dir().stat().st_mode) == 0o1777


def test_the_gpus_are_exclusive_to_mps_while_the_daemon_runs(host):
    control = host.control()
    a, b = gpus(2)
    control.start(GPU, 4, [a, b])
    assert host.compute_modes() == [f"{a.uuid} EXCLUSIVE_PROCESS", f"{b.uuid} EXCLUSIVE_PROCESS"]
    control.stop(GPU)
    assert host.compute_modes()[2:] == [f"{a.uuid} DEFAULT", f"{b.uuid} DEFAULT"]


def test_a_resource_whose_daemon_never_ran_does_not_answer_and_says_so(host):
    control = host.control()
    assert control.probe(GPU) == (
        f"MPS control daemon of {GPU} not running: no control pipe in {host.run}/nvidia/mps/{GPU}/pipe"
    )
    assert not control.answers(GPU)


def test_after_stop_the_daemon_no_longer_answers_and_its_environment_file_is_gone(host):
    control = host.control()
    control.start(GPU, 4, gpus(2))
    control.stop(GPU)
    assert host.commands()[-1] == "quit"
    assert not control.answers(GPU)
    assert not control.env_file(GPU).exists()


def test_stopping_a_resource_that_was_never_started_succeeds(host):
    host.control().stop("nvidia.com/other")


def test_start_with_the_same_settings_leaves_the_running_daemon_alone(host):
    control = host.control()
    control.start(GPU, 4, gpus(2))
    pid = host.daemon_pid()
    control.start(GPU, 4, gpus(2))
    assert host.starts() == 1 and host.daemon_pid() == pid
    assert control.answers(GPU)


def test_start_with_other_replicas_restarts_the_daemon_with_the_new_limits(host):
    control = host.control()
    control.start(GPU, 4, gpus(2))
    control.start(GPU, 2, gpus(2))
    assert host.starts() == 2
    after_restart = host.commands()[host.commands().index("quit") + 1 :]
    assert after_restart == [
        "set_default_device_pinned_mem_limit 0 40960M",
        "set_default_device_pinned_mem_limit 1 40960M",
        "set_default_active_thread_percentage 50",
    ]
    assert "NVDP_MPS_REPLICAS=2" in control.env_file(GPU).read_text()


def test_two_resources_get_two_daemons_and_stopping_one_leaves_the_other(host):
    control = host.control()
    first, second = gpus(2)
    control.start(GPU, 4, [first])
    control.start("nvidia.com/gpu.shared", 2, [second])
    control.stop(GPU)
    assert not control.answers(GPU)
    assert control.answers("nvidia.com/gpu.shared")
    assert host.commands("nvidia.com/gpu.shared")[:1] == ["set_default_device_pinned_mem_limit 1 40960M"]


def test_a_daemon_that_hangs_does_not_answer_within_the_timeout(host):
    control = host.control(probe_timeout=0.5)
    control.start(GPU, 4, gpus(1))
    pid = host.daemon_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        assert control.probe(GPU) == f"MPS control daemon of {GPU} did not answer within 0.5 s"
    finally:
        os.kill(pid, signal.SIGCONT)
    assert control.answers(GPU), "it answers again once it runs"


def test_the_control_pipe_of_a_killed_daemon_is_not_taken_for_an_answer(host):
    control = host.control()
    control.start(GPU, 4, gpus(1))
    os.kill(host.daemon_pid(), signal.SIGKILL)  # no clean-up: the FIFO stays
    pipe_dir, _ = control.paths(GPU)
    assert (pipe_dir / "control").exists()
    why = control.probe(GPU)
    assert why is not None and why.startswith(f"MPS control daemon of {GPU} did not answer (")
    assert "Cannot find MPS control daemon process" in why


def test_a_missing_control_binary_is_named_in_the_probe(host):
    host.control().start(GPU, 4, gpus(1))
    missing = str(host.run / "no-such-binary")
    assert host.control(control=missing).probe(GPU) == f"{missing} not found: cannot ask the MPS control daemon of {GPU}"


# ---------------------------------------------------------------- failures


def test_a_root_the_unit_is_not_set_up_for_is_refused_before_anything_starts(host):
    other_root = host.control(root=host.run / "srv/mps")
    with pytest.raises(MpsUnitError) as caught:
        other_root.start(GPU, 4, gpus(1))
    assert str(caught.value) == (
        f"sharing.mps.root is {host.run}/srv/mps but nvdp-mps@nvidia.com-gpu.service is set up for "
        f"{host.run}/nvidia/mps: add a drop-in for the new root (see docs/install.md, MPS)"
    )
    assert caught.value.delay == 5.0
    assert host.compute_modes() == [], "nothing ran"


def test_the_unit_itself_refuses_an_environment_file_for_another_root(host):
    other_root = host.control(root=host.run / "srv/mps")
    env = other_root.env_file(GPU)
    env.parent.mkdir(parents=True)
    env.write_text(other_root.render_env(GPU, 4, gpus(1)))
    done = subprocess.run([str(host.systemctl), "start", unit_name(GPU)], capture_output=True, text=True)
    status = subprocess.run([str(host.systemctl), "status", unit_name(GPU)], capture_output=True, text=True)
    assert done.returncode == 1
    assert f"sharing.mps.root is {host.run}/srv/mps but nvdp-mps@nvidia.com-gpu is set up for" in status.stdout
    assert not (host.run / "srv").exists()


def test_a_drop_in_for_another_root_lets_the_unit_run_there(host):
    dropin = host.unit_dir / "nvdp-mps@.service.d"
    dropin.mkdir()
    (dropin / "root.conf").write_text("[Service]\nEnvironment=NVDP_MPS_UNIT_ROOT=/run/srv/mps\n")
    control = host.control(root=host.run / "srv/mps")
    control.start(GPU, 4, gpus(1))
    assert control.answers(GPU)
    assert control.paths(GPU)[0] == host.run / "srv/mps/nvidia.com/gpu/pipe"


def test_a_retry_after_a_failed_start_starts_the_unit(host):
    control = host.control()
    blocker = host.run / "nvidia/mps" / GPU
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the resource's directory belongs\n")
    with pytest.raises(MpsUnitError) as caught:
        control.start(GPU, 4, gpus(1))
    assert str(caught.value).startswith(
        "systemctl restart nvdp-mps@nvidia.com-gpu.service failed (exit 1): Job for nvdp-mps@nvidia.com-gpu.service "
        "failed because the control process exited with error code."
    )
    assert "; its last messages: " in str(caught.value) and "cannot create directory" in str(caught.value)
    assert caught.value.delay == 5.0
    assert control.env_file(GPU).exists(), "the wanted state is kept for the retry"
    blocker.unlink()
    control.start(GPU, 4, gpus(1))
    assert control.answers(GPU)


def test_a_missing_systemctl_is_a_temporary_error_naming_it(host):
    control = host.control(systemctl=str(host.run / "no-systemctl"))
    with pytest.raises(MpsUnitError, match=r"cannot run .*/no-systemctl restart nvdp-mps@nvidia.com-gpu.service"):
        control.start(GPU, 4, gpus(1))


def test_a_unit_that_is_not_installed_is_named_in_the_error(host):
    (host.unit_dir / "nvdp-mps@.service").unlink()
    with pytest.raises(MpsUnitError, match="Unit nvdp-mps@nvidia.com-gpu.service not found"):
        host.control().stop(GPU)
