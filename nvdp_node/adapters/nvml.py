"""GPU discovery through NVML (the real ``pynvml`` bindings).

Called by the supervisor at start and on every re-enumeration, and by
``nvdp devices``. Everything NVML reports is turned into the plain
:class:`~nvdp_node.domain.devices.NodeInventory`; NUMA affinity comes from
sysfs (as upstream does), under an injectable root so tests use fixture trees.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pynvml

from nvdp_node.domain.devices import Gpu, NodeInventory
from nvdp_node.domain.errors import NvmlUnavailableError

log = logging.getLogger(__name__)

SYSFS_ROOT = Path("/sys")
# Upstream (go-nvlib WithSkippedDevices) never advertises display-only DGX GPUs.
SKIPPED_NAMES = frozenset({"DGX Display", "NVIDIA DGX Display"})

_LIKELY_CAUSES = {
    pynvml.NVML_ERROR_LIBRARY_NOT_FOUND: (
        "libnvidia-ml.so.1 not found: the NVIDIA driver is not installed, or its "
        "libraries are not on the loader path (check `ldconfig -p | grep libnvidia-ml`)"
    ),
    pynvml.NVML_ERROR_DRIVER_NOT_LOADED: (
        "the NVIDIA kernel module is not loaded (try `modprobe nvidia`, check `dmesg`)"
    ),
    pynvml.NVML_ERROR_NO_PERMISSION: (
        "no permission to open /dev/nvidiactl or /dev/nvidia* (check the unit's DeviceAllow=)"
    ),
    pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH: (
        "the NVIDIA driver library and kernel module versions differ (reboot, or reload the module)"
    ),
}


def describe_nvml_error(err: pynvml.NVMLError) -> str:
    """NVML's own text plus the likely cause an operator can act on."""
    cause = _LIKELY_CAUSES.get(err.value)
    return f"{err}: {cause}" if cause else str(err)


@contextmanager
def nvml_session() -> Iterator[None]:
    """nvmlInit/nvmlShutdown around a block; init failures become NvmlUnavailableError."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        raise NvmlUnavailableError(
            f"cannot initialise NVML: {describe_nvml_error(err)}"
        ) from err
    try:
        yield
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError as err:  # nothing to do about it but say so
            log.warning("nvmlShutdown failed: %s", err)


def discover(*, sysfs_root: Path = SYSFS_ROOT) -> NodeInventory:
    """Enumerate the node's GPUs in NVML index order."""
    with nvml_session():
        driver = text(pynvml.nvmlSystemGetDriverVersion())
        cuda = _cuda_version()
        gpus: list[Gpu] = []
        skipped: list[str] = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = text(pynvml.nvmlDeviceGetName(handle))
            if name in SKIPPED_NAMES:
                skipped.append(f"{index}:{name}")
                continue
            gpus.append(_read_gpu(index, handle, name, sysfs_root))
    return NodeInventory(
        driver_version=driver, cuda_driver_version=cuda, gpus=tuple(gpus), skipped=tuple(skipped)
    )


def _read_gpu(index: int, handle: object, name: str, sysfs_root: Path) -> Gpu:
    pci = pynvml.nvmlDeviceGetPciInfo(handle)
    bus_id = text(pci.busId)
    return Gpu(
        index=index,
        uuid=text(pynvml.nvmlDeviceGetUUID(handle)),
        name=name,
        minor=pynvml.nvmlDeviceGetMinorNumber(handle),
        pci_bus_id=bus_id,
        memory_total=_optional(lambda: int(pynvml.nvmlDeviceGetMemoryInfo(handle).total), 0),
        numa_node=read_numa_node(sysfs_root, bus_id),
        compute_capability=_optional(
            lambda: "{}.{}".format(*pynvml.nvmlDeviceGetCudaComputeCapability(handle)), None
        ),
        mig_enabled=_optional(lambda: pynvml.nvmlDeviceGetMigMode(handle)[0] == 1, False),
    )


def sysfs_bus_id(nvml_bus_id: str) -> str:
    """NVML's ``00000000:18:00.0`` is sysfs's ``0000:18:00.0``, lower-cased."""
    bus_id = nvml_bus_id.lower()
    domain, _, rest = bus_id.partition(":")
    if len(domain) == 8 and domain.startswith("0000"):
        bus_id = f"{domain[4:]}:{rest}"
    return bus_id


def read_numa_node(sysfs_root: Path, nvml_bus_id: str) -> int | None:
    """The GPU's NUMA node, or None when sysfs has none (missing file or a negative value)."""
    path = sysfs_root / "bus" / "pci" / "devices" / sysfs_bus_id(nvml_bus_id) / "numa_node"
    try:
        node = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return node if node >= 0 else None


def _cuda_version() -> str | None:
    try:
        v = int(pynvml.nvmlSystemGetCudaDriverVersion())
    except pynvml.NVMLError:
        return None
    return f"{v // 1000}.{v % 1000 // 10}"


def _optional(read, default):  # type: ignore[no-untyped-def]
    """Secondary attributes must not fail discovery (upstream ignores their errors too)."""
    try:
        return read()
    except pynvml.NVMLError as err:
        log.debug("optional NVML query failed: %s", err)
        return default


def text(value: str | bytes) -> str:
    """pynvml returns str in recent versions and bytes in older ones."""
    return value.decode() if isinstance(value, bytes) else value
