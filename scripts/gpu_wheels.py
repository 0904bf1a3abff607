"""Wheels of nvdp's pinned runtime dependencies, for running ``scripts/gpu-check`` on a machine without network.

The device machine this project is sometimes lent has a Python (3.12) but no
network and no ``.venv``: ``scripts/gpu-check --pack`` calls ``pack`` here,
with network, to fill ``.gpu-wheels/`` with the exact versions pinned in
``requirements.lock`` (protobuf's runtime must match the generated
``nvdp_node/api/*_pb2.py``, so whatever the other machine has installed will
not do); there, ``scripts/gpu-check`` calls ``install`` to unpack them offline
into a directory put first on ``PYTHONPATH``. Tested by
``tests/daemon/test_gpu_check_offline.py`` (pack for this machine's 3.11,
install, run the check against the mock NVML).

Standard library only: it runs before any dependency is there.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# manylinux tags the pinned wheels are published under, newest first; py3-none-any matches any of them.
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux_2_5_x86_64", "manylinux1_x86_64", "linux_x86_64")
LIMIT_MIB = 60


def pins(lock: Path) -> list[str]:
    """``name==version`` of every package in a pip-compile lock file."""
    return re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*==[^\s\\;]+)", lock.read_text(), re.M)


def hashes(lock: Path) -> set[str]:
    """Every ``sha256`` the lock file allows, of any package."""
    return set(re.findall(r"--hash=sha256:([0-9a-f]{64})", lock.read_text()))


def pack(dest: Path, python_version: str, lock: Path, python: str = sys.executable) -> int:
    """Download (or, for sdist-only pins, build) one wheel per pin into ``dest``; print each and the total size.

    A downloaded wheel must have one of the lock's hashes; a wheel built here from an sdist has none to match.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()
    abi = "cp" + python_version.replace(".", "")
    failed, allowed = [], hashes(lock)
    for pin in pins(lock):
        download = [python, "-m", "pip", "download", "-qq", "--no-deps", "--only-binary=:all:",
                    "--python-version", python_version, "--implementation", "cp",
                    "--abi", abi, "--abi", "abi3", "--abi", "none", "-d", str(dest)]
        for platform in PLATFORMS:
            download += ["--platform", platform]
        before = set(dest.glob("*.whl"))
        if subprocess.run(download + [pin]).returncode == 0:
            for wheel in set(dest.glob("*.whl")) - before:
                if hashlib.sha256(wheel.read_bytes()).hexdigest() not in allowed:
                    print(f"{wheel.name}: its sha256 is not in {lock}", file=sys.stderr)
                    failed.append(pin)
            continue
        # No binary wheel (sdnotify is an sdist): build one here; it is pure Python, so it fits any CPython.
        with tempfile.TemporaryDirectory() as tmp:
            built = subprocess.run([python, "-m", "pip", "wheel", "-qq", "--no-deps", "-w", tmp, pin])
            wheels = list(Path(tmp).glob("*.whl"))
            if built.returncode != 0 or not wheels or not all(w.name.endswith("-none-any.whl") for w in wheels):
                failed.append(pin)
                continue
            for wheel in wheels:
                shutil.move(str(wheel), dest / wheel.name)
    total = 0
    for wheel in sorted(dest.glob("*.whl")):
        total += wheel.stat().st_size
        print(f"{wheel.stat().st_size / 2**20:8.2f} MiB  {wheel.name}")
    print(f"{total / 2**20:8.2f} MiB  total in {dest} ({len(list(dest.glob('*.whl')))} wheels, "
          f"for CPython {python_version} x86_64)")
    if failed:
        print(f"no wheel for: {', '.join(failed)} (network? pip index?)", file=sys.stderr)
        return 1
    if total > LIMIT_MIB * 2**20:
        print(f"{dest} is over {LIMIT_MIB} MiB: it would not fit the device tool's carry limit", file=sys.stderr)
        return 1
    return 0


def install(wheels: Path, target: Path, python: str = sys.executable) -> int:
    """Install every wheel in ``wheels`` into a fresh ``target``, offline: pip if this Python has it, else unzip."""
    found = sorted(wheels.glob("*.whl"))
    if not found:
        print(f"no wheels in {wheels}: run `scripts/gpu-check --pack` on a machine with network first",
              file=sys.stderr)
        return 1
    shutil.rmtree(target, ignore_errors=True)
    has_pip = subprocess.run([python, "-m", "pip", "--version"], capture_output=True).returncode == 0
    if has_pip:
        return subprocess.run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                               "--disable-pip-version-check", "--target", str(target),
                               *map(str, found)]).returncode
    # A wheel is a zip of its import tree; ours carry no scripts or headers that would need placing elsewhere.
    target.mkdir(parents=True)
    for wheel in found:
        with zipfile.ZipFile(wheel) as z:
            z.extractall(target)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="download the pinned wheels (needs network)")
    p.add_argument("--dest", type=Path, default=ROOT / ".gpu-wheels")
    p.add_argument("--python-version", default="3.12", help="CPython the wheels are for (default 3.12)")
    p.add_argument("--lock", type=Path, default=ROOT / "requirements.lock")
    i = sub.add_parser("install", help="install them offline")
    i.add_argument("--wheels", type=Path, default=ROOT / ".gpu-wheels")
    i.add_argument("--target", type=Path, required=True)
    args = parser.parse_args()
    if args.cmd == "pack":
        return pack(args.dest, args.python_version, args.lock)
    return install(args.wheels, args.target)


if __name__ == "__main__":
    sys.exit(main())
