"""Which devices to prefer: the answer to GetPreferredAllocation.

Pure functions over :class:`~nvdp_node.domain.devices.Device` maps, called by
the gRPC servicer (through ``nvdp_node.domain.allocation``, which re-exports
:func:`preferred_allocation`). Whole GPUs whose links the node's
:class:`~nvdp_node.domain.topology.LinkTable` knows get the best-linked set
(``nvdp_node.domain.topology_choice``); other whole GPUs and MIG devices
(which cannot use NVLink peer to peer) are packed onto as few NUMA nodes as
possible; replicas of shared devices follow upstream's
greedy policy (``internal/rm/allocate.go``, v0.20): ``distributed`` takes the
GPU with the fewest replicas in use first, ``packed`` the one with the most,
and a tie goes to the GPU picked fewer times in this answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, get_args

from nvdp_node.domain.devices import Device
from nvdp_node.domain.topology import LinkTable
from nvdp_node.domain.topology_choice import Gpus, best_set

SharedAllocationPolicy = Literal["distributed", "packed"]
SHARED_ALLOCATION_POLICIES: tuple[str, ...] = get_args(SharedAllocationPolicy)


def preferred_allocation(
    devices: Mapping[str, Device],
    available: Sequence[str],
    must_include: Sequence[str],
    size: int,
    *,
    shared_policy: SharedAllocationPolicy = "distributed",
    links: LinkTable | None = None,
) -> list[str]:
    """Pick ``size`` devices from ``available``, keeping ``must_include``.

    ``devices`` is the resource's whole table, so that replicas kubelet did
    not offer count as in use. Never raises: kubelet fails the pod on any
    GetPreferredAllocation error and fills a short answer itself, so unknown
    ids are skipped and a best effort is always returned.
    """
    if size <= 0:
        return []
    required = _known_unique(devices, must_include)
    if len(required) >= size:
        return required[:size]
    candidates = [i for i in _known_unique(devices, available) if i not in required]
    need = size - len(required)
    if any(devices[i].replica_of is not None for i in candidates):
        return required + _replicas(devices, candidates, need, shared_policy)
    if links and _linked(devices, links, required + candidates):
        return required + _best_linked(devices, links, required, candidates, need)
    return required + _numa(devices, required, candidates, need)


def _linked(devices: Mapping[str, Device], links: LinkTable, ids: list[str]) -> bool:
    """Whole GPUs only, and the table knows at least one of their pairs."""
    if any(devices[i].gpu_instance is not None for i in ids):
        return False
    gpus = [devices[i].gpu_uuid for i in ids]
    return any(links.link(a, b) is not None for n, a in enumerate(gpus) for b in gpus[n + 1:])


def _best_linked(
    devices: Mapping[str, Device], links: LinkTable, required: list[str], candidates: list[str], need: int
) -> list[str]:
    ordered = sorted(candidates, key=lambda i: (_index_key(devices[i]), i))
    members = required + ordered
    gpus = Gpus(scores=links.matrix([devices[i].gpu_uuid for i in members]),
                numa=[_numa_key(devices[i]) for i in members])
    first = len(required)
    picked = best_set(gpus, range(first), range(first, len(members)), need)
    return [members[p] for p in picked]


def _numa(devices: Mapping[str, Device], required: list[str], candidates: list[str], need: int) -> list[str]:
    """On as few NUMA nodes as possible: the required devices' node, else the smallest that fits."""
    groups: dict[int, list[str]] = {}
    for device_id in candidates:
        groups.setdefault(_numa_key(devices[device_id]), []).append(device_id)
    for members in groups.values():
        members.sort(key=lambda i: (_index_key(devices[i]), i))

    required_nodes = {_numa_key(devices[i]) for i in required}
    fitting = [n for n, members in groups.items() if len(members) >= need]
    if fitting:
        # Best fit leaves larger nodes whole for larger pods.
        node = min(fitting, key=lambda n: (n not in required_nodes, len(groups[n]), n))
        return groups[node][:need]

    picked: list[str] = []
    for node in sorted(groups, key=lambda n: (n not in required_nodes, -len(groups[n]), n)):
        picked.extend(groups[node][: need - len(picked)])
        if len(picked) == need:
            break
    return picked


def _replicas(
    devices: Mapping[str, Device], candidates: list[str], need: int, policy: SharedAllocationPolicy
) -> list[str]:
    """Upstream's greedy loop over parents; its remaining ties are map order, here NVML index then replica.

    A parent's replicas in use are those of the whole table not offered as
    candidates, so ``must_include`` ones count as in use, as upstream counts
    them. Fewer candidates than ``need`` give all of them (upstream errors).
    """
    total: dict[str, int] = {}
    for device in devices.values():
        parent = _parent(device)
        total[parent] = total.get(parent, 0) + 1
    free: dict[str, list[str]] = {}
    for device_id in sorted(candidates, key=lambda i: _replica_number(devices[i])):
        free.setdefault(_parent(devices[device_id]), []).append(device_id)
    index = {parent: _index_key(devices[ids[0]]) for parent, ids in free.items()}
    picked_from = dict.fromkeys(free, 0)
    sign = -1 if policy == "packed" else 1  # anything else is upstream's default, distributed

    picked: list[str] = []
    while len(picked) < need and free:
        parent = min(
            free,
            key=lambda p: (sign * (total[p] - len(free[p])), picked_from[p], index[p], p),
        )
        picked.append(free[parent].pop(0))
        picked_from[parent] += 1
        if not free[parent]:
            del free[parent]
    return picked


def _parent(device: Device) -> str:
    return device.replica_of if device.replica_of is not None else device.id


def _replica_number(device: Device) -> int:
    tail = device.id.rpartition("::")[2]
    return int(tail) if device.replica_of is not None and tail.isdigit() else 0


def _known_unique(devices: Mapping[str, Device], ids: Sequence[str]) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for device_id in ids:
        if device_id in devices and device_id not in seen:
            seen.add(device_id)
            out.append(device_id)
    return out


def _numa_key(device: Device) -> int:
    return device.numa_node if device.numa_node is not None else -1


def _index_key(device: Device) -> tuple[int, str]:
    head = device.index.split(":", 1)[0]
    return (int(head), device.index) if head.isdigit() else (1 << 30, device.index)
