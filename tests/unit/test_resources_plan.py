"""The resource planner: MIG strategies, resource patterns and the devices each resource advertises."""

from __future__ import annotations

import pytest

from nvdp_node.domain.devices import Gpu, MigDevice, NodeInventory
from nvdp_node.domain.resources import (
    MANY_MIG_TYPES,
    MIXED_MIG_MODES,
    NamePattern,
    ResourceNaming,
    plan_devices,
)

A100 = "NVIDIA A100-SXM4-40GB"
H100 = "NVIDIA H100 80GB HBM3"
T4 = "Tesla T4"
GPU = "nvidia.com/gpu"


def gpu(i: int, name: str = A100, *, mig: list[str] | None = None, numa: int | None = 0,
        minor: int | None = None, error: str | None = None) -> Gpu:
    """GPU-<i>, minor <i> unless given; ``mig`` lists its MIG devices' profiles (None: MIG off)."""
    devices = tuple(
        MigDevice(index=j, uuid=f"MIG-{i}-{j}", profile=p, gpu_instance=j + 1, compute_instance=0,
                  memory_total=5 * 2**30, cap_minors=(100 + 10 * i + 2 * j, 101 + 10 * i + 2 * j))
        for j, p in enumerate(mig or [])
    )
    return Gpu(index=i, uuid=f"GPU-{i}", name=name, minor=i if minor is None else minor,
               pci_bus_id=f"00000000:{i:02X}:00.0", memory_total=40 * 2**30, numa_node=numa,
               mig_enabled=mig is not None, error=error, mig_devices=devices)


def node(*gpus: Gpu) -> NodeInventory:
    return NodeInventory(driver_version="550.90.07", cuda_driver_version="12.4", gpus=gpus)


def naming(strategy="none", gpus=(), migs=(), resource_name=GPU) -> ResourceNaming:
    return ResourceNaming(
        strategy=strategy, resource_name=resource_name,
        gpu_patterns=tuple(NamePattern(p, n) for p, n in gpus), mig_patterns=tuple(NamePattern(p, n) for p, n in migs),
    )


def ids(plan) -> dict[str, list[str]]:
    return {name: [d.id for d in devices] for name, devices in plan.resources.items()}


WHOLE = node(gpu(0), gpu(1))
UNIFORM_MIG = node(gpu(0, mig=["1g.5gb"] * 2), gpu(1, mig=["1g.5gb"] * 2))
# Like the mock's a100-mig-8: two GPUs without MIG, then 1g.5gb x2; 2g.10gb + 1g.5gb; 3g.20gb x2; 4g.20gb + 3g.20gb.
MIXED_NODE = node(
    gpu(0), gpu(1),
    gpu(2, mig=["1g.5gb", "1g.5gb"]), gpu(3, mig=["2g.10gb", "1g.5gb"]),
    gpu(4, mig=["3g.20gb", "3g.20gb"]), gpu(5, mig=["4g.20gb", "3g.20gb"]),
)


# --------------------------------------------------------------------------- strategies


@pytest.mark.parametrize(
    "inventory,strategy,expected",
    [
        (WHOLE, "none", {GPU: ["GPU-0", "GPU-1"]}),
        (UNIFORM_MIG, "none", {GPU: ["GPU-0", "GPU-1"]}),
        (WHOLE, "single", {GPU: ["GPU-0", "GPU-1"]}),
        (UNIFORM_MIG, "single", {GPU: ["MIG-0-0", "MIG-0-1", "MIG-1-0", "MIG-1-1"]}),
        (WHOLE, "mixed", {GPU: ["GPU-0", "GPU-1"]}),
        (UNIFORM_MIG, "mixed", {"nvidia.com/mig-1g.5gb": ["MIG-0-0", "MIG-0-1", "MIG-1-0", "MIG-1-1"]}),
        (MIXED_NODE, "mixed", {
            GPU: ["GPU-0", "GPU-1"],
            "nvidia.com/mig-1g.5gb": ["MIG-2-0", "MIG-2-1", "MIG-3-1"],
            "nvidia.com/mig-2g.10gb": ["MIG-3-0"],
            "nvidia.com/mig-3g.20gb": ["MIG-4-0", "MIG-4-1", "MIG-5-1"],
            "nvidia.com/mig-4g.20gb": ["MIG-5-0"],
        }),
    ],
    ids=["none-whole", "none-mig-gpus-whole", "single-whole", "single-uniform-mig", "mixed-whole",
         "mixed-uniform-mig", "mixed-node"],
)
def test_each_strategy_sorts_devices_into_upstreams_resources(inventory, strategy, expected):
    plan = plan_devices(inventory, naming(strategy))
    assert (ids(plan), plan.errors) == (expected, ())


