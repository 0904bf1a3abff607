"""Allocate and GetPreferredAllocation rules, as pure functions over device tables."""

from __future__ import annotations

import pytest

from nvdp_node.domain.allocation import (
    VISIBLE_DEVICES,
    AllocationPolicy,
    DeviceSpec,
    InvalidAllocationError,
    Mount,
    MpsAllocation,
    allocate_container,
    preferred_allocation,
)
from nvdp_node.domain.devices import Device
from nvdp_node.domain.sharing import replicas_of


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


def shared(devices: dict[str, Device], replicas: int) -> dict[str, Device]:
    return {r.id: r for d in devices.values() for r in replicas_of(d, replicas)}


FOUR_BY_FOUR = shared(gpus([0, 0, 1, 1]), 4)
MIG_DEVICES = {
    d.id: d
    for d in (
        Device(id="MIG-a", index="0:0", gpu_uuid="GPU-0", numa_node=0, gpu_instance=7, compute_instance=0,
               dev_paths=("/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap66", "/dev/nvidia-caps/nvidia-cap67")),
        Device(id="MIG-b", index="0:1", gpu_uuid="GPU-0", numa_node=0, gpu_instance=8, compute_instance=0,
               dev_paths=("/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap75", "/dev/nvidia-caps/nvidia-cap76")),
    )
}
STRATEGIES = [
    AllocationPolicy(),
    AllocationPolicy(device_id_strategy="index"),
    AllocationPolicy(device_list_strategy=("envvar", "volume-mounts")),
    AllocationPolicy(device_list_strategy=("volume-mounts",), device_id_strategy="index"),
    AllocationPolicy(pass_device_specs=True, dev_root="/run/nvidia/driver", control_device_paths=("/dev/nvidiactl",)),
]
STRATEGY_IDS = ["envvar-uuid", "envvar-index", "volume-mounts", "volume-mounts-index", "pass-device-specs"]


@pytest.mark.parametrize("policy", STRATEGIES, ids=STRATEGY_IDS)
@pytest.mark.parametrize(
    "whole,devices,requested",
    [
        (EIGHT, shared(EIGHT, 4), ["GPU-3::2", "GPU-1::0", "GPU-3::1"]),
        (MIG_DEVICES, shared(MIG_DEVICES, 2), ["MIG-b::1", "MIG-a::0", "MIG-b::0"]),
    ],
    ids=["gpu-replicas", "mig-replicas"],
)
def test_replicas_are_rendered_as_their_parents_once_each_in_request_order(policy, whole, devices, requested):
    parents = list(dict.fromkeys(i.split("::")[0] for i in requested))
    assert allocate_container(devices, requested, policy) == allocate_container(whole, parents, policy)


def test_two_replicas_of_one_gpu_give_its_uuid_once():
    allocation = allocate_container(FOUR_BY_FOUR, ["GPU-2::3", "GPU-2::0"], AllocationPolicy())
    assert allocation.envs == {VISIBLE_DEVICES: "GPU-2"}


def test_two_replicas_of_one_gpu_give_its_index_once():
    allocation = allocate_container(FOUR_BY_FOUR, ["GPU-2::3", "GPU-0::1", "GPU-2::0"],
                                    AllocationPolicy(device_id_strategy="index"))
    assert allocation.envs == {VISIBLE_DEVICES: "2,0"}


@pytest.mark.parametrize(
    "requested,fail,error",
    [
        (["GPU-0::0", "GPU-1::0"], True, "found 2"),
        (["GPU-0::0", "GPU-0::1", "GPU-0::2"], True, "found 3"),
        (["GPU-0::0", "GPU-0::0"], True, "found 2"),
        (["GPU-0::0"], True, None),
        (["GPU-0::0", "GPU-1::0"], False, None),
    ],
    ids=["two-gpus", "three-of-one-gpu", "a-duplicate-counts-as-upstream", "one-replica", "option-off"],
)
def test_fail_requests_greater_than_one_refuses_more_than_one_replica_with_upstreams_text(requested, fail, error):
    policy = AllocationPolicy(fail_requests_greater_than_one=fail)
    if error is None:
        allocate_container(FOUR_BY_FOUR, requested, policy)
        return
    with pytest.raises(InvalidAllocationError) as err:
        allocate_container(FOUR_BY_FOUR, requested, policy)
    assert str(err.value) == (
        'invalid allocation request for "nvidia.com/gpu": '
        f"invalid request: maximum request size for shared resources is 1; {error}"
    )


