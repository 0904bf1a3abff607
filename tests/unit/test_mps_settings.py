"""What an MPS control daemon is told (nvdp_node.domain.mps_settings): upstream's numbers, in index order."""

from __future__ import annotations

import pytest

from nvdp_node.domain.devices import Device, Gpu
from nvdp_node.domain.mps_settings import PinnedMemLimit, gpus_of, mps_daemon_settings
from nvdp_node.domain.sharing import replicas_of

GIB = 2**30


def gpu(index: int, memory: int = 80 * GIB) -> Gpu:
    return Gpu(index=index, uuid=f"GPU-{index:04d}", name="NVIDIA H100 80GB HBM3", minor=index, pci_bus_id="",
               memory_total=memory)


@pytest.mark.parametrize(
    ("replicas", "percentage"),
    [(2, 50), (3, 33), (4, 25), (7, 14), (16, 6), (48, 2)],
    ids=["2", "3-rounds-down", "4", "7-rounds-down", "16", "48"],
)
def test_the_active_thread_percentage_is_100_over_the_replicas_rounded_down(replicas, percentage):
    assert mps_daemon_settings([gpu(0)], replicas).active_thread_percentage == percentage


@pytest.mark.parametrize(
    ("memory", "replicas", "limit"),
    [
        (80 * GIB, 4, "20480M"),
        (85_520_809_984, 3, "27186M"),  # an H100 80GB's total as NVML reports it: 27186.33 MiB
        (42_949_672_960, 48, "853M"),  # 853.33 MiB
        (150_754_820_096, 2, "71885M"),  # an H200's total: 71885.5 MiB
    ],
    ids=["80GiB/4", "h100/3-rounds-down", "40GiB/48-rounds-down", "h200/2-rounds-down"],
)
def test_the_pinned_memory_limit_is_the_gpus_memory_over_the_replicas_in_whole_mib(memory, replicas, limit):
    assert mps_daemon_settings([gpu(0, memory)], replicas).pinned_mem_limits == (PinnedMemLimit("0", limit),)


def test_a_gpu_whose_memory_size_is_unknown_gets_no_memory_limit():
    settings = mps_daemon_settings([gpu(0, 0), gpu(1)], 2)
    assert settings.pinned_mem_limits == (PinnedMemLimit("1", "40960M"),)
    assert settings.gpu_uuids == ("GPU-0000", "GPU-0001"), "its compute mode is still set"


def test_the_commands_set_the_memory_limits_in_index_order_before_the_thread_percentage():
    settings = mps_daemon_settings([gpu(2), gpu(0), gpu(1)], 4)
    assert settings.commands() == (
        "set_default_device_pinned_mem_limit 0 20480M",
        "set_default_device_pinned_mem_limit 1 20480M",
        "set_default_device_pinned_mem_limit 2 20480M",
        "set_default_active_thread_percentage 25",
    )
    assert settings.gpu_uuids == ("GPU-0000", "GPU-0001", "GPU-0002")


def test_gpus_indexed_10_and_above_sort_by_number_not_by_text():
    settings = mps_daemon_settings([gpu(10), gpu(9)], 2)
    assert [p.index for p in settings.pinned_mem_limits] == ["9", "10"]


def test_a_gpu_listed_twice_gets_one_limit():
    assert len(mps_daemon_settings([gpu(0), gpu(0)], 2).pinned_mem_limits) == 1


def test_without_gpus_the_daemon_is_told_nothing():
    settings = mps_daemon_settings([], 4)
    assert settings.commands() == () and settings.active_thread_percentage is None


def test_fewer_than_one_replica_is_refused_with_the_number():
    with pytest.raises(ValueError, match="at least 1 replica per GPU, not 0"):
        mps_daemon_settings([gpu(0)], 0)


def test_gpus_of_a_resources_replicas_are_their_physical_gpus_in_inventory_order():
    inventory = [gpu(0), gpu(1), gpu(2)]
    device = Device(id="GPU-0002", index="2", gpu_uuid="GPU-0002", numa_node=None)
    other = Device(id="GPU-0000", index="0", gpu_uuid="GPU-0000", numa_node=None)
    replicas = replicas_of(device, 4) + replicas_of(other, 4)
    assert gpus_of(replicas, inventory) == (inventory[0], inventory[2])