def test_none_warns_that_a_mig_enabled_gpu_is_advertised_whole():
    plan = plan_devices(node(gpu(0), gpu(1, mig=["1g.5gb"])), naming("none"))
    assert plan.warnings == (
        'GPU 1 (GPU-1) has MIG enabled, but mig_strategy is "none": it is advertised whole, and containers '
        "given it will see no usable CUDA device",
    )


def test_single_uses_the_configured_resource_name_for_mig_devices():
    plan = plan_devices(UNIFORM_MIG, naming("single", resource_name="example.com/slice"))
    assert list(plan.resources) == ["example.com/slice"]


def test_mixed_without_mig_gpus_warns_about_a_mig_gpu_with_no_mig_devices():
    plan = plan_devices(node(gpu(0, mig=["1g.5gb"]), gpu(1, mig=[])), naming("mixed"))
    assert (ids(plan), plan.warnings, plan.errors) == (
        {"nvidia.com/mig-1g.5gb": ["MIG-0-0"]}, ("device 1 has no MIG devices configured",), ()
    )


# --------------------------------------------------------------------------- single-strategy errors


@pytest.mark.parametrize(
    "inventory,errors,expected",
    [
        (node(gpu(0), gpu(1, mig=["1g.5gb"])), (MIXED_MIG_MODES,), {GPU: ["MIG-1-0"]}),
        (node(gpu(0, mig=["1g.5gb"]), gpu(1, mig=[])), ("device 1 has no MIG devices configured",),
         {GPU: ["MIG-0-0"]}),
        (node(gpu(0, mig=["1g.5gb"]), gpu(1, mig=["2g.10gb"])), (MANY_MIG_TYPES,), {}),
        (node(gpu(0), gpu(1, mig=["1g.5gb", "2g.10gb"])), (MANY_MIG_TYPES,), {GPU: ["GPU-0"]}),
    ],
    ids=["mig-and-whole-gpus-serve-the-mig-devices", "mig-gpu-without-mig-devices-serves-the-rest",
         "two-profiles-serve-no-mig-device", "two-profiles-next-to-whole-gpus-serve-the-whole-gpus"],
)
def test_single_reports_upstreams_error_and_serves_only_what_stays_unambiguous(inventory, errors, expected):
    plan = plan_devices(inventory, naming("single"))
    assert (plan.errors, ids(plan)) == (errors, expected)


def test_single_withholds_a_gpu_in_error_next_to_mig_devices_with_a_warning_not_an_error():
    plan = plan_devices(node(gpu(0, error="name: GPU is lost"), gpu(1, mig=["1g.5gb"])), naming("single"))
    assert (ids(plan), plan.errors, plan.warnings) == ({GPU: ["MIG-1-0"]}, (), (
        "GPU 0 (GPU-0) is not advertised: it answered discovery with an error (name: GPU is lost), so its MIG "
        'mode is unknown, and mig_strategy "single" serves MIG devices',
    ))


def test_mixed_does_not_mind_mig_devices_next_to_whole_gpus():
    assert plan_devices(node(gpu(0), gpu(1, mig=["1g.5gb"])), naming("mixed")).errors == ()