def test_fail_requests_greater_than_one_does_not_limit_devices_that_are_not_replicas():
    policy = AllocationPolicy(fail_requests_greater_than_one=True)
    assert allocate_container(EIGHT, ["GPU-0", "GPU-1"], policy).envs == {VISIBLE_DEVICES: "GPU-0,GPU-1"}


def test_an_unknown_id_is_reported_before_the_request_size():
    with pytest.raises(InvalidAllocationError, match="unknown device: GPU-9::0$"):
        allocate_container(FOUR_BY_FOUR, ["GPU-0::0", "GPU-9::0"], AllocationPolicy(fail_requests_greater_than_one=True))


def test_mps_adds_upstreams_pipe_directory_env_and_the_pipe_and_shm_mounts():
    policy = AllocationPolicy(resource_name="nvidia.com/gpu", mps=MpsAllocation(root="/run/nvidia/mps"))
    allocation = allocate_container(FOUR_BY_FOUR, ["GPU-1::2"], policy)
    assert allocation.envs == {"CUDA_MPS_PIPE_DIRECTORY": "/mps/nvidia.com/gpu/pipe", VISIBLE_DEVICES: "GPU-1"}
    assert allocation.mounts == (
        Mount("/mps/nvidia.com/gpu/pipe", "/run/nvidia/mps/nvidia.com/gpu/pipe", read_only=False),
        Mount("/dev/shm", "/run/nvidia/mps/shm", read_only=False),
    )


def test_mps_mounts_come_before_the_volume_mounts_as_upstream_orders_them():
    policy = AllocationPolicy(resource_name="nvidia.com/gpu.shared", device_list_strategy=("volume-mounts",),
                              mps=MpsAllocation(root="/var/lib/mps/"))
    allocation = allocate_container(FOUR_BY_FOUR, ["GPU-1::2"], policy)
    assert allocation.envs == {"CUDA_MPS_PIPE_DIRECTORY": "/mps/nvidia.com/gpu.shared/pipe",
                               VISIBLE_DEVICES: "/var/run/nvidia-container-devices"}
    assert allocation.mounts == (
        Mount("/mps/nvidia.com/gpu.shared/pipe", "/var/lib/mps/nvidia.com/gpu.shared/pipe"),
        Mount("/dev/shm", "/var/lib/mps/shm"),
        Mount("/var/run/nvidia-container-devices/GPU-1", "/dev/null"),
    )


def test_the_mps_control_daemon_runs_with_the_resources_pipe_and_log_directories_on_the_host():
    mps = MpsAllocation()
    assert mps.daemon_envs("nvidia.com/gpu") == {
        "CUDA_MPS_PIPE_DIRECTORY": "/run/nvidia/mps/nvidia.com/gpu/pipe",
        "CUDA_MPS_LOG_DIRECTORY": "/run/nvidia/mps/nvidia.com/gpu/log",
    }


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


def four_by_four_except(*in_use: str) -> list[str]:
    """All 16 replicas of GPU-0..3 but those already given to pods, in kubelet's (any) order."""
    return [i for i in sorted(FOUR_BY_FOUR, reverse=True) if i not in in_use]


