"""Allocate and GetPreferredAllocation rules, as pure functions over device tables."""

from __future__ import annotations

import pytest

from nvdp_node.domain.allocation import (
    VISIBLE_DEVICES,
    AllocationPolicy,
    DeviceSpec,
    InvalidAllocationError,
    Mount,
    allocate_container,
    preferred_allocation,
)
from nvdp_node.domain.devices import Device


def gpus(numa: list[int | None]) -> dict[str, Device]:
    """GPU-<i> on the given NUMA nodes, minor = index."""
    return {
        f"GPU-{i}": Device(id=f"GPU-{i}", index=str(i), gpu_uuid=f"GPU-{i}", numa_node=n, dev_paths=(f"/dev/nvidia{i}",))
        for i, n in enumerate(numa)
    }


EIGHT = gpus([0, 0, 0, 0, 1, 1, 1, 1])


@pytest.mark.parametrize(
    "requested,expected",
    [
        (["GPU-3"], "GPU-3"),
        (["GPU-3", "GPU-1"], "GPU-3,GPU-1"),
        (["GPU-3", "GPU-1", "GPU-3"], "GPU-3,GPU-1"),
        ([], ""),
    ],
    ids=["one", "request-order-kept", "duplicates-dropped", "empty"],
)
def test_envvar_strategy_lists_uuids_in_request_order_without_duplicates(requested, expected):
    allocation = allocate_container(EIGHT, requested, AllocationPolicy())
    assert allocation.envs == {VISIBLE_DEVICES: expected}
    assert allocation.mounts == () and allocation.device_specs == ()


def test_index_strategy_lists_nvml_indices():
    allocation = allocate_container(EIGHT, ["GPU-5", "GPU-2"], AllocationPolicy(device_id_strategy="index"))
    assert allocation.envs == {VISIBLE_DEVICES: "5,2"}


def test_an_unknown_id_fails_with_upstreams_text():
    with pytest.raises(InvalidAllocationError) as err:
        allocate_container(EIGHT, ["GPU-1", "GPU-99"], AllocationPolicy())
    assert str(err.value) == 'invalid allocation request for "nvidia.com/gpu": invalid request: unknown device: GPU-99'


def test_a_long_unknown_id_is_cut_to_64_characters_and_its_size_in_the_error():
    huge = "GPU-" + "x" * 1_000_000
    with pytest.raises(InvalidAllocationError) as err:
        allocate_container(EIGHT, [huge], AllocationPolicy())
    assert str(err.value) == (
        'invalid allocation request for "nvidia.com/gpu": invalid request: unknown device: '
        f"{huge[:64]}… (1000004 bytes)"
    )


def test_an_unknown_id_of_exactly_64_characters_is_shown_whole():
    edge = "G" * 64
    with pytest.raises(InvalidAllocationError) as err:
        allocate_container(EIGHT, [edge], AllocationPolicy())
    assert str(err.value).endswith(f"unknown device: {edge}")


def test_volume_mounts_strategy_points_the_env_at_the_mount_dir_and_mounts_dev_null_per_id():
    policy = AllocationPolicy(device_list_strategy=("envvar", "volume-mounts"))
    allocation = allocate_container(EIGHT, ["GPU-1", "GPU-0"], policy)
    assert allocation.envs == {VISIBLE_DEVICES: "/var/run/nvidia-container-devices"}
    assert allocation.mounts == (
        Mount("/var/run/nvidia-container-devices/GPU-1", "/dev/null"),
        Mount("/var/run/nvidia-container-devices/GPU-0", "/dev/null"),
    )


def test_pass_device_specs_adds_present_control_nodes_then_each_gpu_node_under_the_dev_root():
    policy = AllocationPolicy(
        pass_device_specs=True, dev_root="/run/nvidia/driver", control_device_paths=("/dev/nvidiactl",)
    )
    allocation = allocate_container(EIGHT, ["GPU-2"], policy)
    assert allocation.device_specs == (
        DeviceSpec("/dev/nvidiactl", "/run/nvidia/driver/dev/nvidiactl", "rw"),
        DeviceSpec("/dev/nvidia2", "/run/nvidia/driver/dev/nvidia2", "rw"),
    )


@pytest.mark.parametrize(
    "available,must,size,expected",
    [
        ([f"GPU-{i}" for i in range(8)], [], 4, ["GPU-0", "GPU-1", "GPU-2", "GPU-3"]),
        ([f"GPU-{i}" for i in range(8)], ["GPU-5"], 3, ["GPU-5", "GPU-4", "GPU-6"]),
        (["GPU-0", "GPU-4", "GPU-5", "GPU-6"], [], 2, ["GPU-4", "GPU-5"]),
        (["GPU-0", "GPU-1", "GPU-4", "GPU-5", "GPU-6"], [], 2, ["GPU-0", "GPU-1"]),
        (["GPU-0", "GPU-1", "GPU-4", "GPU-5", "GPU-6"], [], 3, ["GPU-4", "GPU-5", "GPU-6"]),
        (["GPU-0", "GPU-1", "GPU-4", "GPU-5", "GPU-6"], [], 5, ["GPU-4", "GPU-5", "GPU-6", "GPU-0", "GPU-1"]),
        (["GPU-0", "GPU-1"], ["GPU-0", "GPU-1"], 1, ["GPU-0"]),
        (["GPU-0", "nope", "GPU-1"], [], 2, ["GPU-0", "GPU-1"]),
        (["GPU-0"], [], 3, ["GPU-0"]),
        (["GPU-0", "GPU-1"], [], 0, []),
    ],
    ids=[
        "fills-one-numa-node",
        "stays-on-the-must-include-node",
        "whole-answer-on-one-node",
        "best-fit-keeps-the-bigger-node-whole",
        "the-node-that-fits",
        "spans-the-fewest-nodes-when-none-fits",
        "must-include-larger-than-size-is-truncated",
        "unknown-ids-are-skipped",
        "too-few-returns-best-effort",
        "zero-size",
    ],
)
def test_preferred_allocation(available, must, size, expected):
    assert preferred_allocation(EIGHT, available, must, size) == expected


def test_preferred_allocation_treats_devices_without_topology_as_one_group():
    devices = gpus([None, None, 0])
    assert preferred_allocation(devices, ["GPU-2", "GPU-0", "GPU-1"], [], 2) == ["GPU-0", "GPU-1"]


@pytest.mark.parametrize(
    "resource,socket",
    [
        ("nvidia.com/gpu", "nvidia-gpu.sock"),
        ("nvidia.com/mig-1g.10gb", "nvidia-mig-1g.10gb.sock"),
        ("example.com/gpu", "nvidia-example.com-gpu.sock"),
    ],
    ids=["upstream-name", "upstream-mig-name", "other-domain-keeps-its-domain"],
)
def test_socket_names_follow_upstream_and_never_collide(resource, socket):
    from nvdp_node.app.resource_plugin import socket_name

    assert socket_name(resource) == socket
