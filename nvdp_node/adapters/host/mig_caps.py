"""The capability minors a container needs to use one MIG device, read from the driver's /proc files.

Called by NVML discovery (``nvdp_node.adapters.nvml``) for every MIG device
it finds; the minors become ``/dev/nvidia-caps/nvidia-cap<minor>`` device
nodes of the device (``nvdp_node.domain.devices.mig_device``).

The driver describes each MIG capability in
``/proc/driver/nvidia/capabilities/gpu<minor>/mig/gi<G>/access`` (the GPU
instance) and ``…/gi<G>/ci<C>/access`` (the compute instance), with lines
``DeviceFileMinor: <n>`` and ``DeviceFileMode: <mode>``; ``<minor>`` is the
parent GPU's ``/dev/nvidia<minor>``. The same minors are listed in
``/proc/driver/nvidia-caps/mig-minors`` (``gpu0/gi1/access 12``), the file
NVIDIA's plugin and container toolkit read; nvdp reads it when an access file
is missing. Every path is under a :class:`~nvdp_node.adapters.host.paths.HostRoot`.
"""

from __future__ import annotations

import logging
import re

from nvdp_node.adapters.host.paths import HostRoot, read_text
from nvdp_node.domain.checks import FileProblem

log = logging.getLogger(__name__)

CAPABILITIES_DIR = "driver/nvidia/capabilities"
MIG_MINORS_FILE = "driver/nvidia-caps/mig-minors"
_DEVICE_FILE_MINOR = re.compile(r"^DeviceFileMinor:\s*(\d+)\s*$", re.MULTILINE)
_MIG_MINORS_LINE = re.compile(r"^(\S+) (\d+)$")


def gi_capability(gpu_minor: int, gi: int) -> str:
    """The capability's name as ``mig-minors`` spells it; its access file is this with ``/mig`` inserted."""
    return f"gpu{gpu_minor}/gi{gi}/access"


def ci_capability(gpu_minor: int, gi: int, ci: int) -> str:
    return f"gpu{gpu_minor}/gi{gi}/ci{ci}/access"


def read_cap_minors(host: HostRoot, gpu_minor: int, gi: int, ci: int) -> tuple[int, ...]:
    """(GPU instance access minor, compute instance access minor), or () if either is unknown."""
    caps = (gi_capability(gpu_minor, gi), ci_capability(gpu_minor, gi, ci))
    minors = [_access_file_minor(host, cap) for cap in caps]
    if None in minors:
        listed = _mig_minors(host)
        minors = [m if m is not None else listed.get(cap) for m, cap in zip(minors, caps)]
    if None in minors:
        log.debug(
            "no capability minors for MIG device gpu%d/gi%d/ci%d (neither %s nor %s names them): "
            "it gets no /dev/nvidia-caps nodes", gpu_minor, gi, ci,
            _host_path(host, f"{CAPABILITIES_DIR}/gpu{gpu_minor}/mig/gi{gi}/…/access"),
            _host_path(host, MIG_MINORS_FILE),
        )
        return ()
    return tuple(m for m in minors if m is not None)


def _access_file_minor(host: HostRoot, capability: str) -> int | None:
    gpu, _, rest = capability.partition("/")
    path = _host_path(host, f"{CAPABILITIES_DIR}/{gpu}/mig/{rest}")
    text = read_text(host, path)
    if isinstance(text, FileProblem):
        return None
    match = _DEVICE_FILE_MINOR.search(text)
    if match is None:
        log.debug("%s has no DeviceFileMinor line", path)
        return None
    return int(match.group(1))


def _mig_minors(host: HostRoot) -> dict[str, int]:
    """``mig-minors`` as capability → minor; lines that do not parse are skipped (as upstream does)."""
    text = read_text(host, _host_path(host, MIG_MINORS_FILE))
    if isinstance(text, FileProblem):
        return {}
    listed = {}
    for line in text.splitlines():
        match = _MIG_MINORS_LINE.match(line.strip())
        if match:
            listed[match.group(1)] = int(match.group(2))
    return listed


def _host_path(host: HostRoot, below_proc: str) -> str:
    return f"{host.proc_dir.rstrip('/')}/{below_proc}"