def test_mixed_does_not_mind_several_mig_profiles():
    assert plan_devices(node(gpu(0, mig=["1g.5gb", "2g.10gb"])), naming("mixed")).errors == ()


# --------------------------------------------------------------------------- mixed naming


@pytest.mark.parametrize(
    "profile,resource",
    [("1g.10gb+me", "nvidia.com/mig-1g.10gb.me"), ("1g.10gb-me", "nvidia.com/mig-1g.10gb-me"),
     ("7g.141gb", "nvidia.com/mig-7g.141gb")],
    ids=["plus-me-becomes-dot-me", "minus-me-stays-literal", "h200-full-gpu"],
)
def test_mixed_names_each_profile_after_itself(profile, resource):
    assert list(plan_devices(node(gpu(0, H100, mig=[profile])), naming("mixed")).resources) == [resource]


def test_mixed_gives_compute_sub_profiles_no_default_resource_and_says_so():
    plan = plan_devices(node(gpu(0, mig=["1c.2g.20gb", "1c.2g.20gb", "1g.5gb"])), naming("mixed"))
    assert (ids(plan), plan.errors) == (
        {"nvidia.com/mig-1g.5gb": ["MIG-0-2"]}, ("MIG profile '1c.2g.20gb' does not match any resource patterns",)
    )


def test_mixed_reports_a_profile_whose_default_name_kubelet_would_refuse():
    plan = plan_devices(node(gpu(0, mig=["1g.5gb+me,gfx"])), naming("mixed"))
    assert plan.resources == {}
    assert plan.errors[0].startswith("MIG profile '1g.5gb+me,gfx' gives no usable resource name: the ResourceName")


# --------------------------------------------------------------------------- resource patterns


def test_per_model_gpu_patterns_give_each_model_its_resource():
    plan = plan_devices(node(gpu(0, A100), gpu(1, H100), gpu(2, A100)),
                        naming(gpus=[("*A100*", "a100"), ("*H100*", "h100")]))
    assert ids(plan) == {"nvidia.com/a100": ["GPU-0", "GPU-2"], "nvidia.com/h100": ["GPU-1"]}


def test_the_first_matching_gpu_pattern_wins():
    plan = plan_devices(node(gpu(0, A100)), naming(gpus=[("*A100*", "a100"), ("*", "gpu")]))
    assert list(plan.resources) == ["nvidia.com/a100"]


@pytest.mark.parametrize(
    "pattern,matches",
    [("*A100*", True), ("A100", False), ("NVIDIA A100*", True), ("*40GB", True), ("*40G", False),
     (A100, True), ("NVIDIA*SXM4*", True), ("NVIDIA.A100*", False)],
    ids=["contains", "bare-word-is-anchored", "prefix", "suffix", "suffix-is-anchored", "literal",
         "two-wildcards", "dot-is-literal"],
)
def test_gpu_patterns_are_anchored_wildcards(pattern, matches):
    assert NamePattern(pattern, "x").matches(A100) is matches


def test_a_gpu_matching_no_pattern_is_an_error_naming_it_and_the_others_are_served():
    plan = plan_devices(node(gpu(0, A100), gpu(1, T4), gpu(2, T4)), naming(gpus=[("*A100*", "a100")]))
    assert (ids(plan), plan.errors) == (
        {"nvidia.com/a100": ["GPU-0"]}, ("GPU name 'Tesla T4' does not match any resource patterns",)
    )


def test_mig_patterns_name_mig_devices_by_profile():
    plan = plan_devices(node(gpu(0, mig=["1g.5gb", "3g.20gb"])),
                        naming("mixed", migs=[("1g.*", "mig-small"), ("*", "mig-big")]))
    assert ids(plan) == {"nvidia.com/mig-big": ["MIG-0-1"], "nvidia.com/mig-small": ["MIG-0-0"]}


