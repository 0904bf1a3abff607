"""driver.*: is the NVIDIA driver usable by NVML, new enough, with its device nodes?

``nvdp_node.adapters.host.driver`` gathers :class:`DriverFacts` (through the
NVML adapter, /proc/driver/nvidia/version and /dev); ``evaluate_driver`` turns
them into four verdicts. The kernel module's version is kept apart from NVML's
so a missing user-space library is told from a missing kernel module.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from nvdp_node.domain.checks.report import CheckResult, Status, version_at_least


class NvmlFailure(enum.Enum):
    LIBRARY_NOT_FOUND = "library-not-found"
    DRIVER_NOT_LOADED = "driver-not-loaded"
    NO_PERMISSION = "no-permission"
    VERSION_MISMATCH = "version-mismatch"
    OTHER = "other"


@dataclass(frozen=True)
class DriverFacts:
    """What NVML, /proc/driver/nvidia and /dev say about the driver."""

    nvml_failure: NvmlFailure | None = None
    nvml_message: str = ""
    driver_version: str | None = None
    gpu_minors: tuple[int, ...] = ()
    kernel_module_version: str | None = None
    dev_dir: str = "/dev"
    dev_nodes: frozenset[str] = frozenset()


_INSTALL_DRIVER = (
    "install the NVIDIA driver (Debian: `apt install nvidia-driver`, or the .run installer) "
    "and make sure libnvidia-ml.so.1 is on the loader path (`ldconfig -p | grep libnvidia-ml`)"
)
_NVML_FIXES = {
    NvmlFailure.DRIVER_NOT_LOADED: "load the kernel module (`modprobe nvidia`; see `dmesg` for why it failed)",
    NvmlFailure.NO_PERMISSION: "run nvdp as root with access to /dev/nvidiactl and /dev/nvidia* (the unit's DeviceAllow=)",
    NvmlFailure.VERSION_MISMATCH: "the driver libraries and the loaded module differ: reboot, or reload the nvidia module",
}


def evaluate_driver(facts: DriverFacts, *, min_version: str) -> tuple[CheckResult, ...]:
    """driver.library, driver.nvml, driver.version and driver.device-nodes."""
    module = (f"kernel module {facts.kernel_module_version} is loaded" if facts.kernel_module_version
              else "no NVIDIA kernel module is loaded (/proc/driver/nvidia/version absent)")
    if facts.nvml_failure is NvmlFailure.LIBRARY_NOT_FOUND:
        library = CheckResult("driver.library", "NVML library", Status.ERROR,
                              ("libnvidia-ml.so.1 cannot be loaded", module), _INSTALL_DRIVER)
        nvml = CheckResult("driver.nvml", "NVML initialisation", Status.SKIPPED, ("needs libnvidia-ml.so.1",))
    else:
        library = CheckResult("driver.library", "NVML library", Status.OK, ("libnvidia-ml.so.1 loaded",))
        if facts.nvml_failure is not None:
            nvml = CheckResult("driver.nvml", "NVML initialisation", Status.ERROR,
                               (facts.nvml_message or facts.nvml_failure.value, module),
                               _NVML_FIXES.get(facts.nvml_failure, "see the NVML error; `nvidia-smi` shows the same"))
        elif not facts.gpu_minors:
            nvml = CheckResult("driver.nvml", "NVML initialisation", Status.ERROR,
                               ("NVML initialised but reports no GPUs",),
                               "check `nvidia-smi` and `lspci | grep -i nvidia`; nvdp has nothing to advertise")
        else:
            nvml = CheckResult("driver.nvml", "NVML initialisation", Status.OK,
                               (f"NVML initialised, {len(facts.gpu_minors)} GPU(s)",))
    return library, nvml, _driver_version(facts, min_version), _device_nodes(facts)


def _driver_version(facts: DriverFacts, min_version: str) -> CheckResult:
    title = "driver version"
    version, source = facts.driver_version, "NVML"
    if version is None and facts.kernel_module_version:
        version, source = facts.kernel_module_version, "/proc/driver/nvidia/version"
    if version is None:
        return CheckResult("driver.version", title, Status.SKIPPED, ("no driver version known",))
    ok = version_at_least(version, min_version)
    evidence = (f"driver {version} (from {source}), minimum {min_version}",)
    if ok is None:
        return CheckResult("driver.version", title, Status.WARNING, (*evidence, "cannot compare these versions"),
                           "check the version by hand (`nvidia-smi`)")
    if not ok:
        return CheckResult("driver.version", title, Status.ERROR, evidence,
                           f"upgrade the NVIDIA driver to {min_version} or newer "
                           "(or lower runtime_check.min_driver_version if you know better)")
    return CheckResult("driver.version", title, Status.OK, evidence)


def _device_nodes(facts: DriverFacts) -> CheckResult:
    title = "GPU device nodes"
    dev = facts.dev_dir.rstrip("/")
    wanted = ["nvidiactl", *(f"nvidia{m}" for m in facts.gpu_minors)]
    if not facts.gpu_minors:  # NVML could not say which GPUs exist: any numbered node will do
        numbered = sorted(n for n in facts.dev_nodes if re.fullmatch(r"nvidia\d+", n))
        wanted += numbered or ["nvidia0"]
    missing = [f"{dev}/{n}" for n in wanted if n not in facts.dev_nodes]
    if missing:
        return CheckResult("driver.device-nodes", title, Status.ERROR, (f"missing: {', '.join(missing)}",),
                           "load the driver and create the nodes (`nvidia-modprobe`, or `nvidia-smi` once as root); "
                           "nvidia-persistenced keeps them")
    evidence = (f"present: {', '.join(f'{dev}/{n}' for n in wanted)}",)
    if "nvidia-uvm" not in facts.dev_nodes:
        return CheckResult("driver.device-nodes", title, Status.WARNING, (*evidence, f"{dev}/nvidia-uvm is missing"),
                           "CUDA needs nvidia-uvm: `modprobe nvidia-uvm && nvidia-modprobe -u -c=0`")
    return CheckResult("driver.device-nodes", title, Status.OK, evidence)
