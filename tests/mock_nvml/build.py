"""Builds the mock ``libnvidia-ml.so.1`` from ``src/*.c`` against the real ``nvml.h``.

Called by the pytest plugin (``pytest_configure``), by ``subprocess_env`` and
from the command line (``python -m tests.mock_nvml.build [--force]``). The
header comes from the ``nvidia-nvml-dev`` distribution installed in the venv,
so every exported function is compiled against NVIDIA's own prototype
(``-Wmissing-prototypes -Werror`` rejects an export the header does not
declare). Builds are cached by a hash of the sources, header and flags, and
land by atomic rename, so concurrent pytest processes can all call ``build()``.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.metadata
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SRC_DIR = PACKAGE_DIR / "src"
BUILD_DIR = PACKAGE_DIR / "build"
SONAME = "libnvidia-ml.so.1"
DEV_LINK = "libnvidia-ml.so"
HEADER_DISTRIBUTION = "nvidia-nvml-dev"

CC = os.environ.get("CC", "gcc")
CFLAGS = (
    "-Wall", "-Wextra", "-Werror", "-Wmissing-prototypes", "-shared", "-fPIC", "-O2", "-std=gnu11",
    # export only what is marked EXPORT: anything else is FUNCTION_NOT_FOUND to pynvml
    "-fvisibility=hidden",
    # declare the legacy unversioned entry points too, so they are prototype-checked as well
    "-DNVML_NO_UNVERSIONED_FUNC_DEFS",
)
LDFLAGS = (f"-Wl,-soname,{SONAME}", "-Wl,--no-undefined", "-lpthread", "-ldl")

# Every NVML symbol the mock exports; tests/test_mock_nvml.py checks the built library against it.
EXPORTED_SYMBOLS = frozenset({
    "nvmlInit", "nvmlInit_v2", "nvmlInitWithFlags", "nvmlShutdown", "nvmlErrorString",
    "nvmlSystemGetDriverVersion", "nvmlSystemGetNVMLVersion",
    "nvmlSystemGetCudaDriverVersion", "nvmlSystemGetCudaDriverVersion_v2",
    "nvmlDeviceGetCount", "nvmlDeviceGetCount_v2",
    "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByUUID",
    "nvmlDeviceGetHandleByPciBusId", "nvmlDeviceGetHandleByPciBusId_v2",
    "nvmlDeviceGetName", "nvmlDeviceGetUUID", "nvmlDeviceGetIndex", "nvmlDeviceGetMinorNumber",
    "nvmlDeviceGetBrand",
    "nvmlDeviceGetPciInfo", "nvmlDeviceGetPciInfo_v2", "nvmlDeviceGetPciInfo_v3",
    "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetMemoryInfo_v2", "nvmlDeviceGetCudaComputeCapability",
    "nvmlDeviceGetMigMode", "nvmlDeviceGetMaxMigDeviceCount", "nvmlDeviceGetMigDeviceHandleByIndex",
    "nvmlDeviceIsMigDeviceHandle", "nvmlDeviceGetGpuInstanceId", "nvmlDeviceGetComputeInstanceId",
    "nvmlDeviceGetDeviceHandleFromMigDeviceHandle",
    "nvmlDeviceGetAttributes", "nvmlDeviceGetAttributes_v2",
    "nvmlDeviceGetGpuInstanceProfileInfo", "nvmlDeviceGetGpuInstanceProfileInfoV",
    "nvmlDeviceGetGpuInstanceProfileInfoByIdV", "nvmlDeviceGetGpuInstancePossiblePlacements_v2",
    "nvmlDeviceGetGpuInstances", "nvmlDeviceGetGpuInstanceById", "nvmlGpuInstanceGetInfo",
    "nvmlGpuInstanceGetComputeInstanceProfileInfo", "nvmlGpuInstanceGetComputeInstanceProfileInfoV",
    "nvmlGpuInstanceGetComputeInstances", "nvmlGpuInstanceGetComputeInstanceById",
    "nvmlComputeInstanceGetInfo", "nvmlComputeInstanceGetInfo_v2",
    "nvmlDeviceGetTopologyCommonAncestor",
    "nvmlDeviceGetNvLinkState", "nvmlDeviceGetNvLinkCapability",
    "nvmlDeviceGetNvLinkRemotePciInfo", "nvmlDeviceGetNvLinkRemotePciInfo_v2",
    "nvmlDeviceGetSupportedEventTypes", "nvmlDeviceRegisterEvents",
    "nvmlEventSetCreate", "nvmlEventSetFree", "nvmlEventSetWait", "nvmlEventSetWait_v2",
})


class BuildError(RuntimeError):
    """The mock library could not be built (no header, no compiler, or a compile error)."""


def find_nvml_header() -> Path:
    """``nvml.h`` as installed by the ``nvidia-nvml-dev`` distribution."""
    try:
        dist = importlib.metadata.distribution(HEADER_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as err:
        raise BuildError(
            f"the {HEADER_DISTRIBUTION} distribution is not installed; run scripts/bootstrap"
        ) from err
    headers = [f for f in dist.files or () if f.name == "nvml.h"]
    if len(headers) != 1:
        raise BuildError(
            f"expected exactly one nvml.h in {HEADER_DISTRIBUTION}, found {[str(h) for h in headers]}"
        )
    path = Path(dist.locate_file(headers[0])).resolve()
    if not path.is_file():
        raise BuildError(f"{HEADER_DISTRIBUTION} lists {headers[0]} but {path} does not exist")
    return path


def _sources() -> list[Path]:
    return sorted(p for p in SRC_DIR.iterdir() if p.suffix in (".c", ".h"))


def _fingerprint(header: Path, sources: list[Path]) -> str:
    h = hashlib.sha256()
    h.update(repr((CC, CFLAGS, LDFLAGS)).encode())
    for path in (header, *sources):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _replace_atomically(target: Path, write: Callable[[Path], object], mode: int | None = None) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        if mode is not None:  # mkstemp makes 0600 files; other users (system tests) read these too
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _compile(header: Path, sources: list[Path], output: Path) -> None:
    cmd = [CC, *CFLAGS, f"-I{header.parent}", "-o", str(output),
           *(str(s) for s in sources if s.suffix == ".c"), *LDFLAGS]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError as err:
        raise BuildError(f"C compiler {CC!r} not found; run scripts/bootstrap") from err
    if result.returncode != 0:
        raise BuildError(f"compiling the mock NVML failed:\n$ {' '.join(cmd)}\n{result.stderr}")


def _link_ok(link: Path) -> bool:
    return link.is_symlink() and os.readlink(link) == SONAME


def build(*, force: bool = False) -> Path:
    """Build (if needed) and return the directory holding ``libnvidia-ml.so.1``."""
    header = find_nvml_header()
    sources = _sources()
    want = _fingerprint(header, sources)
    library, stamp, link = BUILD_DIR / SONAME, BUILD_DIR / f"{SONAME}.sha256", BUILD_DIR / DEV_LINK

    def fresh() -> bool:
        try:
            return library.is_file() and stamp.read_text() == want and _link_ok(link)
        except OSError:
            return False

    if not force and fresh():
        return BUILD_DIR
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    # The lock only avoids duplicate compiles; readers never see partial files
    # because everything lands by rename, and the stamp lands after the library.
    with open(BUILD_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if force or not fresh():
            _replace_atomically(library, lambda tmp: _compile(header, sources, tmp), 0o755)
            if not _link_ok(link):
                _replace_atomically(link, lambda tmp: (tmp.unlink(), tmp.symlink_to(SONAME)))
            _replace_atomically(stamp, lambda tmp: tmp.write_text(want), 0o644)
    return BUILD_DIR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mock_nvml.build", description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if the cached build is current")
    args = parser.parse_args(argv)
    try:
        out = build(force=args.force)
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(out / SONAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