def test_a_mig_pattern_is_anchored_so_1g_10gb_does_not_match_1g_10gb_plus_me():
    plan = plan_devices(node(gpu(0, H100, mig=["1g.10gb", "1g.10gb+me"])),
                        naming("mixed", migs=[("1g.10gb", "mig-1g.10gb")]))
    assert (ids(plan), plan.errors) == (
        {"nvidia.com/mig-1g.10gb": ["MIG-0-0"]}, ("MIG profile '1g.10gb+me' does not match any resource patterns",)
    )


def test_a_pattern_name_without_a_domain_gets_nvidia_com():
    assert NamePattern("*", "a100").name == "nvidia.com/a100"


def test_a_pattern_name_with_a_domain_keeps_it():
    assert NamePattern("*", "example.com/a100").name == "example.com/a100"


def test_an_unknown_strategy_is_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match="unknown MIG strategy 'both'; expected one of none, single, mixed"):
        ResourceNaming(strategy="both", resource_name=GPU)  # type: ignore[arg-type]


def test_an_error_shared_by_many_gpus_is_reported_once():
    plan = plan_devices(node(*(gpu(i, T4) for i in range(4))), naming(gpus=[("*A100*", "a100")]))
    assert plan.errors == ("GPU name 'Tesla T4' does not match any resource patterns",)


# --------------------------------------------------------------------------- the devices themselves


def test_resources_without_devices_are_left_out():
    assert GPU not in plan_devices(UNIFORM_MIG, naming("mixed")).resources


def test_devices_are_sorted_by_id():
    inventory = node(gpu(0, mig=["1g.5gb"]), gpu(1, mig=["1g.5gb"]))
    reordered = node(*reversed(inventory.gpus))
    assert ids(plan_devices(reordered, naming("single"))) == {GPU: ["MIG-0-0", "MIG-1-0"]}


def test_a_mig_device_has_its_parent_index_and_slot_as_index():
    device = plan_devices(node(gpu(3, mig=["1g.5gb", "1g.5gb"])), naming("single")).resources[GPU][1]
    assert device.index == "3:1"


def test_a_mig_device_has_its_parents_numa_node_and_uuid():
    device = plan_devices(node(gpu(3, numa=1, mig=["1g.5gb"])), naming("single")).resources[GPU][0]
    assert (device.numa_node, device.gpu_uuid) == (1, "GPU-3")


def test_a_mig_device_needs_its_parents_node_then_its_gi_and_ci_capability_nodes():
    device = plan_devices(node(gpu(3, minor=7, mig=["1g.5gb"])), naming("single")).resources[GPU][0]
    assert device.dev_paths == ("/dev/nvidia7", "/dev/nvidia-caps/nvidia-cap130", "/dev/nvidia-caps/nvidia-cap131")


def test_a_mig_device_carries_its_gpu_and_compute_instance_and_its_profile_as_model():
    device = plan_devices(node(gpu(0, mig=["1g.5gb", "2g.10gb"])), naming("mixed")).resources[
        "nvidia.com/mig-2g.10gb"][0]
    assert (device.gpu_instance, device.compute_instance, device.model) == (2, 0, "2g.10gb")


def test_a_whole_gpu_has_no_instances_and_its_product_name_as_model():
    device = plan_devices(WHOLE, naming()).resources[GPU][0]
    assert (device.gpu_instance, device.compute_instance, device.model, device.dev_paths) == (
        None, None, A100, ("/dev/nvidia0",)
    )


def test_mig_devices_of_a_gpu_in_error_start_unhealthy():
    inventory = node(gpu(0, mig=["1g.5gb"]), gpu(1, mig=["1g.5gb", "1g.5gb"], error="MIG device 2: Unknown Error"))
    devices = plan_devices(inventory, naming("single")).resources[GPU]
    assert inventory.unhealthy_at_start(devices) == ("MIG-1-0", "MIG-1-1")


def test_counts_give_the_number_of_devices_per_resource():
    assert plan_devices(MIXED_NODE, naming("mixed")).counts()["nvidia.com/mig-3g.20gb"] == 3