@pytest.mark.parametrize(
    "policy,available,must,size,expected",
    [
        ("distributed", four_by_four_except(), [], 4, ["GPU-0::0", "GPU-1::0", "GPU-2::0", "GPU-3::0"]),
        ("distributed", four_by_four_except(), [], 6,
         ["GPU-0::0", "GPU-1::0", "GPU-2::0", "GPU-3::0", "GPU-0::1", "GPU-1::1"]),
        ("distributed", four_by_four_except("GPU-0::0", "GPU-0::1"), [], 2, ["GPU-1::0", "GPU-2::0"]),
        ("distributed", four_by_four_except("GPU-1::0", "GPU-1::1", "GPU-2::0", "GPU-2::1", "GPU-3::0", "GPU-3::1"),
         [], 2, ["GPU-0::0", "GPU-0::1"]),
        ("distributed", [f"GPU-0::{n}" for n in range(4)] + ["GPU-1::1", "GPU-1::2", "GPU-1::3"], [], 2,
         ["GPU-0::0", "GPU-1::1"]),
        ("distributed", four_by_four_except(), ["GPU-0::0"], 3, ["GPU-0::0", "GPU-1::0", "GPU-2::0"]),
        ("packed", four_by_four_except(), [], 3, ["GPU-0::0", "GPU-0::1", "GPU-0::2"]),
        ("packed", four_by_four_except("GPU-2::0", "GPU-2::1"), [], 2, ["GPU-2::2", "GPU-2::3"]),
        ("packed", four_by_four_except("GPU-2::0", "GPU-2::1", "GPU-2::2", "GPU-1::0"), [], 3,
         ["GPU-2::3", "GPU-1::1", "GPU-1::2"]),
        ("packed", four_by_four_except("GPU-3::1", "GPU-1::2"), [], 2, ["GPU-1::0", "GPU-1::1"]),
        ("packed", four_by_four_except(), ["GPU-3::0"], 2, ["GPU-3::0", "GPU-3::1"]),
        ("distributed", ["GPU-0::0", "GPU-1::0"], [], 3, ["GPU-0::0", "GPU-1::0"]),
        ("distributed", ["GPU-9::0", "GPU-1::0", "nope"], [], 1, ["GPU-1::0"]),
        ("packed", four_by_four_except(), ["GPU-2::0", "GPU-1::0"], 1, ["GPU-2::0"]),
    ],
    ids=[
        "distributed-one-per-gpu",
        "distributed-wraps-around",
        "distributed-least-used-gpu-first",
        "distributed-a-gpu-used-less-than-the-rest-takes-two",
        "distributed-a-tie-goes-to-the-gpu-picked-fewer-times",
        "distributed-must-include-counts-as-in-use",
        "packed-fills-one-gpu",
        "packed-most-used-gpu-first",
        "packed-overflows-to-the-next-most-used",
        "packed-a-tie-goes-to-the-lower-index",
        "packed-stays-on-the-must-include-gpu",
        "too-few-returns-all-of-them",
        "unknown-ids-are-skipped",
        "must-include-larger-than-size-is-truncated",
    ],
)
def test_preferred_allocation_of_replicas_follows_upstreams_greedy_policy(policy, available, must, size, expected):
    assert preferred_allocation(FOUR_BY_FOUR, available, must, size, shared_policy=policy) == expected


@pytest.mark.parametrize("policy", ["distributed", "packed"])
def test_preferred_allocation_of_replicas_does_not_depend_on_the_order_kubelet_offers_them(policy):
    offered = four_by_four_except("GPU-1::0", "GPU-3::2")
    answers = {tuple(preferred_allocation(FOUR_BY_FOUR, order, [], 5, shared_policy=policy))
               for order in (offered, offered[::-1], offered[1::2] + offered[::2])}
    assert len(answers) == 1


@pytest.mark.parametrize(
    "available,must,size,expected",
    [
        (["GPU-0::0", "GPU-0::1"], [], 2**31 - 1, ["GPU-0::0", "GPU-0::1"]),
        (["GPU-0::0"], [], -1, []),
        (["GPU-1::0", "GPU-1::0", "GPU-0::0"], ["GPU-7::7", "GPU-1::0"], 2, ["GPU-1::0", "GPU-0::0"]),
        ([], [], 1, []),
    ],
    ids=["size-beyond-the-table", "negative-size", "duplicates-and-unknown-must-include", "nothing-offered"],
)
def test_preferred_allocation_of_replicas_answers_odd_requests_without_raising(available, must, size, expected):
    assert preferred_allocation(FOUR_BY_FOUR, available, must, size, shared_policy="packed") == expected


def test_preferred_allocation_of_mig_replicas_spreads_over_the_mig_devices():
    devices = shared(MIG_DEVICES, 3)
    assert preferred_allocation(devices, sorted(devices), [], 2) == ["MIG-a::0", "MIG-b::0"]


def test_the_shared_policy_does_not_change_the_numa_choice_for_whole_gpus():
    available = ["GPU-0", "GPU-1", "GPU-4", "GPU-5", "GPU-6"]
    assert preferred_allocation(EIGHT, available, [], 2, shared_policy="packed") == ["GPU-0", "GPU-1"]


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
