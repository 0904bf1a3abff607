"""MPS control daemons as systemd units: one ``nvdp-mps@<resource>.service`` per resource shared with MPS.

Called by the app layer, from a thread (every method blocks on a subprocess),
for each resource ``[sharing.mps]`` shares: :meth:`MpsControl.start` before the
resource is advertised, :meth:`MpsControl.answers` (or :meth:`MpsControl.probe`,
which says why not) to decide whether it may be, :meth:`MpsControl.stop` when
the resource goes away, and :meth:`MpsControl.paths` for what Allocate mounts.

The unit (``packaging/systemd/nvdp-mps@.service``) reads everything that
depends on the resource from an environment file written here,
``<env_dir>/<instance>.env``: the pipe and log directories under ``root``
(upstream's ``<root>/<resource>/{pipe,log}``), the GPUs, and the limits of
``nvdp_node.domain.mps_settings``. Writing a file instead of a drop-in needs
no ``daemon-reload``; a changed file restarts the unit, an unchanged one only
starts it (a no-op while it runs).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from nvdp_node.adapters.atomic_file import write_atomic
from nvdp_node.domain.allocation import DEFAULT_MPS_ROOT, MPS_LOG_ENV, MPS_PIPE_ENV, MpsAllocation
from nvdp_node.domain.devices import Gpu
from nvdp_node.domain.errors import TemporaryError
from nvdp_node.domain.mps_settings import mps_daemon_settings

log = logging.getLogger(__name__)

UNIT_TEMPLATE = "nvdp-mps@{instance}.service"
CONTROL_BINARY = "nvidia-cuda-mps-control"
PROBE_COMMAND = "get_default_active_thread_percentage"  # upstream's AssertHealthy
PROBE_TIMEOUT = 5.0
# Above the unit's TimeoutStartSec= (60 s) and TimeoutStopSec= (30 s): systemd
# gives up first and says why.
SYSTEMCTL_TIMEOUT = 90.0
RETRY_DELAY = 5.0  # the unit's RestartSec=
UNIT_ROOT_VARIABLE = "NVDP_MPS_UNIT_ROOT"  # the root the unit's sandbox is written for (Environment=)
# What may appear in the environment file unquoted and in the unit's command
# lines as one word: resource names, absolute paths, GPU UUIDs.
_SAFE = re.compile(r"[A-Za-z0-9._/:+@-]+")
# systemd-escape(1) keeps these (and '.' unless first); '/' becomes '-'.
_UNIT_KEEP = re.compile(r"[A-Za-z0-9:_.]")


class MpsUnitError(TemporaryError):
    """systemctl could not start or stop a unit; the message carries systemctl's output."""


def unit_instance(resource: str) -> str:
    """The unit instance for ``resource``, as ``systemd-escape`` writes it (``nvidia.com/gpu`` → ``nvidia.com-gpu``)."""
    out = []
    for i, ch in enumerate(resource):
        if ch == "/":
            out.append("-")
        elif _UNIT_KEEP.fullmatch(ch) and not (ch == "." and i == 0):
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
    return "".join(out)


def unit_name(resource: str) -> str:
    return UNIT_TEMPLATE.format(instance=unit_instance(resource))


