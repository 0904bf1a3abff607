"""GetPreferredAllocation on linked GPUs: nvdp's answer is the brute-force optimum, and never below upstream's."""

from __future__ import annotations

import itertools

import pytest

from nvdp_node.domain.allocation import preferred_allocation
from nvdp_node.domain.devices import Device
from nvdp_node.domain.sharing import replicas_of
from nvdp_node.domain.topology import LinkTable, PairLink, PcieLevel
from tests.topology.tables import (
    TOPOLOGY_PROFILES,
    brute_force,
    in_index_order,
    profile_table,
    upstream_best_effort,
)

EIGHT_GPU_PROFILES = [p for p in TOPOLOGY_PROFILES if len(profile_table(p)[1]) <= 8]


def cases(ids: list[str]) -> list[tuple[int, tuple[str, ...]]]:
    """Every size with every must-include set smaller than it."""
    return [(size, required) for size in range(1, len(ids) + 1)
            for r in range(size) for required in itertools.combinations(ids, r)]


@pytest.mark.parametrize("profile", EIGHT_GPU_PROFILES)
def test_the_answer_is_the_brute_force_optimum_for_every_size_and_must_include_set(profile):
    table, devices = profile_table(profile)
    ids = in_index_order(devices)
    wrong = []
    for size, required in cases(ids):
        answer = preferred_allocation(devices, ids, list(required), size, links=table)
        best = brute_force(table, devices, ids, required, size)
        if answer != best:
            wrong.append(f"size {size} with {required}: {answer} (score {table.set_score(answer)}), "
                         f"best {best} (score {table.set_score(best)})")
    assert not wrong, "\n".join(wrong[:5])


@pytest.mark.parametrize("profile", EIGHT_GPU_PROFILES)
def test_the_answer_never_scores_below_upstreams_best_effort_choice(profile):
    table, devices = profile_table(profile)
    ids = in_index_order(devices)
    worse = []
    for size, required in cases(ids):
        ours = table.set_score(preferred_allocation(devices, ids, list(required), size, links=table))
        theirs = table.set_score(upstream_best_effort(table, ids, required, size))
        if ours < theirs:
            worse.append(f"size {size} with {required}: {ours} < upstream's {theirs}")
    assert not worse, "\n".join(worse[:5])


@pytest.mark.parametrize("required", [(), (5,), (0, 9)], ids=["none", "one", "two-across-sockets"])
def test_sixteen_gpus_get_the_brute_force_optimum_at_every_size(required):
    table, devices = profile_table("l4-16")
    ids = in_index_order(devices)
    must = [ids[i] for i in required]
    for size in range(len(must) + 1, 17):
        assert preferred_allocation(devices, ids, must, size, links=table) == brute_force(
            table, devices, ids, must, size), f"size {size}"


def test_dgx1_pairs_take_a_double_nvlink_over_a_single_one_and_over_a_shared_pcie_switch():
    table, devices = profile_table("dgx1-v100-8")
    ids = in_index_order(devices)
    # GPU 0: NV1 to 1 (same PCIe switch) and 2, NV2 to 3 and 4; 3 shares its socket, 4 does not.
    assert preferred_allocation(devices, ids, [ids[0]], 2, links=table) == [ids[0], ids[3]]


def test_a100_bridged_pairs_are_kept_together_even_against_a_shared_pcie_switch():
    table, devices = profile_table("a100-pcie-8")
    ids = in_index_order(devices)
    assert preferred_allocation(devices, ids[1:7], [], 2, links=table) == [ids[2], ids[3]]


def test_lost_and_unknown_gpus_are_skipped_and_the_rest_still_scored():
    table, devices = profile_table("dgx1-v100-8")
    ids = in_index_order(devices)
    available = [ids[0], "GPU-not-on-this-node", *ids[2:]]  # GPU 1 lost: kubelet no longer offers it
    answer = preferred_allocation(devices, available, [], 4, links=table)
    assert answer == brute_force(table, devices, [i for i in available if i in devices], (), 4)


def test_the_answer_does_not_depend_on_the_order_kubelet_offers_gpus_in():
    table, devices = profile_table("dgx1-v100-8")
    ids = in_index_order(devices)
    answers = {tuple(preferred_allocation(devices, order, [], 3, links=table))
               for order in (ids, ids[::-1], ids[4:] + ids[:4])}
    assert len(answers) == 1


def test_a_pair_nvml_could_not_read_scores_nothing():
    table = LinkTable((("GPU-a", "GPU-b", PairLink(None, 0)), ("GPU-a", "GPU-c", PairLink(PcieLevel.NODE, 2))))
    assert (table.score("GPU-a", "GPU-b"), table.score("GPU-a", "GPU-c"), table.score("GPU-b", "GPU-c")) == (0, 220, 0)


def test_equal_links_fall_back_to_numa_locality():
    table, devices = profile_table("h100-sxm-8")  # NVSwitch links reach no GPU: only PCIe levels differ
    ids = in_index_order(devices)
    assert preferred_allocation(devices, [ids[0], *ids[3:]], [], 4, links=table) == ids[4:]


def test_mig_devices_keep_numa_packing_whatever_the_links():
    table, gpus = profile_table("dgx1-v100-8")
    ids = in_index_order(gpus)
    migs = {f"MIG-{n}": Device(id=f"MIG-{n}", index=f"{n}:0", gpu_uuid=ids[n], numa_node=gpus[ids[n]].numa_node,
                               gpu_instance=1, compute_instance=0) for n in (0, 3, 4, 5)}
    assert preferred_allocation(migs, list(migs), ["MIG-0"], 2, links=table) == ["MIG-0", "MIG-3"]
    assert preferred_allocation(migs, list(migs), ["MIG-4"], 2, links=table) == ["MIG-4", "MIG-5"]


def test_replicas_keep_upstreams_greedy_policy_whatever_the_links():
    table, gpus = profile_table("dgx1-v100-8")
    replicas = {d.id: d for g in gpus.values() for d in replicas_of(g, 2)}
    with_links = preferred_allocation(replicas, list(replicas), [], 3, links=table)
    assert with_links == preferred_allocation(replicas, list(replicas), [], 3)
