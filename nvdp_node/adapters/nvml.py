"""GPU discovery through NVML (the real ``pynvml`` bindings).

Called by the supervisor at start and on every re-enumeration, by
``nvdp devices`` and by the driver host check. Everything NVML reports is
turned into the plain :class:`~nvdp_node.domain.devices.NodeInventory`, with
the GPUs' link table (``nvdp_node.adapters.nvml_topology``); NUMA
affinity comes from sysfs (as upstream does), and MIG capability minors from
/proc (``nvdp_node.adapters.host.mig_caps``), both under injectable roots so
tests use fixture trees. MIG devices are read by ``nvdp_node.adapters.nvml_mig``.

Errors are handled per GPU: only a node-wide failure (init, driver version,
GPU count) raises. A GPU NVML cannot identify is left out and named in
``NodeInventory.unidentified``; one it identifies but cannot fully query
(its MIG devices included) is listed with ``Gpu.error`` set, so one lost GPU
never takes the others away.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pynvml

from nvdp_node.adapters.host.paths import HostRoot
from nvdp_node.adapters.nvml_mig import read_mig_devices
from nvdp_node.adapters.nvml_queries import GpuQueries
from nvdp_node.adapters.nvml_queries import text as text  # re-exported: nvml_health decodes with it
from nvdp_node.adapters.nvml_topology import LinkedGpu, read_link_table
from nvdp_node.domain.devices import Gpu, NodeInventory
from nvdp_node.domain.errors import NvmlUnavailableError
from nvdp_node.domain.topology import LinkTable

log = logging.getLogger(__name__)
T = TypeVar("T")

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


def discover(*, sysfs_root: Path | None = None, host: HostRoot | None = None, links: bool = False) -> NodeInventory:
    """Enumerate the node's GPUs in NVML index order; raises only for node-wide NVML failures.

    ``host`` says where /proc (MIG capabilities) and, unless ``sysfs_root``
    is given, /sys are; the default is the real host. ``links=True`` also
    reads the link table, an NVLink scan that takes seconds on some nodes
    (``nvdp serve`` reads it on a thread once serving, app/link_reader.py).
    """
    host = HostRoot() if host is None else host
    sysfs_root = host.at(host.sysfs_dir) if sysfs_root is None else sysfs_root
    with nvml_session():
        driver = text(_node_query("read the driver version", pynvml.nvmlSystemGetDriverVersion))
        cuda = _cuda_version()
        nvml_version = _nvml_version()
        count = int(_node_query("count the GPUs", pynvml.nvmlDeviceGetCount))
        gpus: list[Gpu] = []
        skipped: list[str] = []
        unidentified: list[str] = []
        linked: list[LinkedGpu] = []
        for index in range(count):
            identity = _identify(index)
            if isinstance(identity, str):
                log.warning("GPU at NVML index %d left out, NVML cannot identify it: %s", index, identity)
                unidentified.append(f"index {index}: {identity}")
                continue
            gpu = _read_gpu(index, *identity, sysfs_root, host)
            if gpu.name in SKIPPED_NAMES:
                skipped.append(f"{index}:{gpu.name}")
            else:
                gpus.append(gpu)
                linked.append(LinkedGpu(gpu.uuid, identity[0], gpu.pci_bus_id))
        table = read_link_table(linked) if links else LinkTable()
    return NodeInventory(
        driver_version=driver, cuda_driver_version=cuda, gpus=tuple(gpus), skipped=tuple(skipped),
        unidentified=tuple(unidentified), expected=count - len(skipped), links=table,
        nvml_version=nvml_version,
    )


def read_links() -> LinkTable:
    """The link table of the node's GPUs, in an NVML session of its own.

    ``nvdp serve`` reads it on a thread after it started serving, since the
    NVLink scan can take a while (upstream saw ~0.6 s per GPU, #774); GPUs
    NVML cannot identify are left out, and any other failure only makes
    links unknown.
    """
    with nvml_session():
        linked: list[LinkedGpu] = []
        for index in range(int(_node_query("count the GPUs", pynvml.nvmlDeviceGetCount))):
            identity = _identify(index)
            if isinstance(identity, str):
                continue
            handle, uuid = identity
            try:
                bus_id = text(pynvml.nvmlDeviceGetPciInfo(handle).busId)
            except pynvml.NVMLError:
                bus_id = ""  # its level queries may still answer; no NVLink can be found to end at it
            linked.append(LinkedGpu(uuid, handle, bus_id))
        return read_link_table(linked)


def _node_query(what: str, query: Callable[[], T]) -> T:
    try:
        return query()
    except pynvml.NVMLError as err:
        raise NvmlUnavailableError(f"cannot {what} through NVML: {describe_nvml_error(err)}") from err


def _identify(index: int) -> tuple[object, str] | str:
    """The GPU's handle and UUID, or why NVML cannot say which GPU this is."""
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    except pynvml.NVMLError as err:
        return str(err)
    try:
        return handle, text(pynvml.nvmlDeviceGetUUID(handle))
    except pynvml.NVMLError as err:
        return f"UUID: {err}"


def _read_gpu(index: int, handle: object, uuid: str, sysfs_root: Path, host: HostRoot) -> Gpu:
    q = GpuQueries(handle)
    name = q.required("name", lambda h: text(pynvml.nvmlDeviceGetName(h)), "unknown")
    bus_id = q.required("PCI info", lambda h: text(pynvml.nvmlDeviceGetPciInfo(h).busId), "")
    minor: int | None = q.required("minor number", pynvml.nvmlDeviceGetMinorNumber, None)
    memory_total = q.optional("memory info", lambda h: int(pynvml.nvmlDeviceGetMemoryInfo(h).total), 0)
    compute_capability = q.optional(
        "compute capability", lambda h: "{}.{}".format(*pynvml.nvmlDeviceGetCudaComputeCapability(h)), None
    )
    mig_enabled = q.optional("MIG mode", lambda h: pynvml.nvmlDeviceGetMigMode(h)[0] == 1, False)
    mig_devices = read_mig_devices(q, minor=minor, memory_total=memory_total, host=host) if mig_enabled else ()
    return Gpu(
        index=index,
        uuid=uuid,
        name=name,
        minor=minor,
        pci_bus_id=bus_id,
        memory_total=memory_total,
        numa_node=read_numa_node(sysfs_root, bus_id) if bus_id else None,
        compute_capability=compute_capability,
        mig_enabled=mig_enabled,
        error=q.error,
        mig_devices=mig_devices,
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


def _nvml_version() -> str:
    try:
        return text(pynvml.nvmlSystemGetNVMLVersion())
    except pynvml.NVMLError:
        return ""


def _cuda_version() -> str | None:
    try:
        v = int(pynvml.nvmlSystemGetCudaDriverVersion())
    except pynvml.NVMLError:
        return None
    return f"{v // 1000}.{v % 1000 // 10}"
