"""The NVIDIA driver as NVML, /proc/driver/nvidia and /dev show it.

Called by ``nvdp_node.app.host_checks``. NVML goes through the existing NVML
adapter (``nvdp_node.adapters.nvml.discover``), the same call ``nvdp serve``
makes, so the check fails exactly when serving would. The kernel module's
own version file tells "library missing" apart from "module not loaded".
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pynvml

from nvdp_node.adapters import nvml
from nvdp_node.adapters.host.paths import HostRoot, read_text
from nvdp_node.domain.checks import DriverFacts, FileProblem, NvmlFailure
from nvdp_node.domain.devices import NodeInventory
from nvdp_node.domain.errors import NvmlUnavailableError

Discover = Callable[[], NodeInventory]

_FAILURES = {
    pynvml.NVML_ERROR_LIBRARY_NOT_FOUND: NvmlFailure.LIBRARY_NOT_FOUND,
    pynvml.NVML_ERROR_DRIVER_NOT_LOADED: NvmlFailure.DRIVER_NOT_LOADED,
    pynvml.NVML_ERROR_NO_PERMISSION: NvmlFailure.NO_PERMISSION,
    pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH: NvmlFailure.VERSION_MISMATCH,
}
# "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.90.07  ..." (also "Open Kernel Module for x86_64").
_MODULE_VERSION = re.compile(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)")


def read_driver(paths: HostRoot, *, discover: Discover | None = None) -> DriverFacts:
    """Initialise NVML once and collect the driver facts; never raises for a missing driver.

    ``discover`` defaults to the real NVML discovery with sysfs under the root;
    tests pass a hand-written stand-in or use the mock libnvidia-ml.
    """
    if discover is None:
        def discover() -> NodeInventory:
            return nvml.discover(sysfs_root=paths.at(paths.sysfs_dir))
    failure, message, version, minors = None, "", None, ()
    try:
        inventory = discover()
    except NvmlUnavailableError as err:
        cause = err.__cause__
        code = cause.value if isinstance(cause, pynvml.NVMLError) else None
        failure, message = _FAILURES.get(code, NvmlFailure.OTHER), str(err)
    except pynvml.NVMLError as err:  # init worked but enumeration failed, e.g. a GPU fell off the bus
        failure, message = _FAILURES.get(err.value, NvmlFailure.OTHER), nvml.describe_nvml_error(err)
    else:
        version = inventory.driver_version
        minors = tuple(g.minor for g in inventory.gpus if g.minor is not None)
    return DriverFacts(
        nvml_failure=failure, nvml_message=message, driver_version=version, gpu_minors=minors,
        kernel_module_version=_module_version(paths), dev_dir=paths.dev_dir, dev_nodes=_dev_nodes(paths),
    )


def _module_version(paths: HostRoot) -> str | None:
    text = read_text(paths, f"{paths.proc_dir.rstrip('/')}/driver/nvidia/version")
    if isinstance(text, FileProblem):
        return None
    m = _MODULE_VERSION.search(text)
    return m.group(1) if m else None


def _dev_nodes(paths: HostRoot) -> frozenset[str]:
    try:
        return frozenset(p.name for p in paths.at(paths.dev_dir).iterdir() if p.name.startswith("nvidia"))
    except OSError:
        return frozenset()
