"""Boot a real systemd (Debian rootfs) in systemd-nspawn, for nvdp's system tests.

Works on hosts whose PID 1 is *not* systemd (no machined, no D-Bus on the
host): nspawn is started with ``--register=no --keep-unit`` after being moved
into cgroups of its own, and the box is driven with ``nsenter`` into the
namespaces of the box's PID 1.

    image = Image("nvdp-system", extra_packages=["iproute2"])
    image.ensure()                      # mmdebstrap once, then cached by spec hash
    with Box("t1", image) as box:       # overlayfs over the image, boots to running
        box.exec(["systemctl", "is-system-running"])
        box.write_file("/etc/systemd/system/x.service", "...")
        box.reboot()                    # state kept, fresh boot

Only the standard library is used, so importing this module is cheap. See
README.md next to this file.

Process safety: this module only ever signals PIDs it recorded itself
(systemd-nspawn and the box's PID 1), and only after checking that their start
time (field 22 of /proc/PID/stat) is unchanged. It never kills by name.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

__all__ = [
    "BOX_PATH",
    "DEFAULT_PACKAGES",
    "Bind",
    "Box",
    "BoxCommandError",
    "BoxError",
    "Image",
    "ProcRef",
    "TIMINGS",
    "default_home",
    "missing_host_requirements",
]

#: Debian packages of the default image. ``procps`` supplies /bin/kill, which
#: minbase lacks (``ExecReload=/bin/kill -HUP $MAINPID`` needs it).
DEFAULT_PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "procps",
    "python3",
    "python3-venv",
    "ca-certificates",
)
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: Bump when Image._customize (or anything else that shapes the image) changes.
IMAGE_FORMAT = 1
BOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Units masked in the image: no console login, no periodic jobs, no first-boot wizard.
MASKED_UNITS = (
    "console-getty.service",
    "getty@.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-tmpfiles-clean.timer",
    "systemd-firstboot.service",
)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,30}$")
_CGROUP_PREFIX = "nvdp-systembox-"

#: (label, seconds) of every timed step in this process; plugin.py prints them.
TIMINGS: list[tuple[str, float]] = []


def default_home() -> Path:
    return Path(os.environ.get("NVDP_SYSTEMBOX_HOME", "/var/tmp/nvdp-systembox"))


def _log(msg: str) -> None:
    print(f"[systembox] {msg}", flush=True)


@contextlib.contextmanager
def _timed(label: str, *, quiet: bool = False) -> Iterator[None]:
    t0 = time.monotonic()
    try:
        yield
    finally:
        dt = time.monotonic() - t0
        TIMINGS.append((label, dt))
        if not quiet:
            _log(f"{label}: {dt:.2f}s")


class BoxError(RuntimeError):
    """The harness could not build, boot, drive or stop a box."""


class BoxCommandError(subprocess.CalledProcessError):
    """A command run with ``Box.exec(check=True)`` failed; str() shows its output."""

    def __init__(self, box: str, returncode: int, cmd: object, output: object, stderr: object):
        super().__init__(returncode, cmd, output, stderr)
        self.box = box

    def __str__(self) -> str:
        def tail(x: object) -> str:
            if isinstance(x, bytes):
                x = x.decode(errors="replace")
            return "\n".join(str(x or "").rstrip().splitlines()[-25:])

        return (
            f"in box {self.box!r}: {self.cmd!r} exited with status {self.returncode}\n"
            f"--- stdout ---\n{tail(self.stdout)}\n--- stderr ---\n{tail(self.stderr)}"
        )


def missing_host_requirements() -> list[str]:
    """Why boxes cannot run on this host (empty if they can)."""
    why = []
    if os.geteuid() != 0:
        why.append("not root (systemd-nspawn, mount and cgroups need root)")
    for tool, pkg in (
        ("systemd-nspawn", "systemd-container"),
        ("mmdebstrap", "mmdebstrap"),
        ("nsenter", "util-linux"),
    ):
        if shutil.which(tool) is None:
            why.append(f"{tool} missing (apt-get install {pkg}, or run scripts/bootstrap)")
    return why


# --------------------------------------------------------------------- processes


def proc_starttime(pid: int) -> int | None:
    """Start time (clock ticks since boot) of PID, or None if gone or a zombie.

    Zombies count as gone: the host's PID 1 here reaps orphans only every ~2 s.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X", "x"):
        return None
    return int(fields[19])


