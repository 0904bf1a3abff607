"""How the node's GPUs are linked, read once per enumeration through NVML.

Called inside an NVML session by :func:`nvdp_node.adapters.nvml.read_links`
(``nvdp serve``, on a thread once serving, at start and on every reload) and
by :func:`nvdp_node.adapters.nvml.discover` (``nvdp devices``); the answer is the pure
:class:`~nvdp_node.domain.topology.LinkTable` the inventory carries, so
GetPreferredAllocation never queries NVML (upstream queries every pair on
every call, NVIDIA/k8s-device-plugin#774).

Per unordered pair: ``nvmlDeviceGetTopologyCommonAncestor`` once. Per GPU:
``nvmlDeviceGetNvLinkState`` for each link up to ``NVML_NVLINK_MAX_LINKS``
and ``nvmlDeviceGetNvLinkRemotePciInfo_v2`` for each active one; a link whose
far end is another GPU's bus id joins the two. Every failure only makes that
pair or link unknown (it scores 0): upstream fails every request when one GPU
is lost (#231, #2038), nvdp never does.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import pynvml

from nvdp_node.adapters.nvml_queries import text
from nvdp_node.domain.topology import LinkTable, PcieLevel, link_table

log = logging.getLogger(__name__)

_LEVELS = {
    pynvml.NVML_TOPOLOGY_INTERNAL: PcieLevel.INTERNAL,
    pynvml.NVML_TOPOLOGY_SINGLE: PcieLevel.SINGLE,
    pynvml.NVML_TOPOLOGY_MULTIPLE: PcieLevel.MULTIPLE,
    pynvml.NVML_TOPOLOGY_HOSTBRIDGE: PcieLevel.HOSTBRIDGE,
    pynvml.NVML_TOPOLOGY_NODE: PcieLevel.NODE,
    pynvml.NVML_TOPOLOGY_SYSTEM: PcieLevel.SYSTEM,
}
# What upstream skips: the link does not exist on this GPU, or NVLink is not supported at all.
_NO_LINK = (pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_INVALID_ARGUMENT)


@dataclass(frozen=True)
class LinkedGpu:
    """What the link scan needs of one enumerated GPU."""

    uuid: str
    handle: object
    pci_bus_id: str


def read_link_table(gpus: Sequence[LinkedGpu], *, max_links: int = pynvml.NVML_NVLINK_MAX_LINKS) -> LinkTable:
    """The link table of ``gpus``; never raises for an NVML error (the pair or link is then unknown)."""
    started = time.monotonic()
    by_bus = {bus_key(g.pci_bus_id): g.uuid for g in gpus if g.pci_bus_id}
    levels: dict[tuple[str, str], PcieLevel | None] = {}
    nvlinks: dict[tuple[str, str], int] = {}
    problems: list[str] = []
    for n, a in enumerate(gpus):
        for b in gpus[n + 1:]:
            levels[(a.uuid, b.uuid)] = _level(a, b, problems)
        for remote, count in _remote_ends(a, max_links, problems).items():
            other = by_bus.get(remote)
            if other is not None and other != a.uuid:
                nvlinks[(a.uuid, other)] = count
    if problems:
        log.warning("GPU links partly unknown (they score 0 in preferred allocations): %s", "; ".join(problems))
    log.info("read the links of %d GPU(s) in %.0f ms", len(gpus), (time.monotonic() - started) * 1000)
    return link_table(levels, nvlinks)


def bus_key(bus_id: str) -> str:
    """One spelling of a PCI bus id: lower case, the 4-digit domain (NVML gives 8 digits)."""
    domain, _, rest = bus_id.strip().lower().partition(":")
    return f"{domain[-4:]}:{rest}"


def _level(a: LinkedGpu, b: LinkedGpu, problems: list[str]) -> PcieLevel | None:
    try:
        value = pynvml.nvmlDeviceGetTopologyCommonAncestor(a.handle, b.handle)
    except pynvml.NVMLError as err:
        problems.append(f"{a.uuid} ↔ {b.uuid} common ancestor: {err}")
        return None
    level = _LEVELS.get(value)
    if level is None:
        problems.append(f"{a.uuid} ↔ {b.uuid} common ancestor: unknown level {value}")
    return level


def _remote_ends(gpu: LinkedGpu, max_links: int, problems: list[str]) -> Counter[str]:
    """Bus id → number of the GPU's active NVLinks that end there."""
    ends: Counter[str] = Counter()
    for link in range(max_links):
        try:
            if pynvml.nvmlDeviceGetNvLinkState(gpu.handle, link) != pynvml.NVML_FEATURE_ENABLED:
                continue
            ends[bus_key(text(pynvml.nvmlDeviceGetNvLinkRemotePciInfo(gpu.handle, link).busId))] += 1
        except pynvml.NVMLError as err:
            if err.value in _NO_LINK:
                continue
            problems.append(f"{gpu.uuid} NVLink {link}: {err}")
            if err.value == pynvml.NVML_ERROR_GPU_IS_LOST:
                break  # every further query says the same
    return ends
