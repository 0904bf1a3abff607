"""Replicas of shared devices (time-slicing, MPS): ids, names, inherited topology and health, refusals."""

from __future__ import annotations

from dataclasses import replace

import pytest

from nvdp_node.domain.devices import Device, Gpu, MigDevice, NodeInventory, gpu_device, mig_device
from nvdp_node.domain.health_policy import EVENT_XID_CRITICAL, DeviceRef, HealthEvent, HealthPolicy, judge
from nvdp_node.domain.sharing import (
    MPS_ON_MIG,
    SharedResource,
    Sharing,
    mps_max_replicas,
    parent_id,
    plan_sharing,
    replica_id,
    replicate,
)

GPU = "nvidia.com/gpu"
MIG = "nvidia.com/mig-1g.10gb"


def gpu(i: int, numa: int | None = None, cc: str = "8.0") -> Gpu:
    return Gpu(index=i, uuid=f"GPU-{i}", name="NVIDIA A100-SXM4-80GB", minor=i, pci_bus_id=f"0000:{i:02x}:00.0",
               memory_total=80 << 30, numa_node=numa, compute_capability=cc)


EIGHT_GPUS = tuple(gpu_device(gpu(i, numa=i // 4)) for i in range(8))
MIG_GPU = replace(gpu(0, numa=1), mig_enabled=True, mig_devices=(
    MigDevice(index=0, uuid="MIG-a", profile="1g.10gb", gpu_instance=7, compute_instance=0, memory_total=10 << 30,
              cap_minors=(66, 67)),
    MigDevice(index=1, uuid="MIG-b", profile="1g.10gb", gpu_instance=8, compute_instance=0, memory_total=10 << 30,
              cap_minors=(75, 76)),
))
MIXED = {GPU: (gpu_device(gpu(1)),), MIG: tuple(mig_device(MIG_GPU, m) for m in MIG_GPU.mig_devices)}


def time_slicing(*resources: SharedResource, rename_by_default: bool = False) -> Sharing:
    return Sharing(kind="time-slicing", resources=resources, rename_by_default=rename_by_default)


def ids(devices: tuple[Device, ...]) -> list[str]:
    return [d.id for d in devices]


def test_no_sharing_leaves_every_resource_as_it_is():
    assert replicate(MIXED, None) == MIXED


@pytest.mark.parametrize(
    "sharing,name",
    [
        (time_slicing(SharedResource(GPU, 4)), GPU),
        (time_slicing(SharedResource(GPU, 4, rename=True)), f"{GPU}.shared"),
        (time_slicing(SharedResource(GPU, 4), rename_by_default=True), f"{GPU}.shared"),
        (time_slicing(SharedResource(GPU, 4, rename=False), rename_by_default=True), GPU),
    ],
    ids=["kept-name", "rename", "rename-by-default", "rename-false-overrides-the-default"],
)
def test_eight_gpus_times_four_replicas_are_advertised_as_32_devices_under_the_shared_name(sharing, name):
    assert {n: len(ds) for n, ds in replicate({GPU: EIGHT_GPUS}, sharing).items()} == {name: 32}


def test_replica_ids_are_the_parent_id_and_the_replica_number_sorted_by_id():
    shared = replicate({GPU: EIGHT_GPUS[:2]}, time_slicing(SharedResource(GPU, 3)))[GPU]
    assert ids(shared) == ["GPU-0::0", "GPU-0::1", "GPU-0::2", "GPU-1::0", "GPU-1::1", "GPU-1::2"]


@pytest.mark.parametrize(
    "resources,name",
    [({GPU: EIGHT_GPUS}, GPU), (MIXED, MIG)],
    ids=["whole-gpus", "mig-devices"],
)
def test_a_replica_is_its_parent_but_for_its_id_and_replica_of(resources, name):
    parents = {d.id: d for d in resources[name]}
    for r in replicate(resources, time_slicing(SharedResource(name, 2)))[name]:
        assert r.replica_of in parents and r.id.startswith(f"{r.replica_of}::")
        assert replace(r, id=r.replica_of, replica_of=None) == parents[r.replica_of]


def test_under_mixed_mig_only_the_shared_mig_resource_is_replicated():
    shared = replicate(MIXED, time_slicing(SharedResource(MIG, 2)))
    assert shared[GPU] == MIXED[GPU]
    assert [(d.id, d.index, d.gpu_instance, d.dev_paths) for d in shared[MIG]] == [
        ("MIG-a::0", "0:0", 7, ("/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap66", "/dev/nvidia-caps/nvidia-cap67")),
        ("MIG-a::1", "0:0", 7, ("/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap66", "/dev/nvidia-caps/nvidia-cap67")),
        ("MIG-b::0", "0:1", 8, ("/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap75", "/dev/nvidia-caps/nvidia-cap76")),
        ("MIG-b::1", "0:1", 8, ("/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap75", "/dev/nvidia-caps/nvidia-cap76")),
    ]


def refs(devices: tuple[Device, ...]) -> list[DeviceRef]:
    """As the health fan-out (app/health_fanout.py) builds them."""
    return [DeviceRef(d.id, d.gpu_uuid, d.gpu_instance, d.compute_instance) for d in devices]


def test_an_xid_on_gpu_3_marks_all_four_of_its_replicas_unhealthy_and_no_other():
    shared = replicate({GPU: EIGHT_GPUS}, time_slicing(SharedResource(GPU, 4)))[GPU]
    verdict = judge(HealthEvent(EVENT_XID_CRITICAL, 79, "GPU-3"), refs(shared), HealthPolicy())
    assert verdict.device_ids == ("GPU-3::0", "GPU-3::1", "GPU-3::2", "GPU-3::3")


def test_an_xid_on_one_gpu_instance_marks_the_replicas_of_that_mig_device_only():
    shared = replicate(MIXED, time_slicing(SharedResource(MIG, 3)))[MIG]
    verdict = judge(HealthEvent(EVENT_XID_CRITICAL, 79, "GPU-0", gpu_instance=8), refs(shared), HealthPolicy())
    assert verdict.device_ids == ("MIG-b::0", "MIG-b::1", "MIG-b::2")


def test_every_replica_of_a_gpu_that_failed_discovery_starts_unhealthy():
    inventory = NodeInventory("550.54", "12.4", (gpu(0), replace(gpu(1), error="GPU is lost")))
    shared = replicate({GPU: inventory.devices()}, time_slicing(SharedResource(GPU, 2)))[GPU]
    assert inventory.unhealthy_at_start(shared) == ("GPU-1::0", "GPU-1::1")


def test_the_plan_says_how_many_replicas_each_advertised_resource_has():
    plan = plan_sharing(MIXED, time_slicing(SharedResource(MIG, 3, rename=True)))
    assert plan.replicas == {f"{MIG}.shared": 3}
    assert sorted(plan.resources) == [GPU, f"{MIG}.shared"]


def test_a_shared_name_the_node_does_not_advertise_is_a_warning_and_changes_nothing():
    plan = plan_sharing({GPU: EIGHT_GPUS}, time_slicing(SharedResource("nvidia.com/mig-3g.40gb", 2)))
    assert plan.resources == {GPU: EIGHT_GPUS} and plan.errors == ()
    assert plan.warnings == ('time-slicing sharing names "nvidia.com/mig-3g.40gb", which this node does not advertise',)


def test_a_rename_onto_a_name_already_advertised_is_an_error_and_only_that_resource_is_left_out():
    resources = {GPU: EIGHT_GPUS[:4], f"{GPU}.shared": EIGHT_GPUS[4:]}
    plan = plan_sharing(resources, time_slicing(SharedResource(GPU, 2, rename=True)))
    assert plan.resources == {f"{GPU}.shared": EIGHT_GPUS[4:]}
    assert plan.errors == (
        'time-slicing sharing of "nvidia.com/gpu": "nvidia.com/gpu.shared" is advertised already; '
        '"nvidia.com/gpu" is not advertised',
    )


def test_a_rename_past_kubelets_name_limit_is_an_error_naming_the_rule():
    long = "example.com/" + "g" * 60
    plan = plan_sharing({long: EIGHT_GPUS}, time_slicing(SharedResource(long, 2, rename=True)))
    assert plan.resources == {}
    (error,) = plan.errors
    assert f'the ResourceName "{long}.shared" is invalid' in error and "longer than 63 characters" in error


def test_mps_on_mig_devices_is_refused_with_upstreams_text():
    plan = plan_sharing(MIXED, Sharing(kind="mps", resources=(SharedResource(MIG, 2),)))
    assert plan.resources == {GPU: MIXED[GPU]}
    assert plan.errors == (f'MPS sharing of "{MIG}": {MPS_ON_MIG}; "{MIG}" is not advertised',)


@pytest.mark.parametrize(
    "capability,replicas,refused",
    [
        ("9.0", 48, False),
        ("7.0", 48, False),
        ("6.1", 16, False),
        ("6.1", 17, True),
        (None, 48, False),
    ],
    ids=["hopper-48", "volta-48", "pascal-16", "pascal-17-refused", "unknown-not-checked"],
)
def test_mps_replicas_are_checked_against_the_gpu_generation(capability, replicas, refused):
    plan = plan_sharing({GPU: EIGHT_GPUS[:2]}, Sharing(kind="mps", resources=(SharedResource(GPU, replicas),)),
                        compute_capabilities={"GPU-0": "9.0", "GPU-1": capability})
    assert (plan.resources == {}) is refused
    if refused:
        assert plan.errors == (
            'MPS sharing of "nvidia.com/gpu": invalid MPS configuration: invalid device maximum allowed replicas '
            "exceeded: 17 > 16 (GPU-1 has compute capability 6.1; MPS serves at most 16 clients per GPU before "
            'Volta (7.0)); "nvidia.com/gpu" is not advertised',
        )


@pytest.mark.parametrize(
    "capability,limit",
    [("7.0", 48), ("v7.5", 48), ("10.0", 48), ("6.1", 16), ("3.7", 16), (None, None), ("", None), ("eight", None)],
    ids=["volta", "turing-with-v", "blackwell", "pascal", "kepler", "none", "empty", "not-a-version"],
)
def test_mps_max_replicas_is_48_from_volta_on_and_16_before(capability, limit):
    assert mps_max_replicas(capability) == limit


def test_a_shared_name_without_a_domain_gets_nvidia_com():
    assert SharedResource("gpu", 2).name == GPU


@pytest.mark.parametrize("replicas", [1, 0, -3], ids=["one", "zero", "negative"])
def test_fewer_than_two_replicas_are_refused_with_upstreams_rule(replicas):
    with pytest.raises(ValueError, match="number of replicas must be >= 2"):
        SharedResource(GPU, replicas)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"kind": "time-slicing", "resources": ()}, "no resources specified"),
        ({"kind": "mps", "resources": (SharedResource(GPU, 2), SharedResource("gpu", 3))},
         "listed more than once: nvidia.com/gpu"),
        ({"kind": "timeslicing", "resources": (SharedResource(GPU, 2),)}, "unknown sharing kind 'timeslicing'"),
    ],
    ids=["no-resources", "a-resource-twice", "unknown-kind"],
)
def test_a_sharing_that_cannot_be_applied_is_refused_when_built(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Sharing(**kwargs)


@pytest.mark.parametrize(
    "device_id,parent",
    [("GPU-a::3", "GPU-a"), ("GPU-a", "GPU-a"), ("MIG-GPU-a/1/0::12", "MIG-GPU-a/1/0"), ("a::1::2", "a")],
    ids=["replica", "plain", "legacy-mig-uuid", "first-separator"],
)
def test_parent_id_strips_the_replica_number_as_upstream(device_id, parent):
    assert parent_id(device_id) == parent


def test_replica_id_appends_the_replica_number():
    assert replica_id("GPU-a", 7) == "GPU-a::7"
