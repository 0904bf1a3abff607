"""Fault injection for the mock NVML: XID/ECC events, lost GPUs, MIG re-layouts, failing calls and waits.

Tests (and the demo script) call :class:`Control` to append commands to the
file named by ``MOCK_NVML_CONTROL``; the mock library in *every* process
using that file picks them up within one poll interval (~5 ms). The file is
append-only and each command is one ``O_APPEND`` write, so writers in several
processes never interleave. The line format is documented in
``src/control.h`` and README.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tests.mock_nvml import mig
from tests.mock_nvml.build import EXPORTED_SYMBOLS

GpuRef = int | str

# Exported functions that concern one GPU, so `fail` can target them (the counts concern none).
FAULTABLE_FUNCTIONS = frozenset(
    fn for fn in EXPORTED_SYMBOLS
    if fn.startswith(("nvmlDevice", "nvmlGpuInstance", "nvmlComputeInstance"))
    and not fn.startswith("nvmlDeviceGetCount")
)

# The NVML error names the mock understands (nvmlReturn_t in nvml.h, minus NVML_SUCCESS).
ERROR_NAMES = frozenset({
    "NVML_ERROR_UNINITIALIZED", "NVML_ERROR_INVALID_ARGUMENT", "NVML_ERROR_NOT_SUPPORTED",
    "NVML_ERROR_NO_PERMISSION", "NVML_ERROR_ALREADY_INITIALIZED", "NVML_ERROR_NOT_FOUND",
    "NVML_ERROR_INSUFFICIENT_SIZE", "NVML_ERROR_INSUFFICIENT_POWER", "NVML_ERROR_DRIVER_NOT_LOADED",
    "NVML_ERROR_TIMEOUT", "NVML_ERROR_IRQ_ISSUE", "NVML_ERROR_LIBRARY_NOT_FOUND",
    "NVML_ERROR_FUNCTION_NOT_FOUND", "NVML_ERROR_CORRUPTED_INFOROM", "NVML_ERROR_GPU_IS_LOST",
    "NVML_ERROR_RESET_REQUIRED", "NVML_ERROR_OPERATING_SYSTEM", "NVML_ERROR_LIB_RM_VERSION_MISMATCH",
    "NVML_ERROR_IN_USE", "NVML_ERROR_MEMORY", "NVML_ERROR_NO_DATA", "NVML_ERROR_VGPU_ECC_NOT_SUPPORTED",
    "NVML_ERROR_INSUFFICIENT_RESOURCES", "NVML_ERROR_FREQ_NOT_SUPPORTED",
    "NVML_ERROR_ARGUMENT_VERSION_MISMATCH", "NVML_ERROR_DEPRECATED", "NVML_ERROR_NOT_READY",
    "NVML_ERROR_GPU_NOT_FOUND", "NVML_ERROR_INVALID_STATE", "NVML_ERROR_RESET_TYPE_NOT_SUPPORTED",
    "NVML_ERROR_UNKNOWN",
})


class Control:
    """Appends commands to one control file.

    ``profile`` (the parsed node description) is optional; when given, GPU
    references are checked against it so a typo fails here rather than as a
    warning on the mock's stderr.
    """

    def __init__(self, path: str | os.PathLike[str], *, profile: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self._profile = profile

    def xid(self, gpu: GpuRef, xid: int, gi: int | None = None, ci: int | None = None) -> None:
        """An XID critical error on ``gpu`` (index, ``GPU-`` or ``MIG-`` UUID).

        ``gi``/``ci`` attribute it to a GPU/compute instance; a ``MIG-`` UUID
        implies its own instance ids. Otherwise both are 0xFFFFFFFF in the event.
        """
        if (gi is None) != (ci is None):
            raise ValueError("give both gi and ci, or neither")
        _check_count("xid", xid, minimum=0)
        line = f"xid gpu={self._gpu(gpu)} xid={xid}"
        if gi is not None and ci is not None:
            _check_count("gi", gi, minimum=0)
            _check_count("ci", ci, minimum=0)
            line += f" gi={gi} ci={ci}"
        self._append(line)

    def ecc(self, gpu: GpuRef, *, double_bit: bool = True) -> None:
        """A double-bit (default) or single-bit ECC error event on ``gpu``."""
        self._append(f"ecc gpu={self._gpu(gpu)} bits={'double' if double_bit else 'single'}")

    def lose(self, gpu: GpuRef) -> None:
        """From now on every call on ``gpu`` or its MIG devices returns NVML_ERROR_GPU_IS_LOST."""
        self._append(f"lose gpu={self._gpu(gpu)}")

    def mig(
        self,
        gpu: GpuRef,
        mode: int = 1,
        devices: Iterable[mig.MigDeviceSpec] = (),
        *,
        pending: int | None = None,
        procfs: str | os.PathLike[str] | None = None,
        devfs: str | os.PathLike[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Give ``gpu`` a new MIG mode and MIG devices, seen by the next NVML call in every process.

        ``devices`` are profile names of the GPU's catalogue, each one GPU
        instance with one compute instance (``"1g.10gb"``, ``"1g.10gb+me"``,
        ``"1c.2g.20gb"``), or tuples of names for compute instances sharing one
        GPU instance (``("1c.3g.40gb", "2c.3g.40gb")``); they are placed
        first-fit in order, as ``nvidia-smi mig -cgi ... -C`` would. All MIG
        devices of the GPU are replaced and get new UUIDs (handles from before
        are invalid); other GPUs are untouched. ``pending`` (default ``mode``)
        is the pending mode nvmlDeviceGetMigMode reports; ``mode=0`` takes no
        devices. Returns the new ``mig_devices`` entries.

        ``procfs``/``devfs`` are roots written by ``MockNode.write_procfs`` /
        ``write_devfs``: the new layout's capability files and
        ``nvidia-caps`` nodes are written before the command and the old
        layout's removed after it, so neither layout is ever seen without its
        files. Raises ValueError (writing nothing) for a layout the catalogue
        cannot hold.
        """
        if self._profile is None:
            raise ValueError("Control.mig needs the node's profile (use MockNode.control)")
        _check_mode("mode", mode)
        pending = mode if pending is None else pending
        _check_mode("pending", pending)
        before = self.current_profile()
        index = mig.gpu_index(before, self._gpu(gpu))
        assert index is not None  # _gpu checked it
        if "mig" not in before["gpus"][index]:
            raise ValueError(f"GPU {gpu!r} is not MIG-capable (its profile has no \"mig\")")
        specs = list(devices)
        if mode == 0 and specs:
            raise ValueError("MIG devices need mode=1")
        seq = 1 + sum(line.startswith("mig ") for line in self.lines())
        planned = mig.plan_layout(before, index, specs, seq=seq) if specs else []
        line = f"mig gpu={index} mode={mode} pending={pending}"
        if planned:
            layout = self.path.with_name(f"{self.path.name}.mig-{seq}.json")
            if any(c.isspace() for c in str(layout)):
                raise ValueError(f"the layout file {layout} would contain whitespace, which control lines cannot carry")
            layout.write_text(json.dumps(planned, indent=2) + "\n")
            line += f" layout={layout}"
        after = mig.effective_profile(before, [line])
        self._sync(procfs, devfs, before, after)
        self._append(line)
        self._sync(procfs, devfs, after)
        return planned

    def current_profile(self) -> dict[str, Any]:
        """The profile with the ``mig`` commands written so far applied (the MIG layout NVML reports now)."""
        if self._profile is None:
            raise ValueError("this Control was made without the node's profile")
        return mig.effective_profile(self._profile, self.lines())

    def fail(self, fn: str, gpu: GpuRef, code_name: str, count: int = -1) -> None:
        """The next ``count`` calls of ``fn`` on ``gpu`` (or its MIG devices), in any process, fail.

        ``fn`` is the C symbol, e.g. ``nvmlDeviceGetMinorNumber``; a name
        without a ``_v<n>`` suffix also covers its versioned variants, so
        ``nvmlDeviceGetHandleByIndex`` covers the ``_v2`` pynvml calls.
        ``count=-1`` means every call from now on; ``count=0`` cancels. A
        newer ``fail`` for the same function and GPU replaces an older one.
        The fault fires after NVML's argument checks, like ``lose``.
        """
        if fn not in FAULTABLE_FUNCTIONS:
            raise ValueError(f"{fn!r} is not a per-GPU NVML function the mock exports, such as "
                             f"'nvmlDeviceGetMinorNumber'")
        _check_error_name(code_name)
        _check_count("count", count, minimum=-1)
        self._append(f"fail fn={fn} gpu={self._gpu(gpu)} code={code_name} count={count}")

    def wait_errors(self, code_name: str, count: int = -1) -> None:
        """The next ``count`` nvmlEventSetWait calls, in any process, fail with ``code_name``.

        ``count=-1`` means every call from now on; ``count=0`` cancels.
        A newer ``wait_errors`` replaces an older one.
        """
        _check_error_name(code_name)
        _check_count("count", count, minimum=-1)
        self._append(f"wait_error code={code_name} count={count}")

    def wait_hang(self, ms: int, count: int = 1) -> None:
        """The next ``count`` nvmlEventSetWait calls, in any process, block for ``ms`` whatever their timeout.

        NVML stuck in the driver: the wait delivers nothing meanwhile, then
        goes on as usual (an event, or a timeout once its own timeout has
        passed). ``count=-1`` means every call from now on; ``count=0``
        cancels. :meth:`clear` (or a newer ``wait_hang``) also ends a hang in
        progress within one poll interval.
        """
        _check_count("ms", ms, minimum=1)
        _check_count("count", count, minimum=-1)
        self._append(f"wait_hang ms={ms} count={count}")

    def clear(self) -> None:
        """Un-lose every GPU, cancel call faults, wait errors and hangs (delivered events stay delivered)."""
        self._append("clear")

    def consumed(self, kind: str) -> int:
        """How many of the counted ``kind`` injections (``wait_error``, ``wait_hang``, ``fail``) were taken.

        Only counted ones (``count`` > 0) are recorded; ``count=-1`` writes no claims.
        """
        if kind not in ("wait_error", "wait_hang", "fail"):
            raise ValueError(f"kind must be 'wait_error', 'wait_hang' or 'fail', not {kind!r}")
        return sum(line.startswith(f"{kind}_consumed ") for line in self.lines())

    def lines(self) -> list[str]:
        """Every command written so far, including the mock's own bookkeeping lines."""
        try:
            return self.path.read_text().splitlines()
        except FileNotFoundError:
            return []

    def _gpu(self, gpu: GpuRef) -> str:
        if isinstance(gpu, bool) or not isinstance(gpu, (int, str)):
            raise TypeError(f"gpu must be an NVML index or a UUID, not {gpu!r}")
        if isinstance(gpu, int):
            _check_count("gpu", gpu, minimum=0)
        elif not gpu.startswith(("GPU-", "MIG-")) or any(c.isspace() or c == "=" for c in gpu):
            raise ValueError(f"gpu {gpu!r} is neither an index nor a GPU-/MIG- UUID")
        if self._profile is not None and not _known(self.current_profile(), gpu):
            raise ValueError(f"gpu {gpu!r} is not a GPU or MIG device of this profile")
        return str(gpu)

    @staticmethod
    def _sync(procfs: str | os.PathLike[str] | None, devfs: str | os.PathLike[str] | None,
              *profiles: Mapping[str, Any]) -> None:
        """Make ``procfs``/``devfs`` hold the MIG files of all ``profiles`` (several: their union)."""
        if procfs is not None:
            files: dict[str, str] = {}
            for profile in profiles:
                files.update(mig.capability_files(profile))
            mig.sync_tree(Path(procfs), files, mig.PROCFS_DIRS)
        if devfs is not None:
            nodes = {name: "" for profile in profiles for name in mig.cap_device_files(profile)}
            mig.sync_tree(Path(devfs), nodes, [mig.CAPS_DEVICE_DIR])

    def _append(self, line: str) -> None:
        data = (line + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            written = os.write(fd, data)
        finally:
            os.close(fd)
        if written != len(data):
            raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")


def _check_error_name(code_name: str) -> None:
    if code_name not in ERROR_NAMES:
        raise ValueError(f"{code_name!r} is not an NVML error name such as 'NVML_ERROR_UNKNOWN'")


def _check_mode(name: str, value: int) -> None:
    if isinstance(value, bool) or value not in (0, 1):
        raise ValueError(f"{name} must be 0 (NVML_DEVICE_MIG_DISABLE) or 1 (NVML_DEVICE_MIG_ENABLE), not {value!r}")


def _check_count(name: str, value: int, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, not {value!r}")


def _known(profile: Mapping[str, Any], gpu: GpuRef) -> bool:
    gpus = profile.get("gpus", [])
    if isinstance(gpu, int):
        return gpu < len(gpus)
    return any(g["uuid"] == gpu or any(m["uuid"] == gpu for m in g.get("mig_devices", [])) for g in gpus)