@dataclass(frozen=True)
class ProcRef:
    """A PID together with its start time, so that a reused PID is never signalled."""

    pid: int
    starttime: int

    @classmethod
    def of(cls, pid: int) -> "ProcRef | None":
        st = proc_starttime(pid)
        return None if st is None else cls(pid, st)

    @classmethod
    def load(cls, data: object) -> "ProcRef | None":
        if isinstance(data, list) and len(data) == 2:
            return cls(int(data[0]), int(data[1]))
        return None

    def dump(self) -> list[int]:
        return [self.pid, self.starttime]

    def alive(self) -> bool:
        return proc_starttime(self.pid) == self.starttime

    def signal(self, sig: int) -> bool:
        """Send SIG only if this is still the very process recorded."""
        if not self.alive():
            return False
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        return True


def _wait_gone(refs: Iterable[ProcRef | None], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    refs = [r for r in refs if r is not None]
    while any(r.alive() for r in refs):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


# --------------------------------------------------------------------- cgroups


def _cgroup_parents() -> list[Path]:
    """Our current cgroup in the v2 hierarchy and in the name=systemd v1 one.

    Without a host systemd, nspawn (``--keep-unit``) creates its ``payload/`` and
    ``supervisor/`` groups inside the cgroup it was started in; each box gets its
    own parent so that boxes do not share (and fight over) those groups.
    """
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hid, ctrls, path = line.split(":", 2)
        if hid == "0":
            own["cgroup2"] = path
        elif "name=systemd" in ctrls.split(","):
            own["name=systemd"] = path
    found: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        lf, rf = left.split(), right.split()
        root, mnt, fstype, opts = lf[3], lf[4], rf[0], rf[2] if len(rf) > 2 else ""
        if fstype == "cgroup2":
            key = "cgroup2"
        elif fstype == "cgroup" and "name=systemd" in opts.split(","):
            key = "name=systemd"
        else:
            continue
        if key in found or key not in own:
            continue
        path = own[key]
        if root != "/" and (path == root or path.startswith(root + "/")):
            path = path[len(root) :]
        elif root != "/":
            continue
        found[key] = Path(mnt.replace("\\040", " ") + path.rstrip("/"))
    return sorted(set(found.values()))


def _rm_cgroup_tree(top: Path) -> list[str]:
    """rmdir a cgroup and its children, deepest first; returns PIDs left in it."""
    if not top.is_dir():
        return []
    dirs = [Path(d) for d, _, _ in os.walk(top)]
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()
    if not top.exists():
        return []
    left = []
    for d, _, files in os.walk(top):
        if "cgroup.procs" in files:
            with contextlib.suppress(OSError):
                left += Path(d, "cgroup.procs").read_text().split()
    return left


# --------------------------------------------------------------------- locks & mounts


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _mounts_under(top: Path) -> list[str]:
    """Mount points at or below TOP in our mount namespace, deepest first."""
    top_s = str(top)
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        mnt = line.split()[1].replace("\\040", " ")
        if mnt == top_s or mnt.startswith(top_s + "/"):
            out.append(mnt)
    return sorted(out, key=len, reverse=True)


def _umount_all(top: Path) -> None:
    for mnt in _mounts_under(top):
        if subprocess.run(["umount", mnt], capture_output=True).returncode != 0:
            _log(f"warning: {mnt} is busy; lazy unmount")
            subprocess.run(["umount", "-l", mnt], capture_output=True)


def _rmtree_safe(path: Path) -> None:
    """rm -rf that never descends into a mount (e.g. a bind of the host's /dev
    left behind by an interrupted mmdebstrap, or a box's overlay)."""
    if not path.exists():
        return
    _umount_all(path)
    if _mounts_under(path):
        raise BoxError(f"{path} still has mounts; not removing it")
    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------- image


class Image:
    """A Debian rootfs built with ``mmdebstrap --variant=minbase``, cached by spec hash.

    The tree lives in ``CACHE/images/NAME-HASH/`` and is only ever the read-only
    lower layer of the boxes' overlayfs. It is built into a temporary directory
    and renamed into place, under a lock file, so that concurrent pytest runs
    neither build twice nor see a half-built image.
    """

    def __init__(
        self,
        name: str,
        *,
        suite: str = "bookworm",
        packages: Sequence[str] = DEFAULT_PACKAGES,
        extra_packages: Sequence[str] = (),
        mirror: str = DEFAULT_MIRROR,
        cache_dir: Path | str | None = None,
    ):
        if not _NAME_RE.match(name):
            raise ValueError(f"bad image name {name!r} (use [A-Za-z0-9_-], at most 31 chars)")
        self.name = name
        self.suite = suite
        self.mirror = mirror
        self.packages = tuple(dict.fromkeys([*packages, *extra_packages]))
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_home()

    # the spec decides the cache key: anything that changes the tree must be in it
    @property
    def spec(self) -> dict[str, object]:
        return {
            "format": IMAGE_FORMAT,
            "variant": "minbase",
            "suite": self.suite,
            "mirror": self.mirror,
            "packages": sorted(self.packages),
            "masked": list(MASKED_UNITS),
        }

    @property
    def spec_hash(self) -> str:
        blob = json.dumps(self.spec, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def images_dir(self) -> Path:
        return self.cache_dir / "images"

    @property
    def path(self) -> Path:
        """The image's root directory (the overlay's lower layer)."""
        return self.images_dir / f"{self.name}-{self.spec_hash}"

    @property
    def ready(self) -> bool:
        return (self.path / "etc/nvdp-systembox-image.json").is_file()

    def __repr__(self) -> str:
        return f"Image({self.name!r}, suite={self.suite!r}, hash={self.spec_hash})"

    def ensure(self, *, rebuild: bool = False) -> Path:
        """Build the image unless an identical one is cached; returns its path."""
        if self.ready and not rebuild:
            TIMINGS.append((f"image {self.name} (cached)", 0.0))
            return self.path
        with _flock(self.images_dir / ".lock"):
            if self.ready and not rebuild:  # another process built it meanwhile
                return self.path
            with _timed(f"image {self.name} build ({self.suite}, {len(self.packages)} packages)"):
                self._build()
            self._prune_stale()
        return self.path

    def _build(self) -> None:
        if shutil.which("mmdebstrap") is None:
            raise BoxError("mmdebstrap is missing (apt-get install mmdebstrap)")
        # leftovers of interrupted builds/removals (we hold the lock, nobody else builds)
        for junk in [*self.images_dir.glob(".build-*"), *self.images_dir.glob(".old-*")]:
            if junk.is_dir():
                _rmtree_safe(junk)
        tmp = self.images_dir / f".build-{self.name}-{self.spec_hash}-{os.getpid()}"
        log = self.images_dir / f"{self.name}.build.log"
        tmp.mkdir(parents=True)
        _log(f"building image {self.name} with mmdebstrap ({self.suite}: {','.join(self.packages)})")
        cmd = [
            "mmdebstrap",
            "--variant=minbase",
            f"--include={','.join(self.packages)}",
            '--aptopt=Acquire::Retries "3"',
            self.suite,
            str(tmp),
            self.mirror,
        ]
        with open(log, "wb") as fh:
            rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT).returncode
        if rc != 0:
            _rmtree_safe(tmp)
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise BoxError(f"mmdebstrap failed with status {rc} (log {log}):\n{tail}")
        self._customize(tmp)
        if self.path.exists():  # --rebuild of the same spec: only if no box uses it
            self._remove_tree(self.path)
        tmp.rename(self.path)

    def _customize(self, root: Path) -> None:
        # nspawn's --machine= name becomes the hostname
        (root / "etc/hostname").unlink(missing_ok=True)
        unitdir = root / "etc/systemd/system"
        unitdir.mkdir(parents=True, exist_ok=True)
        for unit in MASKED_UNITS:
            link = unitdir / unit
            link.unlink(missing_ok=True)
            link.symlink_to("/dev/null")
        # empty here; Box.start writes a fresh random one into each box (an
        # empty machine-id at boot would mean "first boot")
        (root / "etc/machine-id").write_text("")
        (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
        (root / "etc/nvdp-systembox-image.json").write_text(
            json.dumps({**self.spec, "name": self.name, "built": time.strftime("%FT%TZ", time.gmtime())}, indent=1)
            + "\n"
        )

    def _in_use(self, path: Path) -> bool:
        for state in (self.cache_dir / "boxes").glob("*/state.json"):
            with contextlib.suppress(OSError, ValueError):
                if json.loads(state.read_text()).get("image") == str(path):
                    return True
        return False

    def _remove_tree(self, path: Path) -> None:
        if self._in_use(path):
            raise BoxError(f"image {path} is in use by a box; stop it (or Box.clean_stale()) first")
        doomed = path.with_name(f".old-{path.name}-{os.getpid()}")
        path.rename(doomed)
        _rmtree_safe(doomed)

    def _prune_stale(self) -> None:
        """Remove older builds of this image name that no box uses."""
        for old in self.images_dir.glob(f"{self.name}-*"):
            if old != self.path and old.is_dir() and re.fullmatch(rf"{re.escape(self.name)}-[0-9a-f]{{16}}", old.name):
                with contextlib.suppress(BoxError, OSError):
                    self._remove_tree(old)
                    _log(f"removed outdated image {old.name}")


# --------------------------------------------------------------------- box


@dataclass(frozen=True)
class Bind:
    """A host path bound into the box (``--bind=`` / ``--bind-ro=``)."""

    src: str
    dst: str | None = None
    readonly: bool = False

    @classmethod
    def parse(cls, spec: "Bind | str | Sequence[object]") -> "Bind":
        if isinstance(spec, Bind):
            return spec
        if isinstance(spec, str):
            src, _, dst = spec.partition(":")
            return cls(src, dst or None)
        items = list(spec)
        ro = len(items) > 2 and items[2] in (True, "ro")
        return cls(str(items[0]), str(items[1]) if len(items) > 1 and items[1] else None, ro)

    def arg(self) -> str:
        opt = "--bind-ro" if self.readonly else "--bind"
        return f"{opt}={self.src}:{self.dst}" if self.dst else f"{opt}={self.src}"


_LIVE: set["Box"] = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_live_boxes() -> None:
    with _LIVE_LOCK:
        boxes = list(_LIVE)
    for box in boxes:
        with contextlib.suppress(Exception):
            _log(f"atexit: stopping box {box.name}")
            box.stop()


class Box:
    """A systemd-nspawn container booting the image's systemd as its PID 1.

    State lives in ``CACHE/boxes/NAME/``: the overlay's ``upper/``, ``work/`` and
    ``root/``, ``console.log`` (nspawn's output, including the boot messages)
    and ``state.json`` (recorded PIDs with start times, cgroups, image).
    """

    def __init__(
        self,
        name: str,
        image: Image,
        *,
        net: str = "private",
        binds: Sequence[Bind | str | Sequence[object]] = (),
        nspawn_args: Sequence[str] = (),
        strict: bool = False,
    ):
        if not _NAME_RE.match(name):
            raise ValueError(f"bad box name {name!r} (use [A-Za-z0-9_-], at most 31 chars)")
        if net not in ("private", "host"):
            raise ValueError("net must be 'private' or 'host'")
        self.name = name
        self.image = image
        self.net = net
        self.binds = [Bind.parse(b) for b in binds]
        self.nspawn_args = list(nspawn_args)
        self.strict = strict
        self.home = image.cache_dir
        self.dir = self.home / "boxes" / name
        self.root = self.dir / "root"
        self.console_log = self.dir / "console.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.nspawn: ProcRef | None = None
        self.leader: ProcRef | None = None
        self.cgroups: list[Path] = []
        self.state: str | None = None  # last `systemctl is-system-running`

    def __repr__(self) -> str:
        return f"Box({self.name!r}, leader={self.leader}, state={self.state})"

    def __enter__(self) -> "Box":
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------- state file

    @property
    def _state_file(self) -> Path:
        return self.dir / "state.json"

    def _save(self) -> None:
        owner = ProcRef.of(os.getpid())
        data = {
            "name": self.name,
            "image": str(self.image.path),
            "owner": owner.dump() if owner else None,
            "nspawn": self.nspawn.dump() if self.nspawn else None,
            "leader": self.leader.dump() if self.leader else None,
            "cgroups": [str(c) for c in self.cgroups],
            "net": self.net,
        }
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        tmp.rename(self._state_file)

    @staticmethod
    def _load_state(box_dir: Path) -> dict[str, object]:
        try:
            return json.loads((box_dir / "state.json").read_text())
        except (OSError, ValueError):
            return {}

    # ------------------------------------------------------------- lifecycle

    @property
    def running(self) -> bool:
        return self.leader is not None and self.leader.alive()

    def start(self, timeout: float = 90) -> "Box":
        """Mount the overlay, boot, and wait until the system is running (or degraded)."""
        if self.running:
            raise BoxError(f"box {self.name} is already running")
        self.image.ensure()
        t0 = time.monotonic()
        keep = False
        if self.dir.exists():
            with _LIVE_LOCK:
                twin = [b for b in _LIVE if b.dir == self.dir and b is not self and b.running]
            owner = ProcRef.load(self._load_state(self.dir).get("owner"))
            if twin:
                raise BoxError(f"box {self.name} is already running in this process")
            if self in _LIVE and self._load_state(self.dir).get("image") == str(self.image.path):
                keep = True  # stopped with keep=True: this start is a reboot
                _cleanup_dir(self.dir, keep=True)
            elif owner is not None and owner.alive() and owner.pid != os.getpid():
                raise BoxError(f"box {self.name} belongs to the running process {owner.pid}")
            else:  # a leftover of a crashed run, or of another Box object
                _teardown(self.dir, log_prefix="stale ")
        for sub in ("upper", "work", "root"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.cgroups = []
        self._save()  # records the image as in use before it is mounted
        with _LIVE_LOCK:
            _LIVE.add(self)
        try:
            self._mount()
            self._write_machine_id()
            self._launch()
            self._wait_boot(timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                self._dump_console()
                self.stop(timeout=5)
            raise
        dt = time.monotonic() - t0
        TIMINGS.append((f"box start ({'reboot' if keep else 'fresh'})", dt))
        _log(
            f"box {self.name} up in {dt:.2f}s: state={self.state} nspawn={self.nspawn and self.nspawn.pid} "
            f"init={self.leader and self.leader.pid} net={self.net}"
        )
        return self

    def _mount(self) -> None:
        if _mounts_under(self.root):
            return
        opts = f"lowerdir={self.image.path},upperdir={self.dir / 'upper'},workdir={self.dir / 'work'}"
        r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(self.root)], capture_output=True, text=True)
        if r.returncode != 0:
            raise BoxError(f"overlay mount failed: {r.stderr.strip()}")

    def _write_machine_id(self) -> None:
        mid = self.root / "etc/machine-id"
        if mid.is_file() and mid.read_text().strip():
            return  # a reboot keeps the box's identity
        mid.unlink(missing_ok=True)
        mid.write_text(uuid.uuid4().hex + "\n")

    def _launch(self) -> None:
        args: list[str] = []
        self.cgroups = []
        if not Path("/run/systemd/system").is_dir():
            # No systemd on the host: nspawn cannot get a scope, so it uses the
            # cgroup it starts in; give it one per box, in both hierarchies.
            for parent in _cgroup_parents():
                cg = parent / f"{_CGROUP_PREFIX}{self.name}"
                cg.mkdir(exist_ok=True)
                self.cgroups.append(cg)
            args += ["--register=no", "--keep-unit"]
        args += [
            "-D", str(self.root),
            f"--machine={self.name}",
            "--boot",
            "--console=read-only",
            "--link-journal=no",
            "--settings=no",
        ]
        if self.net == "private":
            args.append("--private-network")
        args += [b.arg() for b in self.binds]
        args += self.nspawn_args
        # Join the cgroups *before* exec'ing nspawn (it reads its cgroup at
        # startup); the shell's PID becomes nspawn's PID, start time unchanged.
        join = 'while [ "$1" != -- ]; do echo $$ > "$1/cgroup.procs" || exit 1; shift; done; shift; exec "$@"'
        cmd = ["/bin/sh", "-c", join, "sh", *[str(c) for c in self.cgroups], "--", "systemd-nspawn", *args]
        with open(self.console_log, "ab") as log:
            log.write(f"=== start {time.strftime('%FT%TZ', time.gmtime())}: {shlex.join(cmd[5:])}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        ref = ProcRef.of(self._proc.pid)
        if ref is None:
            self._proc.wait()
            raise BoxError(f"systemd-nspawn exited at once (status {self._proc.returncode})")
        self.nspawn = ref
        self._save()

    def _find_leader(self) -> ProcRef | None:
        """The box's PID 1: nspawn's child running systemd in another PID namespace."""
        if self.nspawn is None or not self.nspawn.alive():
            return None
        my_pidns = os.readlink("/proc/self/ns/pid")
        pid = self.nspawn.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return None
        for c in children:
            try:
                if os.readlink(f"/proc/{c}/ns/pid") != my_pidns and Path(f"/proc/{c}/comm").read_text().strip() == "systemd":
                    return ProcRef.of(int(c))
            except OSError:
                continue
        return None

    def _nspawn_exited(self) -> int | None:
        if self._proc is not None:
            return self._proc.poll()
        return None if self.nspawn is not None and self.nspawn.alive() else -1

    def _wait_boot(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while True:
            rc = self._nspawn_exited()
            if rc == 133 and self._proc is not None:
                # `systemctl reboot` inside the box: nspawn exits with 133 (what
                # systemd-nspawn@.service's RestartForceExitStatus= is for)
                _log(f"box {self.name} rebooted itself; starting nspawn again")
                self._proc = None
                self.leader = None
                self._launch()
                continue
            if rc is not None:
                raise BoxError(f"systemd-nspawn exited with status {rc} during boot (log: {self.console_log})")
            if self.leader is None or not self.leader.alive():
                self.leader = self._find_leader()
                if self.leader is not None:
                    self._save()
            if self.leader is not None:
                left = max(1.0, deadline - time.monotonic())
                try:
                    r = self._nsenter(["systemctl", "is-system-running", "--wait"], timeout=left, capture=True)
                    state = r.stdout.strip() or f"no answer: {r.stderr.strip()[-200:]}"
                except subprocess.TimeoutExpired:
                    state = "timeout"
                if state in ("running", "degraded"):
                    break
            if time.monotonic() >= deadline:
                jobs = ""
                if self.leader is not None:
                    with contextlib.suppress(Exception):
                        jobs = self._nsenter(["systemctl", "--no-pager", "list-jobs"], timeout=10, capture=True).stdout
                raise BoxError(
                    f"box {self.name} did not finish booting within {timeout}s (state: {state or 'no init yet'})\n{jobs}"
                )
            time.sleep(0.05)
        self.state = state
        if state == "degraded":
            failed = self.systemctl("--failed", "--plain", check=False).stdout
            _log(f"box {self.name} is degraded; failed units:\n{failed}")
            if self.strict:
                raise BoxError(f"box {self.name} booted degraded:\n{failed}")

    def _dump_console(self) -> None:
        with contextlib.suppress(OSError):
            text = re.sub(r"\x1b\[[0-9;]*m", "", self.console_log.read_text(errors="replace"))
            lines = [ln for ln in text.splitlines() if ln.strip()][-40:]
            _log(f"box {self.name} console.log (last lines):\n" + "\n".join(lines))

    def stop(self, timeout: float = 30, *, keep: bool = False) -> None:
        """Halt the box in an orderly way (SIGTERM to nspawn), force it after TIMEOUT.

        Then unmount, remove the cgroups and, unless KEEP, the box's state.
        Idempotent.
        """
        t0 = time.monotonic()
        try:
            if self.nspawn is None and self.leader is None and not self.dir.exists():
                return
            _halt(self.nspawn, self.leader, self._proc, timeout=timeout, name=self.name)
            self._proc = None
            _cleanup_dir(self.dir, keep=keep)
        finally:
            with _LIVE_LOCK:
                if not keep:
                    _LIVE.discard(self)
            self.nspawn = self.leader = None
            self.cgroups = []
            self.state = None
        dt = time.monotonic() - t0
        TIMINGS.append((f"box stop{' (keep)' if keep else ''}", dt))
        _log(f"box {self.name} stopped in {dt:.2f}s{' (state kept)' if keep else ''}")

    def reboot(self, timeout: float = 90) -> "Box":
        """Stop keeping the box's state (its overlay upper dir), then boot again."""
        self.stop(keep=True)
        return self.start(timeout=timeout)

    def wait(self, timeout: float = 90) -> str:
        """Wait for boot to finish; returns the state.

        After ``systemctl reboot`` inside the box, call this: nspawn exits with
        status 133 and is started again here (the box's state is kept as is).
        """
        self._wait_boot(timeout)
        return self.state or ""

    # ------------------------------------------------------------- driving

    def _require_leader(self) -> ProcRef:
        if self.leader is None or not self.leader.alive():
            raise BoxError(f"box {self.name} is not running (log: {self.console_log})")
        return self.leader

    def _nsenter(
        self, argv: Sequence[str], *, timeout: float | None, capture: bool
    ) -> subprocess.CompletedProcess[str]:
        leader = self._require_leader()
        base = ["nsenter", f"--target={leader.pid}", "--all", "--root", "--wd", "--"]
        env = ["env", "-i", f"PATH={BOX_PATH}", "SYSTEMD_COLORS=0", "SYSTEMD_PAGER=cat"]
        return _run_nsenter([*base, *env, *argv], input=None, text=True, timeout=timeout, capture=capture)

    def exec(
        self,
        cmd: str | Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        input: str | bytes | None = None,
        check: bool = True,
        timeout: float | None = 120,
        cwd: str | None = None,
        text: bool = True,
    ) -> subprocess.CompletedProcess:
        """Run CMD in the box (a string goes to ``/bin/sh -c``) with a clean environment.

        stdout and stderr are captured (str, or bytes with ``text=False`` or
        bytes ``input``). On timeout the command inside the box is killed too.
        """
        leader = self._require_leader()
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else [str(c) for c in cmd]
        if not argv:
            raise ValueError("empty command")
        base_env = {
            "PATH": BOX_PATH,
            "HOME": "/root",
            "USER": "root",
            "LOGNAME": "root",
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "PAGER": "cat",
            "SYSTEMD_PAGER": "cat",
            "SYSTEMD_COLORS": "0",
        }
        base_env.update(env or {})
        envargs = ["env", "-i"]
        if cwd:
            envargs += ["-C", cwd]
        envargs += [f"{k}={v}" for k, v in base_env.items()]
        full = ["nsenter", f"--target={leader.pid}", "--all", "--root", "--wd", "--", *envargs, *argv]
        if isinstance(input, bytes):
            text = False
        if isinstance(input, str) and not text:
            input = input.encode()
        r = _run_nsenter(full, input=input, text=text, timeout=timeout)
        res = subprocess.CompletedProcess(argv, r.returncode, r.stdout, r.stderr)
        if check and r.returncode != 0:
            raise BoxCommandError(self.name, r.returncode, argv, r.stdout, r.stderr)
        return res

    def systemctl(self, *args: str, check: bool = True, timeout: float | None = 120) -> subprocess.CompletedProcess:
        return self.exec(["systemctl", "--no-pager", *args], check=check, timeout=timeout)

    def journal(self, unit: str | None = None, *args: str, boot: bool = False) -> str:
        """The box's journal (for UNIT, if given) as text."""
        cmd = ["journalctl", "--no-pager", "--no-hostname", "-o", "short-monotonic"]
        if boot:
            cmd.append("-b")
        if unit:
            cmd += ["-u", unit]
        return self.exec([*cmd, *args], check=False).stdout

    def write_file(self, path: str, content: str | bytes, mode: int = 0o644) -> None:
        """Write a file in the box (parents created), atomically via rename."""
        data = content.encode() if isinstance(content, str) else content
        script = 'set -e; mkdir -p "$(dirname "$1")"; t="$1.tmp.$$"; cat > "$t"; chmod "$2" "$t"; mv -f "$t" "$1"'
        self.exec(["/bin/sh", "-c", script, "sh", path, f"{mode:o}"], input=data)

    def read_file(self, path: str, *, binary: bool = False) -> str | bytes:
        r = self.exec(["cat", "--", path], text=not binary)
        return r.stdout

    def exists(self, path: str) -> bool:
        return self.exec(["test", "-e", path], check=False).returncode == 0

    def cp_in(self, src: Path | str, dst: str) -> None:
        """Copy a host file or directory into the box.

        A file goes to DST itself, unless DST ends in ``/`` or is a directory in
        the box, in which case it lands inside it (like directories always do).
        Copies go through tar/cat *inside* the box, so they also reach the box's
        own tmpfs mounts such as /tmp.
        """
        src = Path(src)
        if not src.exists():
            raise FileNotFoundError(src)
        if src.is_file() and not dst.endswith("/") and not self.exec(["test", "-d", dst], check=False).returncode == 0:
            self.write_file(dst, src.read_bytes(), src.stat().st_mode & 0o7777)
            return
        tar = subprocess.run(
            ["tar", "-C", str(src.parent), "--numeric-owner", "-cf", "-", src.name], capture_output=True, check=True
        ).stdout
        self.exec(["/bin/sh", "-c", 'mkdir -p "$1" && tar -C "$1" --no-same-owner -xf -', "sh", dst], input=tar)

    def cp_out(self, src: str, dst: Path | str) -> Path:
        """Copy a file or directory out of the box; returns the host path written.

        If DST is an existing host directory the copy goes inside it.
        """
        dst = Path(dst)
        target = dst / Path(src).name if dst.is_dir() else dst
        if self.exec(["test", "-d", src], check=False).returncode == 0:
            data = self.exec(["tar", "-C", src, "-cf", "-", "."], text=False).stdout
            target.mkdir(parents=True, exist_ok=True)
            subprocess.run(["tar", "-C", str(target), "--no-same-owner", "-xf", "-"], input=data, check=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.exec(["cat", "--", src], text=False).stdout)
        return target

    # ------------------------------------------------------------- leftovers

    @classmethod
    def clean_stale(cls, cache_dir: Path | str | None = None) -> list[str]:
        """Stop and remove boxes left behind by runs that died (their owner is gone).

        Boxes whose owning process is still alive (this one or another pytest)
        are left alone. Also removes the box cgroups of vanished boxes. Returns
        the names of the boxes cleaned.
        """
        home = Path(cache_dir) if cache_dir is not None else default_home()
        cleaned = []
        with _LIVE_LOCK:
            live_dirs = {b.dir for b in _LIVE}
        for d in sorted((home / "boxes").glob("*")):
            if not d.is_dir() or d in live_dirs:
                continue
            owner = ProcRef.load(cls._load_state(d).get("owner"))
            if owner is not None and owner.alive():
                continue
            _teardown(d, log_prefix="stale ")
            cleaned.append(d.name)
        # cgroups whose box directory is gone (e.g. state removed by hand)
        with contextlib.suppress(OSError):
            for parent in _cgroup_parents():
                for cg in parent.glob(f"{_CGROUP_PREFIX}*"):
                    name = cg.name[len(_CGROUP_PREFIX) :]
                    if not (home / "boxes" / name).exists() and not _rm_cgroup_tree(cg):
                        cleaned.append(name)
        return sorted(set(cleaned))


def _run_nsenter(
    argv: Sequence[str], *, input: str | bytes | None, text: bool, timeout: float | None, capture: bool = True
) -> subprocess.CompletedProcess:
    """subprocess.run for nsenter, but a timeout also kills the command in the box.

    bookworm's nsenter (util-linux 2.38) has no --kill-child: killing nsenter
    alone would leave its forked child running inside the box, and the
    command's own children would keep the output pipes (and us) waiting.
    """
    pipe = subprocess.PIPE if capture else None
    with subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=pipe,
        stderr=pipe,
        text=text,
        start_new_session=True,
    ) as p:
        try:
            out, err = p.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            # nsenter runs in a session of its own, so its process group (whose
            # ID is the PID of our still unreaped child) holds exactly the
            # command and whatever it forked inside the box
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.kill()
            p.communicate()
            raise
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


# --------------------------------------------------------------------- stopping helpers


def _halt(
    nspawn: ProcRef | None,
    leader: ProcRef | None,
    proc: subprocess.Popen[bytes] | None,
    *,
    timeout: float,
    name: str,
) -> None:
    """Orderly halt via SIGTERM to nspawn (it sends SIGRTMIN+3 to the box's init);
    after TIMEOUT, SIGKILL the box's init (ends its PID namespace) and nspawn."""
    if nspawn is not None and nspawn.alive():
        nspawn.signal(signal.SIGTERM)
        if not _wait_gone([nspawn], timeout):
            _log(f"box {name} did not halt within {timeout}s; killing its init and nspawn")
            if leader is not None:
                leader.signal(signal.SIGKILL)
            if not _wait_gone([nspawn], 5):
                nspawn.signal(signal.SIGKILL)
                _wait_gone([nspawn], 5)
    elif leader is not None and leader.alive():
        _log(f"box {name}: nspawn is gone but init {leader.pid} lives; killing it")
        leader.signal(signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)  # reap our child
    _wait_gone([leader], 10)


def _cleanup_dir(box_dir: Path, *, keep: bool) -> None:
    """Unmount the overlay, drop nspawn leftovers and the cgroups; unless KEEP, the state."""
    state = Box._load_state(box_dir)
    root = box_dir / "root"
    # nspawn's image lock (left behind if nspawn itself was killed) is named
    # after the overlay's root inode: look it up before unmounting
    lock = None
    with contextlib.suppress(OSError):
        st = root.stat()
        lock = Path(f"/run/systemd/nspawn/locks/inode-{st.st_dev}:{st.st_ino}")
    _umount_all(box_dir)
    if lock is not None:
        with contextlib.suppress(OSError):
            lock.unlink(missing_ok=True)
    for cg in state.get("cgroups", []) or []:
        left = _rm_cgroup_tree(Path(str(cg)))
        if left:
            _log(f"warning: could not remove cgroup {cg} (processes left: {' '.join(left)})")
    # nspawn cannot remove this itself when /run is not a tmpfs
    with contextlib.suppress(OSError):
        Path(f"/run/systemd/nspawn/propagate/{box_dir.name}").rmdir()
    if keep:
        if state:
            state.update(nspawn=None, leader=None, cgroups=[])
            (box_dir / "state.json").write_text(json.dumps(state, indent=1) + "\n")
    else:
        _rmtree_safe(box_dir)


def _teardown(box_dir: Path, *, log_prefix: str = "") -> None:
    """Stop (if running) and remove a box known only by its state directory."""
    state = Box._load_state(box_dir)
    nspawn = ProcRef.load(state.get("nspawn"))
    leader = ProcRef.load(state.get("leader"))
    if (nspawn and nspawn.alive()) or (leader and leader.alive()):
        _log(f"stopping {log_prefix}box {box_dir.name} (nspawn={nspawn and nspawn.pid}, init={leader and leader.pid})")
    _halt(nspawn, leader, None, timeout=10, name=box_dir.name)
    _cleanup_dir(box_dir, keep=False)
    _log(f"removed {log_prefix}box {box_dir.name}")


if __name__ == "__main__":  # tiny CLI for poking around by hand: python -m tests.system.nspawn clean
    if sys.argv[1:] == ["clean"]:
        print(Box.clean_stale())
    else:
        print("usage: python -m tests.system.nspawn clean", file=sys.stderr)
        sys.exit(2)
