"""Helpers for tests/system/test_deb.py: build the .deb, inspect it, set up a box for it.

Only the standard library (and the harness in nspawn.py) is used.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from tests.system.nspawn import TIMINGS, Box

ROOT = Path(__file__).resolve().parents[2]
BUILD_DEB = ROOT / "scripts/build-deb"
BUILD_PATH = "/var/tmp/nvdp-build"  # scripts/build-deb's fixed build root

#: Where the test puts the mock NVML and the kubelet peer inside the box (readable
#: under nvdp.service's ProtectSystem=strict / ProtectHome / PrivateTmp).
MOCK_DIR = "/usr/local/lib/nvdp-mock"
PEER_DIR = "/usr/local/lib/nvdp-test"
PLUGIN_DIR = "/var/lib/kubelet/device-plugins"
STATUS = "/run/kubelet-peer/status.json"


def kubelet_unit(pythonpath: str = PEER_DIR) -> str:
    """kubelet.service for a box: the kubelet test peer, importable from ``pythonpath``.

    The peer needs grpc and nvdp_node.api, which only nvdp's venv has inside
    the box, so it runs with the venv's interpreter.
    """
    return f"""\
[Unit]
Description=kubelet stand-in (nvdp test peer)

[Service]
Type=simple
Environment=PYTHONPATH={pythonpath} PYTHONDONTWRITEBYTECODE=1 GRPC_VERBOSITY=ERROR
ExecStart=/usr/lib/nvdp/bin/python -m tests.kubelet_peer --dir {PLUGIN_DIR} --status-file {STATUS}
RuntimeDirectory=kubelet-peer
RuntimeDirectoryPreserve=yes
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
"""


KUBELET_UNIT = kubelet_unit()

MOCK_DROPIN = f"""\
# test only: the mock libnvidia-ml.so.1 and an 8x H100 node instead of a driver
[Service]
Environment=LD_LIBRARY_PATH={MOCK_DIR} MOCK_NVML_CONFIG={MOCK_DIR}/h100-sxm-8.json
"""

T = TypeVar("T")


def log(msg: str) -> None:
    print(f"[deb] {msg}", flush=True)


class Timer:
    """``with Timer("apt install"):`` prints and records the step's duration."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.seconds = 0.0

    def __enter__(self) -> "Timer":
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self.t0
        TIMINGS.append((f"deb: {self.label}", self.seconds))
        log(f"{self.label}: {self.seconds:.2f}s")


def wait(predicate: Callable[[], T], what: str, timeout: float = 30.0, interval: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # a file not written yet, a unit not loaded yet
            value, last = None, exc  # type: ignore[assignment]
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}" + (f" (last error: {last!r})" if last else ""))


# ------------------------------------------------------------------ building


#: The releases scripts/build-deb builds for, and the Python each one's venv links to.
RELEASES: dict[str, str] = {"bookworm": "3.11", "trixie": "3.13"}


@dataclass(frozen=True)
class Built:
    path: Path
    version: str
    sha256: str
    seconds: float


#: The version suffix scripts/build-deb gives each release's build.
RELEASE_SUFFIX: dict[str, str] = {"bookworm": "~deb12u1", "trixie": "~deb13u1"}

_BUILT: dict[tuple[object, ...], Built] = {}


def prebuilt(var: str, release: str) -> Built | None:
    """RELEASE's build (by its version suffix) among the packages the environment variable VAR
    names (paths separated by ``:``), or None."""
    for path in os.environ.get(var, "").split(os.pathsep):
        if path and RELEASE_SUFFIX[release] in Path(path).name:
            p = Path(path).resolve()
            return Built(path=p, version=deb_field(p, "Version"), sha256=file_sha256(p), seconds=0.0)
    return None


def build_deb_once(out_dir: Path, *, release: str = "bookworm", version: str | None = None, lint: bool = True) -> Built:
    """build_deb of the work tree, made once per pytest process for each (release, version, lint)."""
    key = (release, version, lint)
    built = _BUILT.get(key)
    if built is None or not built.path.is_file():
        built = _BUILT[key] = build_deb(out_dir, release=release, version=version, lint=lint)
    return built


