"""Link tables and whole-GPU devices straight from the mock NVML profiles' JSON, without NVML.

Shared by the unit tests (which need a profile's table without a library)
and the adapter test (which checks that NVML, read through pynvml, gives
the same table), so the two derivations check each other. Also home of the
test's brute-force optimum and of upstream's best-effort choice, written
from its description (``reference/nvidia-plugin.md`` §2.7).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from typing import Any

from nvdp_node.domain.devices import Device
from nvdp_node.domain.topology import LinkTable, PcieLevel, link_table
from tests.mock_nvml.environment import load_profile

TOPOLOGY_PROFILES = ["dgx1-v100-8", "a100-pcie-8", "l40s-4", "h100-sxm-8", "l4-16"]


def profile_table(name: str) -> tuple[LinkTable, dict[str, Device]]:
    """The profile's link table (as the README's schema says NVML answers) and its whole-GPU devices."""
    profile: dict[str, Any] = load_profile(name)
    gpus = profile["gpus"]
    n = len(gpus)
    level: dict[tuple[int, int], str] = {}
    topology = profile.get("topology")
    for i, j in itertools.permutations(range(n), 2):
        same = gpus[i]["numa_node"] is not None and gpus[i]["numa_node"] == gpus[j]["numa_node"]
        level[(i, j)] = (topology or {}).get("default", "NVML_TOPOLOGY_NODE" if same else "NVML_TOPOLOGY_SYSTEM")
    for section in ("groups", "pairs"):
        for entry in (topology or {}).get(section, []):
            for i, j in itertools.permutations(entry["gpus"], 2):
                level[(i, j)] = entry["level"]
    uuid = [g["uuid"] for g in gpus]
    by_bus = {g["pci"]["bus_id"].lower(): g["uuid"] for g in gpus}
    levels = {(uuid[i], uuid[j]): PcieLevel(v.removeprefix("NVML_TOPOLOGY_")) for (i, j), v in level.items()}
    nvlinks: dict[tuple[str, str], int] = {}
    for g in gpus:
        ends = Counter(by_bus.get(x["remote_bus_id"].lower()) for x in g.get("nvlinks", []) if x.get("active", True))
        nvlinks.update({(g["uuid"], other): count for other, count in ends.items() if other is not None})
    devices = {
        g["uuid"]: Device(id=g["uuid"], index=str(g["index"]), gpu_uuid=g["uuid"], numa_node=g["numa_node"])
        for g in gpus
    }
    return link_table(levels, nvlinks), devices


def in_index_order(devices: dict[str, Device]) -> list[str]:
    return sorted(devices, key=lambda i: int(devices[i].index))


def brute_force(table: LinkTable, devices: dict[str, Device], available: Sequence[str],
                required: Sequence[str], size: int) -> list[str]:
    """Every set of ``size`` holding ``required``, best by (score, −NUMA nodes, −cut), then lowest indices."""
    rest = [i for i in sorted(available, key=lambda i: int(devices[i].index)) if i not in required]
    best: tuple[tuple[int, int, int], list[str]] | None = None
    for combo in itertools.combinations(rest, size - len(required)):
        chosen = list(required) + list(combo)
        left = [i for i in available if i not in chosen]
        key = (table.set_score(chosen), -len({devices[i].numa_node for i in chosen}),
               -sum(table.score(a, b) for a in chosen for b in left))
        if best is None or key > best[0]:  # combinations come in index order: the first best wins ties
            best = (key, chosen)
    assert best is not None
    return best[1]


def upstream_best_effort(table: LinkTable, available: Sequence[str], required: Sequence[str],
                         size: int) -> list[str]:
    """go-gpuallocator's best-effort answer: the best partition into sets of ``size``, then its best set.

    ``None`` pads the list to a multiple of ``size``; only partitions with a
    padding-free set holding ``required`` count; the first best one wins.
    """
    padded: list[str | None] = list(available) + [None] * (-len(available) % size)

    def score(part: Sequence[str | None]) -> int:
        return table.set_score([x for x in part if x is not None])

    def partitions(items: list[str | None]) -> Any:
        if not items:
            yield []
            return
        head, tail = items[0], items[1:]
        for others in itertools.combinations(tail, size - 1):
            part = (head, *others)
            if 0 < part.count(None) < padded.count(None):
                continue  # padding goes all in one set
            remaining = [x for x in tail if x not in others or x is None]
            for k in (x for x in others if x is None):
                remaining.remove(k)
            for rest in partitions(remaining):
                yield [part, *rest]

    best: tuple[int, list[tuple[str | None, ...]]] | None = None
    for partition in partitions(padded):
        if not any(set(required) <= set(p) and None not in p for p in partition):
            continue
        total = sum(score(p) for p in partition)
        if best is None or total > best[0]:
            best = (total, partition)
    assert best is not None
    holding = [p for p in best[1] if set(required) <= set(p) and None not in p]
    return [x for x in max(holding, key=score) if x is not None]