class MpsControl:
    """Starts, stops and probes the MPS control daemon of each MPS-shared resource, through systemd.

    It exists so that systemd, not nvdp, owns the daemons: they survive an nvdp
    restart or upgrade (the MPS servers of running pods keep going), show up
    in ``systemctl`` and the journal, and are sandboxed like nvdp itself.
    """

    def __init__(
        self,
        root: Path = Path(DEFAULT_MPS_ROOT),
        systemctl: str = "systemctl",
        env_dir: Path = Path("/run/nvdp/mps"),
        *,
        control: str = CONTROL_BINARY,
        probe_timeout: float = PROBE_TIMEOUT,
        systemctl_timeout: float = SYSTEMCTL_TIMEOUT,
    ) -> None:
        if not root.is_absolute() or os.path.normpath(root) != str(root) or not _SAFE.fullmatch(str(root)):
            raise ValueError(f"the MPS root must be a plain absolute path (letters, digits, ._/:+@-), not {str(root)!r}")
        self.root = root
        self.systemctl = systemctl
        self.env_dir = env_dir
        self.control = control
        self.probe_timeout = probe_timeout
        self.systemctl_timeout = systemctl_timeout
        self._layout = MpsAllocation(root=str(root))

    # ------------------------------------------------------------ paths

    def paths(self, resource: str) -> tuple[Path, Path]:
        """``(pipe_dir, log_dir)`` of ``resource``'s daemon on the host: ``<root>/<resource>/{pipe,log}``."""
        _check_resource(resource)
        return Path(self._layout.pipe_dir(resource)), Path(self._layout.log_dir(resource))

    def shm_dir(self) -> Path:
        """The shared memory of all MPS servers and clients, ``<root>/shm`` (a container's ``/dev/shm``)."""
        return Path(self._layout.shm_dir())

    def env_file(self, resource: str) -> Path:
        return self.env_dir / f"{unit_instance(resource)}.env"

    # ------------------------------------------------------------ lifecycle

    def start(self, resource: str, replicas: int, devices: Sequence[Gpu]) -> None:
        """Run ``resource``'s daemon for ``devices`` (its GPUs), each shared by ``replicas`` clients.

        Returns once systemd reports the unit active, i.e. after the daemon
        took its limits. A unit already running with these settings is left
        alone; one running with others is restarted (which ends its clients'
        MPS servers, as upstream's restart of its daemons does).
        """
        if not devices:
            raise ValueError(f"no GPUs to run an MPS daemon for {resource!r}")
        text = self.render_env(resource, replicas, devices)
        self._check_unit_root(resource)
        path = self.env_file(resource)
        try:
            previous = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            previous = None
        except OSError as err:
            raise MpsUnitError(f"cannot read {path}: {err}", delay=RETRY_DELAY) from err
        if previous != text:
            self._write(path, text)
        action = "start" if previous == text else "restart"
        self._systemctl(action, resource)
        log.info("%s %s: %d GPU(s), %d replicas each", action, unit_name(resource), len(devices), replicas)

    def stop(self, resource: str) -> None:
        """Stop ``resource``'s daemon (``quit``, then systemd ends what is left) and remove its environment file."""
        self._systemctl("stop", resource)
        self.env_file(resource).unlink(missing_ok=True)
        log.info("stopped %s", unit_name(resource))

    def answers(self, resource: str) -> bool:
        """Whether ``resource``'s daemon answers a query within ``probe_timeout``."""
        return self.probe(resource) is None

    def probe(self, resource: str) -> str | None:
        """None if ``resource``'s daemon answers, else why not (for the log and ``STATUS=``).

        Upstream's health check: ``get_default_active_thread_percentage``
        through ``nvidia-cuda-mps-control`` with only the daemon's two
        variables in the environment. The control pipe is looked for first,
        so a resource whose daemon never ran costs no process.
        """
        pipe_dir, log_dir = self.paths(resource)
        if not os.path.lexists(pipe_dir / "control"):
            return f"MPS control daemon of {resource} not running: no control pipe in {pipe_dir}"
        binary = shutil.which(self.control)
        if binary is None:
            return f"{self.control} not found: cannot ask the MPS control daemon of {resource}"
        env = {MPS_PIPE_ENV: str(pipe_dir), MPS_LOG_ENV: str(log_dir)}
        try:
            done = subprocess.run(
                [binary], input=PROBE_COMMAND, env=env, capture_output=True, text=True, timeout=self.probe_timeout
            )
        except subprocess.TimeoutExpired:
            return f"MPS control daemon of {resource} did not answer within {self.probe_timeout:g} s"
        except OSError as err:
            return f"cannot run {binary}: {err}"
        if done.returncode != 0:
            said = _one_line(done.stderr or done.stdout) or "no output"
            return f"MPS control daemon of {resource} did not answer ({self.control} exited {done.returncode}: {said})"
        return None

    # ------------------------------------------------------------ the environment file

    def render_env(self, resource: str, replicas: int, devices: Sequence[Gpu]) -> str:
        """The environment file's text: the unit's directories, GPUs and limits for ``resource``."""
        pipe_dir, log_dir = self.paths(resource)
        settings = mps_daemon_settings(devices, replicas)
        for uuid in settings.gpu_uuids:
            if not _SAFE.fullmatch(uuid):
                raise ValueError(f"cannot pass GPU UUID {uuid!r} to {unit_name(resource)}")
        limits = " ".join(f"{p.index}={p.limit}" for p in settings.pinned_mem_limits)
        percentage = "" if settings.active_thread_percentage is None else str(settings.active_thread_percentage)
        lines = [
            f"# {unit_name(resource)}: the MPS control daemon of {resource}, {replicas} replicas per GPU.",
            "# Written by nvdp before each start; edits are overwritten.",
            f"NVDP_MPS_RESOURCE={resource}",
            f"NVDP_MPS_ROOT={self.root}",
            f"{MPS_PIPE_ENV}={pipe_dir}",
            f"{MPS_LOG_ENV}={log_dir}",
            f"NVDP_MPS_REPLICAS={replicas}",
            f'NVDP_MPS_GPUS="{" ".join(settings.gpu_uuids)}"',
            f'NVDP_MPS_PINNED_MEM_LIMITS="{limits}"',
            f"NVDP_MPS_ACTIVE_THREAD_PERCENTAGE={percentage}",
        ]
        return "\n".join(lines) + "\n"

    def _write(self, path: Path, text: str) -> None:
        try:
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            write_atomic(path, text, mode=0o644)
        except OSError as err:
            raise MpsUnitError(f"cannot write {path}: {err}", delay=RETRY_DELAY) from err

    # ------------------------------------------------------------ systemctl

    def _systemctl(self, action: str, resource: str) -> None:
        unit = unit_name(resource)
        try:
            done = subprocess.run(
                [self.systemctl, action, unit], capture_output=True, text=True, timeout=self.systemctl_timeout
            )
        except subprocess.TimeoutExpired as err:
            raise MpsUnitError(
                f"systemctl {action} {unit} did not return within {self.systemctl_timeout:g} s", delay=RETRY_DELAY
            ) from err
        except OSError as err:
            raise MpsUnitError(f"cannot run {self.systemctl} {action} {unit}: {err}", delay=RETRY_DELAY) from err
        if done.returncode != 0:
            said = _one_line(done.stderr + done.stdout) or "no output"
            why = self._last_messages(unit)
            raise MpsUnitError(
                f"systemctl {action} {unit} failed (exit {done.returncode}): {said}"
                + (f"; its last messages: {why}" if why else ""),
                delay=RETRY_DELAY,
            )

    def _check_unit_root(self, resource: str) -> None:
        """Refuse a root the unit's sandbox is not written for, before anything starts.

        The unit's first ``ExecStartPre=`` refuses it too, but its message
        reaches the journal through a stream that systemctl may outrun.
        """
        unit = unit_name(resource)
        try:
            done = subprocess.run(
                [self.systemctl, "show", "--property=Environment", "--value", unit],
                capture_output=True, text=True, timeout=self.systemctl_timeout,
            )
        except (OSError, subprocess.TimeoutExpired):
            return  # the start itself will say what is wrong
        try:
            assignments = shlex.split(done.stdout)
        except ValueError:
            return
        values = dict(a.split("=", 1) for a in assignments if "=" in a)
        unit_root = values.get(UNIT_ROOT_VARIABLE)
        if done.returncode == 0 and unit_root is not None and unit_root != str(self.root):
            raise MpsUnitError(
                f"sharing.mps.root is {self.root} but {unit} is set up for {unit_root}: "
                f"add a drop-in for the new root (see docs/install.md, MPS)",
                delay=RETRY_DELAY,
            )

    def _last_messages(self, unit: str) -> str:
        """The unit's last log lines, which say why a start failed (systemctl only says that it did)."""
        try:
            done = subprocess.run(
                [self.systemctl, "status", "--no-pager", "--full", "--lines=10", unit],
                capture_output=True, text=True, timeout=self.systemctl_timeout,
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        # `systemctl status` prints the unit's state, a blank line, then its journal.
        _, blank, journal = done.stdout.partition("\n\n")
        lines = [line.strip() for line in journal.splitlines() if line.strip()] if blank else []
        return " | ".join(lines)


def _check_resource(resource: str) -> None:
    parts = resource.split("/")
    if not _SAFE.fullmatch(resource) or resource.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"cannot run an MPS daemon for {resource!r}: not a resource name")


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]
