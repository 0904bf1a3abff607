"""How well each pair of GPUs is linked: the link table and its scores.

Built once per enumeration by ``nvdp_node.adapters.nvml_topology`` (start,
reload, MIG re-layout) and carried in
:class:`~nvdp_node.domain.devices.NodeInventory`; read by the preferred
allocation (``nvdp_node.domain.topology_choice``) on every
GetPreferredAllocation, which therefore never talks to NVML.

Scores are upstream's (go-gpuallocator v0.6.0, best-effort policy): a pair
scores its PCIe common ancestor (10 for SYSTEM up to 60 for INTERNAL) plus
100 per NVLink that joins the two GPUs directly; a set scores the sum of its
pairs. NVLinks that end at an NVSwitch reach no GPU and add nothing, as
upstream counts them (on such nodes every pair is linked alike anyway).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType


class PcieLevel(enum.StrEnum):
    """``nvmlGpuTopologyLevel_t`` by name, nearest first; ``nvidia-smi topo -m`` prints PIX/PXB/PHB/NODE/SYS."""

    INTERNAL = "INTERNAL"
    SINGLE = "SINGLE"
    MULTIPLE = "MULTIPLE"
    HOSTBRIDGE = "HOSTBRIDGE"
    NODE = "NODE"
    SYSTEM = "SYSTEM"


LEVEL_SCORES: Mapping[PcieLevel, int] = MappingProxyType({
    PcieLevel.INTERNAL: 60, PcieLevel.SINGLE: 50, PcieLevel.MULTIPLE: 40,
    PcieLevel.HOSTBRIDGE: 30, PcieLevel.NODE: 20, PcieLevel.SYSTEM: 10,
})
NVLINK_SCORE = 100


@dataclass(frozen=True)
class PairLink:
    """What joins two GPUs: their PCIe common ancestor (None: NVML could not say) and direct NVLinks."""

    level: PcieLevel | None
    nvlinks: int = 0

    @property
    def score(self) -> int:
        return (LEVEL_SCORES[self.level] if self.level is not None else 0) + NVLINK_SCORE * self.nvlinks


@dataclass(frozen=True)
class LinkTable:
    """The links between every pair of a node's GPUs, by GPU UUID; immutable.

    ``pairs`` holds each unordered pair once, as ``(uuid_a, uuid_b, link)``
    with ``uuid_a < uuid_b``. A pair missing from the table (a GPU lost at
    discovery, a query NVML refused) scores 0: unknown, never an error.
    """

    pairs: tuple[tuple[str, str, PairLink], ...] = ()
    _by_pair: Mapping[tuple[str, str], PairLink] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        by_pair = {(a, b) if a < b else (b, a): link for a, b, link in self.pairs}
        object.__setattr__(self, "_by_pair", MappingProxyType(by_pair))  # frozen: derived once, here

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def link(self, a: str, b: str) -> PairLink | None:
        return self._by_pair.get((a, b) if a < b else (b, a))

    def score(self, a: str, b: str) -> int:
        link = self.link(a, b)
        return 0 if link is None or a == b else link.score

    def set_score(self, uuids: Sequence[str]) -> int:
        """Upstream's set score: the sum over its pairs."""
        return sum(self.score(a, b) for i, a in enumerate(uuids) for b in uuids[i + 1:])

    def matrix(self, uuids: Sequence[str]) -> list[list[int]]:
        """Pair scores of ``uuids`` as a square matrix in their order (0 on the diagonal)."""
        return [[0 if i == j else self.score(a, b) for j, b in enumerate(uuids)] for i, a in enumerate(uuids)]


def link_table(
    levels: Mapping[tuple[str, str], PcieLevel | None], nvlinks: Mapping[tuple[str, str], int]
) -> LinkTable:
    """The table from what each GPU said about each other one (ordered pairs, as NVML is asked).

    The two directions of a pair are merged: the first known level, and the
    larger NVLink count, so one direction's failed link query is not a
    missing link.
    """
    merged: dict[tuple[str, str], tuple[PcieLevel | None, int]] = {}
    for a, b in set(levels) | set(nvlinks):
        if a == b:
            continue
        key = (a, b) if a < b else (b, a)
        level, count = merged.get(key, (None, 0))
        here = levels.get((a, b))
        merged[key] = (level if level is not None else here, max(count, nvlinks.get((a, b), 0)))
    return LinkTable(tuple((a, b, PairLink(level, count)) for (a, b), (level, count) in sorted(merged.items())))


def describe(table: LinkTable, uuids: Iterable[str]) -> list[list[str]]:
    """``nvidia-smi topo -m``-like cells (``NV2``, ``PIX``, ``SYS``; ``INT`` same board, ``X`` the diagonal, ``?`` unknown)."""
    short = {PcieLevel.INTERNAL: "INT", PcieLevel.SINGLE: "PIX", PcieLevel.MULTIPLE: "PXB",
             PcieLevel.HOSTBRIDGE: "PHB", PcieLevel.NODE: "NODE", PcieLevel.SYSTEM: "SYS"}
    ids = list(uuids)
    rows = []
    for a in ids:
        row = []
        for b in ids:
            link = None if a == b else table.link(a, b)
            if a == b:
                row.append("X")
            elif link is None:
                row.append("?")
            elif link.nvlinks:
                row.append(f"NV{link.nvlinks}")
            else:
                row.append(short[link.level] if link.level is not None else "?")
        rows.append(row)
    return rows