def build_deb(
    out_dir: Path, *, release: str = "bookworm", version: str | None = None, git_ref: str | None = None,
    lint: bool = True,
) -> Built:
    """Run scripts/build-deb --release RELEASE; returns the .deb it made."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [str(BUILD_DEB), "--release", release, "--out-dir", str(out_dir)]
    if version:
        cmd += ["--version", version]
    if git_ref:
        cmd += ["--git-ref", git_ref]
    if not lint:
        cmd.append("--no-lint")
    label = f"build-deb {release} {version or 'changelog version'}{' @' + git_ref[:12] if git_ref else ''}{'' if lint else ' (no lint)'}"
    with Timer(label) as t:
        r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    last = r.stdout.strip().splitlines()[-1]
    sha, name = last.split()
    path = out_dir / name
    assert sha == file_sha256(path)
    return Built(path=path, version=deb_field(path, "Version"), sha256=sha, seconds=t.seconds)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def changelog_version() -> str:
    return subprocess.run(
        ["dpkg-parsechangelog", "-l", str(ROOT / "packaging/deb/changelog"), "-S", "Version"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()


def deb_field(deb: Path, field: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), field], capture_output=True, text=True, check=True).stdout.strip()


def depends_names(deb: Path) -> list[str]:
    """Package names in Depends (first of each alternative, versions dropped)."""
    names = []
    for clause in deb_field(deb, "Depends").split(","):
        first = clause.split("|")[0].strip()
        if first:
            names.append(re.split(r"[\s(:]", first, maxsplit=1)[0])
    return names


def extract(deb: Path, dest: Path) -> Path:
    """dpkg-deb -R: the file tree plus DEBIAN/ (control files)."""
    subprocess.run(["dpkg-deb", "-R", str(deb), str(dest)], check=True)
    return dest


def data_members(deb: Path) -> list[tarfile.TarInfo]:
    """The data.tar members as dpkg-deb --fsys-tarfile gives them (modes, owners, mtimes)."""
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmembers()


def record_problems(site_packages: Path) -> list[str]:
    """Check every RECORD in site-packages against the files, and every file against the RECORDs."""
    problems: list[str] = []
    recorded: set[Path] = set()
    venv = site_packages.parents[2]
    for record in sorted(site_packages.glob("*.dist-info/RECORD")):
        for row in csv.reader(io.StringIO(record.read_text())):
            if not row:
                continue
            path = Path(os.path.normpath(site_packages / row[0]))
            recorded.add(path)
            if not row[1]:
                continue
            if not path.is_file():
                problems.append(f"{record.parent.name}: {row[0]} is in RECORD but not shipped")
                continue
            data = path.read_bytes()
            algo, _, want = row[1].partition("=")
            got = base64.urlsafe_b64encode(hashlib.new(algo, data).digest()).rstrip(b"=").decode()
            if got != want or row[2] != str(len(data)):
                problems.append(f"{record.parent.name}: {row[0]} does not match its RECORD entry")
    for root, _dirs, files in os.walk(venv):  # does not follow the lib64 -> lib link
        for name in files:
            path = Path(root, name)
            if path.is_file() and not path.is_symlink() and path not in recorded:
                rel = path.relative_to(venv)
                if str(rel) != "pyvenv.cfg":
                    problems.append(f"{rel} belongs to no RECORD")
    return problems


# ------------------------------------------------------------------ the box


def prepare_box(box: Box, mock_lib_dir: Path, profile: Path) -> None:
    """Mock NVML + profile, the kubelet peer's code and unit, nvdp's test drop-in."""
    box.exec(["mkdir", "-p", MOCK_DIR, f"{PEER_DIR}/tests"])
    box.cp_in(mock_lib_dir / "libnvidia-ml.so.1", f"{MOCK_DIR}/libnvidia-ml.so.1")
    box.cp_in(profile, f"{MOCK_DIR}/h100-sxm-8.json")
    box.cp_in(ROOT / "tests/__init__.py", f"{PEER_DIR}/tests/__init__.py")
    box.cp_in(ROOT / "tests/kubelet_peer", f"{PEER_DIR}/tests/")
    box.exec(["find", PEER_DIR, "-name", "__pycache__", "-prune", "-exec", "rm", "-rf", "{}", "+"])
    box.write_file("/etc/systemd/system/kubelet.service", KUBELET_UNIT)
    box.write_file("/etc/systemd/system/nvdp.service.d/mock-nvml.conf", MOCK_DROPIN)


def node_status(box: Box) -> dict:
    return json.loads(box.read_file(STATUS))


def capacity(box: Box, resource: str) -> tuple[int, int] | None:
    r = node_status(box)["resources"].get(resource)
    return (r["allocatable"], r["capacity"]) if r else None


def prop(box: Box, name: str, unit: str = "nvdp.service") -> str:
    return box.systemctl("show", "-p", name, "--value", unit).stdout.strip()


def dpkg_status(box: Box, package: str = "nvdp") -> str:
    """``ii``, ``rc``, ... or ``""`` when dpkg does not know the package."""
    r = box.exec(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", package], check=False)
    return r.stdout.strip() if r.returncode == 0 else ""


def journal_cursor(box: Box) -> str:
    out = box.exec(["journalctl", "-n", "0", "--show-cursor", "--no-pager"], check=False).stdout
    m = re.search(r"^-- cursor: (.+)$", out, re.M)
    assert m, out
    return m.group(1)


def journal_since(box: Box, cursor: str, unit: str = "nvdp.service") -> str:
    """The lines of the whole journal after CURSOR that mention UNIT or come from its processes."""
    out = box.exec(
        ["journalctl", "--no-pager", "--no-hostname", "-o", "short-monotonic", f"--after-cursor={cursor}"],
        check=False,
    ).stdout
    name = unit.removesuffix(".service")
    return "".join(line for line in out.splitlines(keepends=True) if unit in line or f" {name}[" in line)


def apt(box: Box, *args: str, timeout: float = 300) -> str:
    """apt-get in the box (offline: the box has no network); returns its output."""
    r = box.exec(
        ["apt-get", "-y", "-o", "Dpkg::Options::=--force-confold", *args],
        env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=timeout,
    )
    return r.stdout + r.stderr
