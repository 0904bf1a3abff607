"""A fake ``systemctl`` for the MPS adapter's daemon tests: runs a unit's commands as systemd 252 would.

    python -m tests.mps_control.fake_systemctl --unit-dir D --run-dir R --state-dir S \\
        [--path DIR] [--setenv K=V] (start|stop|restart|is-active|status|show) [--no-pager ...] UNIT

It reads the unit file (a template ``name@.service`` for ``name@instance.service``,
plus drop-ins in ``<unit>.d/`` and ``<template>.d/``), expands the specifiers
(``%i %I %n %N %p %t %%``) and the environment (``Environment=``, then
``EnvironmentFile=``), and runs ``ExecStartPre=``, ``ExecStart=`` (``Type=forking``:
it waits for the command to exit), ``ExecStartPost=``, ``ExecStop=`` and
``ExecStopPost=`` with systemd's rules for ``$VAR``, ``${VAR}``, ``$$`` and the
``-`` and ``+`` prefixes. Sandboxing settings are ignored. Every ``/run``
path in the unit is taken to be under ``--run-dir``, so a test's whole
``/run`` lives in its ``tmp_path``.

A unit's processes are the ones whose environment holds its marker (the
variable ``FAKE_SYSTEMD_UNIT``, inherited by everything it starts), which
stands in for the unit's cgroup: stop waits for them, then ends them with
SIGTERM and SIGKILL, as ``KillMode=control-group`` does. Command output is
kept per unit and shown by ``status`` the way the journal's lines are.
Nothing is restarted on failure (``Restart=`` is ignored).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

MARKER = "FAKE_SYSTEMD_UNIT"
EXEC_KEYS = ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecStop", "ExecStopPost")
LIST_KEYS = (*EXEC_KEYS, "Environment", "EnvironmentFile")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_WHOLE_VAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


class UnitNotFound(Exception):
    pass


class CommandFailed(Exception):
    def __init__(self, result: str) -> None:
        super().__init__(result)
        self.result = result


@dataclass
class Unit:
    name: str
    settings: dict[str, list[str]] = field(default_factory=dict)

    def one(self, key: str, default: str = "") -> str:
        values = self.settings.get(key) or [default]
        return values[-1]

    def many(self, key: str) -> list[str]:
        return self.settings.get(key, [])


class Fake:
    def __init__(self, unit_dir: Path, run_dir: Path, state_dir: Path, path: list[str], setenv: dict[str, str]) -> None:
        self.unit_dir = unit_dir
        self.run_dir = run_dir
        self.state_dir = state_dir
        self.path = ":".join([*path, DEFAULT_PATH])
        self.setenv = setenv
        state_dir.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------- loading

    def load(self, name: str) -> Unit:
        prefix, at, rest = name.partition("@")
        suffix = name.rsplit(".", 1)[-1]
        instance = rest[: -len(suffix) - 1] if at else ""
        template = f"{prefix}@.{suffix}" if at else name
        files = [self.unit_dir / (name if (self.unit_dir / name).is_file() else template)]
        if not files[0].is_file():
            raise UnitNotFound(name)
        for d in (self.unit_dir / f"{template}.d", self.unit_dir / f"{name}.d"):
            if d.is_dir():
                files.extend(sorted(d.glob("*.conf")))
        spec = {
            "i": instance,
            "I": unescape(instance),
            "n": name,
            "N": name[: -len(suffix) - 1],
            "p": prefix if at else name[: -len(suffix) - 1],
            "t": "/run",
        }
        unit = Unit(name)
        for f in files:
            for key, value in parse_ini(f.read_text()):
                value = self.map_run(expand_specifiers(value, spec))
                if key in LIST_KEYS and value == "":
                    unit.settings[key] = []  # an empty assignment resets the list
                else:
                    unit.settings.setdefault(key, []).append(value)
        return unit

    def map_run(self, value: str) -> str:
        return re.sub(r"(?<![\w/.])/run(?=/|\b)", str(self.run_dir), value)

    def environment(self, unit: Unit) -> dict[str, str]:
        env = {"PATH": self.path, "LANG": "C.UTF-8", **self.setenv}
        for line in unit.many("Environment"):
            for word in shlex.split(line):
                key, _, value = word.partition("=")
                env[key] = value
        for entry in unit.many("EnvironmentFile"):
            optional = entry.startswith("-")
            path = Path(entry.lstrip("-"))
            try:
                env.update(parse_env_file(path.read_text()))
            except FileNotFoundError:
                if not optional:
                    self.journal(unit, f"{unit.name}: Failed to load environment files: No such file or directory")
                    raise CommandFailed("resources") from None
        env[MARKER] = self.marker(unit)
        return env

    # ---------------------------------------------------------------- state

    def marker(self, unit: Unit) -> str:
        return f"{unit.name}@{self.state_dir}"

    def state_file(self, unit: Unit) -> Path:
        return self.state_dir / f"{unit.name}.state"

    def state(self, unit: Unit) -> str:
        try:
            return self.state_file(unit).read_text().strip()
        except FileNotFoundError:
            return "inactive"

    def set_state(self, unit: Unit, state: str) -> None:
        self.state_file(unit).write_text(state + "\n")

    def journal(self, unit: Unit, line: str) -> None:
        with (self.state_dir / f"{unit.name}.journal").open("a", encoding="utf-8") as f:
            f.write(line.rstrip("\n") + "\n")

    def journal_lines(self, unit: Unit) -> list[str]:
        try:
            return (self.state_dir / f"{unit.name}.journal").read_text().splitlines()
        except FileNotFoundError:
            return []

    def processes(self, unit: Unit) -> list[int]:
        """The unit's "cgroup": every live process whose environment carries its marker."""
        want = f"{MARKER}={self.marker(unit)}".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if want in (entry / "environ").read_bytes().split(b"\0") and not _zombie(entry):
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids

    def is_active(self, unit: Unit) -> str:
        state = self.state(unit)
        if state == "active" and not self.processes(unit):
            self.journal(unit, f"{unit.name}: Main process exited.")
            self.set_state(unit, "failed")
            return "failed"
        return state

    # ---------------------------------------------------------------- running

    def run_commands(self, unit: Unit, key: str, env: dict[str, str], timeout: float) -> None:
        for line in unit.many(key):
            ignore, argv = exec_argv(line, env)
            if "/" not in argv[0]:
                found = shutil_which(argv[0], env["PATH"])
                if found is None:
                    self.journal(unit, f"{unit.name}: Unable to locate executable '{argv[0]}'")
                    raise CommandFailed("exit-code")
                argv[0] = found
            try:
                done = subprocess.run(
                    argv, env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, timeout=timeout,
                )
            except subprocess.TimeoutExpired:
                self.journal(unit, f"{unit.name}: {key} timed out")
                raise CommandFailed("timeout") from None
            for out_line in done.stdout.decode(errors="replace").splitlines():
                self.journal(unit, f"{unit.one('SyslogIdentifier', unit.name)}: {out_line}")
            if done.returncode != 0 and not ignore:
                self.journal(unit, f"{unit.name}: Control process exited, code=exited, status={done.returncode}")
                raise CommandFailed("exit-code")

    def start(self, unit: Unit) -> int:
        if self.is_active(unit) == "active":
            return 0
        timeout = seconds(unit.one("TimeoutStartSec", "90"))
        try:
            env = self.environment(unit)
        except CommandFailed:
            self.set_state(unit, "failed")
            return job_failed(unit, "resources")
        try:
            self.run_commands(unit, "ExecStartPre", env, timeout)
            self.run_commands(unit, "ExecStart", env, timeout)
            if not self.processes(unit):
                self.journal(unit, f"{unit.name}: New main PID could not be determined.")
                raise CommandFailed("protocol")
            self.run_commands(unit, "ExecStartPost", env, timeout)
        except CommandFailed as err:
            self.end_processes(unit, seconds(unit.one("TimeoutStopSec", "90")))
            self.run_commands_quietly(unit, "ExecStopPost", env)
            self.set_state(unit, "failed")
            return job_failed(unit, err.result)
        self.set_state(unit, "active")
        self.journal(unit, f"Started {unit.name}.")
        return 0

    def stop(self, unit: Unit) -> int:
        if self.state(unit) != "active" and not self.processes(unit):
            return 0
        try:
            env = self.environment(unit)
        except CommandFailed:
            env = {"PATH": self.path, MARKER: self.marker(unit)}
        self.run_commands_quietly(unit, "ExecStop", env)
        self.end_processes(unit, seconds(unit.one("TimeoutStopSec", "90")))
        self.run_commands_quietly(unit, "ExecStopPost", env)
        self.set_state(unit, "inactive")
        self.journal(unit, f"Stopped {unit.name}.")
        return 0

    def run_commands_quietly(self, unit: Unit, key: str, env: dict[str, str]) -> None:
        try:
            self.run_commands(unit, key, env, 30.0)
        except CommandFailed:
            pass

    def end_processes(self, unit: Unit, timeout: float) -> None:
        """Wait for the unit's processes to exit, then SIGTERM, then SIGKILL (KillMode=control-group)."""
        for sig, wait in ((None, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            pids = self.processes(unit)
            if not pids:
                return
            if sig is not None:
                for pid in pids:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
            deadline = time.monotonic() + wait
            while self.processes(unit) and time.monotonic() < deadline:
                time.sleep(0.02)

    def status(self, unit: Unit, lines: int) -> int:
        state = self.is_active(unit)
        print(f"● {unit.name} - {unit.one('Description')}")
        print(f"     Active: {state}")
        print()
        for line in self.journal_lines(unit)[-lines:]:
            print(line)
        return 0 if state == "active" else 3


def show(fake: Fake, units: list[str], options: list[str]) -> int:
    """``show --property=Environment [--value] UNIT``: the unit's Environment= assignments, as systemctl prints them."""
    props = [o.split("=", 1)[1] for o in options if o.startswith("--property=")]
    if props != ["Environment"] or len(units) != 1:
        raise SystemExit(f"fake systemctl: only show --property=Environment [--value] UNIT, not {options} {units}")
    try:
        lines = fake.load(units[0]).many("Environment")
    except UnitNotFound:
        lines = []
    words = [shlex.quote(w) for line in lines for w in shlex.split(line)]
    print(("" if "--value" in options else "Environment=") + " ".join(words))
    return 0


def job_failed(unit: Unit, result: str) -> int:
    why = {
        "exit-code": "the control process exited with error code",
        "timeout": "a timeout was exceeded",
        "resources": "of unavailable resources or another system error",
        "protocol": "the service did not take the steps required by its unit configuration",
    }[result]
    print(
        f"Job for {unit.name} failed because {why}.\n"
        f'See "systemctl status {unit.name}" and "journalctl -xeu {unit.name}" for details.',
        file=sys.stderr,
    )
    return 1


# -------------------------------------------------------------------- parsing


def parse_ini(text: str) -> list[tuple[str, str]]:
    out = []
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;" or line.startswith("["):
            continue
        key, _, value = line.partition("=")
        out.append((key.strip(), value.strip()))
    return out


def parse_env_file(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines; a value in double quotes may escape with backslashes, one in single quotes not."""
    env = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        elif len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def expand_specifiers(value: str, spec: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        ch = m.group(1)
        if ch == "%":
            return "%"
        if ch not in spec:
            raise SystemExit(f"fake systemctl: unsupported specifier %{ch}")
        return spec[ch]

    return re.sub(r"%(.)", one, value)


def exec_argv(line: str, env: dict[str, str]) -> tuple[bool, list[str]]:
    """(ignore failure, argv) for one Exec*= value."""
    ignore = False
    while line and line[0] in "-+@:!":
        if line[0] in "@:!":
            raise SystemExit(f"fake systemctl: prefix {line[0]!r} is not supported")
        ignore = ignore or line[0] == "-"
        line = line[1:]
    argv: list[str] = []
    for word in shlex.split(line):
        whole = _WHOLE_VAR.fullmatch(word)
        if whole:
            argv.extend(env.get(whole.group(1), "").split())
            continue
        argv.append(_VAR.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), ""), word))
    return ignore, argv


def unescape(instance: str) -> str:
    raw = re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), instance.replace("-", "/"))
    return raw


def seconds(value: str) -> float:
    m = re.fullmatch(r"([0-9.]+)\s*(ms|s|min)?", value.strip())
    if not m:
        return 90.0
    n = float(m.group(1))
    return n / 1000 if m.group(2) == "ms" else n * 60 if m.group(2) == "min" else n


def shutil_which(name: str, path: str) -> str | None:
    for d in path.split(":"):
        candidate = Path(d) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _zombie(proc: Path) -> bool:
    stat = (proc / "stat").read_text()
    return stat[stat.rindex(")") + 2] in "ZX"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="systemctl (fake)")
    parser.add_argument("--unit-dir", type=Path, required=True)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--path", action="append", default=[])
    parser.add_argument("--setenv", action="append", default=[])
    parser.add_argument("action", choices=("start", "stop", "restart", "is-active", "status", "show"))
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    options = [a for a in args.rest if a.startswith("--")]
    units = [a for a in args.rest if not a.startswith("--")]
    if args.action == "show":
        return show(Fake(args.unit_dir, args.run_dir, args.state_dir, args.path, {}), units, options)
    if len(units) != 1:
        parser.error("exactly one unit")
    lines = next((int(o.split("=", 1)[1]) for o in options if o.startswith("--lines=")), 10)
    fake = Fake(args.unit_dir, args.run_dir, args.state_dir, args.path, dict(kv.split("=", 1) for kv in args.setenv))
    try:
        unit = fake.load(units[0])
    except UnitNotFound:
        verb = {"start": "start", "restart": "restart", "stop": "stop"}.get(args.action)
        if verb:
            print(f"Failed to {verb} {units[0]}: Unit {units[0]} not found.", file=sys.stderr)
            return 5
        print("inactive" if args.action == "is-active" else f"Unit {units[0]} could not be found.")
        return 4 if args.action == "status" else 3
    if args.action == "start":
        return fake.start(unit)
    if args.action == "stop":
        return fake.stop(unit)
    if args.action == "restart":
        fake.stop(unit)
        return fake.start(unit)
    if args.action == "is-active":
        state = fake.is_active(unit)
        print(state)
        return 0 if state == "active" else 3
    return fake.status(unit, lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
