"""Fake NVIDIA driver installs (host trees) for the CDI tests: real ELF libraries, a real ld cache.

``make_driver_tree(root, version)`` lays out what a driver package installs:
versioned libraries built by gcc with their real sonames (so ``ldconfig``
indexes them and makes the soname links), the ``libcuda.so`` development
link, binaries, GSP firmware, the persistenced socket (a plain file) and
``<root>/etc/ld.so.cache`` written by ``ldconfig -r <root>``. Trees are built
once per version and copied (``copy_driver_tree``), since gcc is slow.
"""

from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

LIB_DIR = "/usr/lib/x86_64-linux-gnu"
DRIVERS = ("550.127.05", "570.86.15")
# library file stem -> its soname (None: the versioned file name itself, as libnvidia-gpucomp)
LIBRARIES = {
    "libcuda.so": "libcuda.so.1",
    "libnvidia-ml.so": "libnvidia-ml.so.1",
    "libnvidia-ptxjitcompiler.so": "libnvidia-ptxjitcompiler.so.1",
    "libnvidia-gpucomp.so": None,
    "vdpau/libvdpau_nvidia.so": "libvdpau_nvidia.so.1",
}
BINARIES = ("nvidia-smi", "nvidia-cuda-mps-control", "nvidia-cuda-mps-server", "nvidia-persistenced")
FIRMWARE = ("gsp_ga10x.bin", "gsp_tu10x.bin")


def libraries(version: str) -> list[str]:
    """The container paths of the versioned libraries of ``version``, sorted."""
    return sorted(f"{LIB_DIR}/{stem}.{version}" for stem in LIBRARIES)


@lru_cache(maxsize=None)
def _built(version: str, cache_dir: str) -> Path:
    root = Path(cache_dir) / f"driver-{version}"
    if (root / "etc/ld.so.cache").exists():
        return root
    lib = root / LIB_DIR.lstrip("/")
    (lib / "vdpau").mkdir(parents=True, exist_ok=True)
    for stem, soname in LIBRARIES.items():
        target = lib / f"{stem}.{version}"
        name = soname or target.name
        subprocess.run(["gcc", "-shared", "-nostdlib", f"-Wl,-soname,{name}", "-x", "c", "/dev/null",
                        "-o", str(target)], check=True)
    (lib / "libcuda.so").symlink_to("libcuda.so.1")  # libcuda-dev's link, to the soname link
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/ld.so.conf").write_text(f"{LIB_DIR}\n{LIB_DIR}/vdpau\n")
    subprocess.run(["ldconfig", "-r", str(root), "-C", "/etc/ld.so.cache", "-f", "/etc/ld.so.conf"],
                   check=True, capture_output=True)
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    for name in BINARIES:
        binary = root / "usr/bin" / name
        binary.write_text("#!/bin/sh\n")
        binary.chmod(0o755)
    firmware = root / "lib/firmware/nvidia" / version
    firmware.mkdir(parents=True)
    for name in FIRMWARE:
        (firmware / name).write_bytes(b"\0")
    (root / "run/nvidia-persistenced").mkdir(parents=True)
    (root / "run/nvidia-persistenced/socket").touch()
    return root


def make_driver_tree(root: Path, version: str, cache_dir: Path) -> Path:
    """``root`` holds a driver ``version`` install (replacing what was there); returns ``root``."""
    built = _built(version, str(cache_dir))
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(built, root, symlinks=True)
    return root


def make_hook(path: Path) -> Path:
    """A stand-in ``nvidia-cdi-hook`` (only its existence matters to the spec)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path
