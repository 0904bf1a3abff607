"""Discovery through the real pynvml against the mock NVML, with sysfs fixture trees."""

from __future__ import annotations

import copy
import json

import pytest

from nvdp_node.adapters.host.paths import HostRoot
from nvdp_node.adapters.nvml import discover, sysfs_bus_id
from nvdp_node.app.cli import main
from nvdp_node.domain.resources import ResourceNaming, plan_devices
from tests.mock_nvml import FAULTABLE_FUNCTIONS
from tests.mock_nvml.mig import cap_minor

LOST = "NVML_ERROR_GPU_IS_LOST"
# What still answers on a GPU that fell off the bus after NVML attached it: the handle and the cached UUID.
IDENTITY = {"nvmlDeviceGetHandleByIndex", "nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByUUID",
            "nvmlDeviceGetUUID"}


def lose_all_but_identity(node, gpu):
    """GPU ``gpu`` keeps its handle and UUID, and every other query on it says GPU_IS_LOST."""
    for fn in sorted(FAULTABLE_FUNCTIONS - IDENTITY):
        node.control.fail(fn, gpu, LOST)


def attributes(gpus):
    return [(g.index, g.uuid, g.name, g.minor, g.pci_bus_id, g.memory_total, g.error) for g in gpus]


def test_discovery_reports_every_gpu_in_nvml_index_order(mock_nvml, tmp_path):
    node = mock_nvml.use("h100-sxm-8")
    node.write_sysfs(tmp_path)
    inventory = discover(sysfs_root=tmp_path)
    assert inventory.driver_version == node.profile["driver_version"]
    assert [(g.index, g.uuid, g.name, g.minor, g.pci_bus_id, g.memory_total, g.numa_node) for g in inventory.gpus] == [
        (g["index"], g["uuid"], g["name"], g["minor_number"], g["pci"]["bus_id"], g["memory"]["total"], g["numa_node"])
        for g in node.profile["gpus"]
    ]


def test_dgx_display_devices_are_skipped_and_indices_are_not_renumbered(mock_nvml, tmp_path):
    profile = copy.deepcopy(mock_nvml.use("h100-sxm-8").profile)
    profile["gpus"][2]["name"] = "DGX Display"
    mock_nvml.use(profile)
    inventory = discover(sysfs_root=tmp_path)
    assert [g.index for g in inventory.gpus] == [0, 1, 3, 4, 5, 6, 7]
    assert inventory.skipped == ("2:DGX Display",)


def test_a_missing_sysfs_entry_means_no_numa_affinity(mock_nvml, tmp_path):
    mock_nvml.use("h100-sxm-8")
    assert {g.numa_node for g in discover(sysfs_root=tmp_path / "empty").gpus} == {None}


def test_a_negative_sysfs_numa_node_means_no_numa_affinity(mock_nvml, tmp_path):
    node = mock_nvml.use("t4-1")
    node.write_sysfs(tmp_path)  # the T4 profile has no NUMA node: sysfs says -1
    bus = sysfs_bus_id(node.profile["gpus"][0]["pci"]["bus_id"])
    assert (tmp_path / "bus/pci/devices" / bus / "numa_node").read_text().strip() == "-1"
    assert discover(sysfs_root=tmp_path).gpus[0].numa_node is None


def test_mig_mode_is_reported_per_gpu(mock_nvml, tmp_path):
    node = mock_nvml.use("a100-mig-8")
    expected = [bool(g.get("mig", {}).get("current")) for g in node.profile["gpus"]]
    assert [g.mig_enabled for g in discover(sysfs_root=tmp_path).gpus] == expected
    assert any(expected) and not all(expected)


# --------------------------------------------------------------------------- MIG devices


def mig_gpus(node):
    return [g for g in node.profile["gpus"] if g.get("mig", {}).get("current")]


def test_mig_devices_are_listed_under_their_gpu_with_nvmls_attributes(mock_nvml, tmp_path):
    node = mock_nvml.use("a100-mig-8")
    inventory = discover(host=HostRoot(root=tmp_path))
    assert {g.index: [(m.index, m.uuid, m.gpu_instance, m.compute_instance, m.memory_total) for m in g.mig_devices]
            for g in inventory.gpus if g.mig_devices} == {
        g["index"]: [(m["index"], m["uuid"], m["gpu_instance_id"], m["compute_instance_id"], m["memory"]["total"])
                     for m in g["mig_devices"]]
        for g in mig_gpus(node)
    }


@pytest.mark.parametrize("profile", ["a100-mig-8", "h100-mig-8", "h200-mig-8"])
def test_mig_profiles_are_named_from_their_instance_profiles_as_nvidia_names_them(mock_nvml, tmp_path, profile):
    node = mock_nvml.use(profile)
    inventory = discover(host=HostRoot(root=tmp_path))
    assert [m.profile for g in inventory.gpus for m in g.mig_devices] == [
        m["profile"] for g in mig_gpus(node) for m in g["mig_devices"]
    ]


def test_without_instance_profiles_a_mig_device_is_named_from_its_slices_without_extras(mock_nvml, tmp_path):
    node = mock_nvml.use("h100-mig-8")
    node.control.fail("nvmlDeviceGetGpuInstanceById", 4, "NVML_ERROR_NOT_SUPPORTED")
    gpu = discover(host=HostRoot(root=tmp_path)).gpus[4]
    assert ([m.profile for m in gpu.mig_devices], gpu.error) == (["2g.20gb", "1g.20gb", "1g.20gb", "1g.10gb"], None)


def test_an_instance_profile_query_failing_otherwise_leaves_the_device_out_and_says_why(mock_nvml, tmp_path):
    node = mock_nvml.use("h100-mig-8")
    node.control.fail("nvmlGpuInstanceGetInfo", 7, "NVML_ERROR_UNKNOWN")
    gpu = discover(host=HostRoot(root=tmp_path)).gpus[7]
    assert (gpu.mig_devices, gpu.error) == ((), "MIG device 0 profile: Unknown Error")


def test_a_re_layout_is_seen_by_the_next_discovery(mock_nvml, tmp_path):
    node = mock_nvml.use("h100-mig-8")
    node.control.mig(7, devices=["3g.40gb", "3g.40gb"])
    assert [m.profile for m in discover(host=HostRoot(root=tmp_path)).gpus[7].mig_devices] == ["3g.40gb", "3g.40gb"]


def test_a_gpu_whose_mig_mode_is_only_pending_has_no_mig_devices(mock_nvml, tmp_path):
    mock_nvml.use("h100-mig-8")  # GPU 2: MIG off, enable pending
    gpu = discover(host=HostRoot(root=tmp_path)).gpus[2]
    assert (gpu.mig_enabled, gpu.mig_devices) == (False, ())


def test_gpus_with_mig_off_have_no_mig_devices(mock_nvml, tmp_path):
    mock_nvml.use("a100-mig-8")
    assert [g.mig_devices for g in discover(host=HostRoot(root=tmp_path)).gpus[:4]] == [()] * 4


def test_an_empty_mig_slot_is_skipped_and_the_slots_index_kept(mock_nvml, tmp_path):
    profile = copy.deepcopy(mock_nvml.use("a100-mig-8").profile)
    profile["gpus"][6]["mig_devices"][1]["index"] = 4  # slots 1-3 empty
    mock_nvml.use(profile)
    gpu = discover(host=HostRoot(root=tmp_path)).gpus[6]
    assert ([m.index for m in gpu.mig_devices], gpu.error) == ([0, 4], None)


def test_capability_minors_are_read_from_proc_under_the_host_root(mock_nvml, tmp_path):
    node = mock_nvml.use("a100-mig-8")
    node.write_procfs(tmp_path / "proc")
    gpu = discover(host=HostRoot(root=tmp_path)).gpus[5]
    assert [m.cap_minors for m in gpu.mig_devices] == [
        (cap_minor(gpu.minor, m.gpu_instance), cap_minor(gpu.minor, m.gpu_instance, m.compute_instance))
        for m in gpu.mig_devices
    ]
    assert {m.gpu_instance for m in gpu.mig_devices} == {3, 4, 5, 13}


def test_capability_minors_follow_a_re_layout(mock_nvml, tmp_path):
    node = mock_nvml.use("h100-mig-8")
    node.write_procfs(tmp_path / "proc")
    node.control.mig(7, devices=["3g.40gb", "3g.40gb"], procfs=tmp_path / "proc")
    gpu = discover(host=HostRoot(root=tmp_path)).gpus[7]
    assert [m.cap_minors for m in gpu.mig_devices] == [
        (cap_minor(gpu.minor, 1), cap_minor(gpu.minor, 1, 0)), (cap_minor(gpu.minor, 2), cap_minor(gpu.minor, 2, 0))
    ]


def test_mig_devices_without_capability_files_get_no_minors(mock_nvml, tmp_path):
    mock_nvml.use("a100-mig-8")
    gpu = discover(host=HostRoot(root=tmp_path)).gpus[5]
    assert ({m.cap_minors for m in gpu.mig_devices}, gpu.error) == ({()}, None)


def test_a_host_root_also_locates_sysfs(mock_nvml, tmp_path):
    node = mock_nvml.use("a100-mig-8")
    node.write_sysfs(tmp_path / "sys")
    assert [g.numa_node for g in discover(host=HostRoot(root=tmp_path)).gpus] == [
        g["numa_node"] for g in node.profile["gpus"]
    ]


def test_a_failing_mig_query_marks_the_parent_and_leaves_that_mig_device_out(mock_nvml, tmp_path):
    node = mock_nvml.use("a100-mig-8")
    node.control.fail("nvmlDeviceGetGpuInstanceId", 5, "NVML_ERROR_UNKNOWN", count=1)
    gpu = discover(host=HostRoot(root=tmp_path)).gpus[5]
    assert ([m.index for m in gpu.mig_devices], gpu.error) == (
        [1, 2, 3], "MIG device 0 GPU instance id: Unknown Error"
    )


def test_a_failing_mig_query_leaves_the_other_gpus_intact(mock_nvml, tmp_path):
    node = mock_nvml.use("a100-mig-8")
    intact = [(g.index, g.mig_devices, g.error) for g in discover(host=HostRoot(root=tmp_path)).gpus if g.index != 5]
    node.control.fail("nvmlDeviceGetAttributes", 5, "NVML_ERROR_UNKNOWN")
    assert [(g.index, g.mig_devices, g.error) for g in discover(host=HostRoot(root=tmp_path)).gpus
            if g.index != 5] == intact


def test_a_mig_slot_lookup_failing_otherwise_than_empty_is_an_error(mock_nvml, tmp_path):
    node = mock_nvml.use("a100-mig-8")
    node.control.fail("nvmlDeviceGetMigDeviceHandleByIndex", 6, "NVML_ERROR_UNKNOWN", count=1)
    gpu = discover(host=HostRoot(root=tmp_path)).gpus[6]
    assert ([m.index for m in gpu.mig_devices], gpu.error) == ([1], "MIG device 0: Unknown Error")


def test_a_gpu_lost_while_its_mig_devices_are_read_is_not_asked_for_further_slots(mock_nvml, tmp_path):
    node = mock_nvml.use("a100-mig-8")
    node.control.fail("nvmlDeviceGetMigDeviceHandleByIndex", 4, LOST)
    gpu = discover(host=HostRoot(root=tmp_path)).gpus[4]
    assert (gpu.mig_devices, gpu.error) == ((), "MIG device 0: GPU is lost")  # slots 1-6 would add their own


def test_a_mig_device_whose_profile_cannot_be_named_is_left_out_and_said_why(mock_nvml, tmp_path):
    node = mock_nvml.use("a100-mig-8")
    node.control.fail("nvmlDeviceGetMemoryInfo", 7, "NVML_ERROR_NOT_SUPPORTED")  # the GPU's total is unknown
    gpu = discover(host=HostRoot(root=tmp_path)).gpus[7]
    assert gpu.mig_devices == ()
    assert gpu.error == (
        "MIG device 0 profile: the GPU's total memory must be positive to name a MIG profile, got 0; "
        "MIG device 1 profile: the GPU's total memory must be positive to name a MIG profile, got 0"
    )


def test_mig_devices_of_a_gpu_in_error_start_unhealthy(mock_nvml, tmp_path):
    node = mock_nvml.use("a100-mig-8")
    node.control.fail("nvmlDeviceGetGpuInstanceId", 5, "NVML_ERROR_UNKNOWN", count=1)
    inventory = discover(host=HostRoot(root=tmp_path))
    devices = [d for ds in plan_devices(inventory, ResourceNaming("mixed", "nvidia.com/gpu")).resources.values()
               for d in ds]
    assert set(inventory.unhealthy_at_start(devices)) == {m["uuid"] for m in node.profile["gpus"][5]["mig_devices"][1:]}


# --------------------------------------------------------------------------- per-GPU errors


def test_a_gpu_that_cannot_be_looked_up_is_left_out_and_named_as_unidentified(mock_nvml, tmp_path):
    node = mock_nvml.use("h100-sxm-8")
    node.control.lose(3)
    inventory = discover(sysfs_root=tmp_path)
    assert [g.index for g in inventory.gpus] == [0, 1, 2, 4, 5, 6, 7]
    assert inventory.unidentified == ("index 3: GPU is lost",)


def test_a_lost_gpu_leaves_the_other_seven_intact(mock_nvml, tmp_path):
    node = mock_nvml.use("h100-sxm-8")
    intact = attributes(g for g in discover(sysfs_root=tmp_path).gpus if g.index != 3)
    node.control.lose(3)
    assert attributes(discover(sysfs_root=tmp_path).gpus) == intact


def test_a_gpu_left_out_still_counts_as_expected(mock_nvml, tmp_path):
    node = mock_nvml.use("h100-sxm-8")
    node.control.lose(3)
    inventory = discover(sysfs_root=tmp_path)
    assert (len(inventory.gpus), inventory.expected) == (7, 8)


def test_a_gpu_whose_uuid_query_fails_is_unidentified(mock_nvml, tmp_path):
    node = mock_nvml.use("h100-sxm-8")
    node.control.fail("nvmlDeviceGetUUID", 3, LOST)
    assert discover(sysfs_root=tmp_path).unidentified == ("index 3: UUID: GPU is lost",)


def test_an_unidentified_gpu_is_logged_as_a_warning(mock_nvml, tmp_path, caplog):
    node = mock_nvml.use("h100-sxm-8")
    node.control.lose(3)
    discover(sysfs_root=tmp_path)
    assert [(r.levelname, r.getMessage()) for r in caplog.records if "index 3" in r.getMessage()] == [
        ("WARNING", "GPU at NVML index 3 left out, NVML cannot identify it: GPU is lost")
    ]


def test_a_lost_gpu_that_can_still_be_identified_is_listed_with_its_error(mock_nvml, tmp_path):
    node = mock_nvml.use("h100-sxm-8")
    lose_all_but_identity(node, 3)
    gpu = discover(sysfs_root=tmp_path).gpus[3]
    assert (gpu.index, gpu.uuid, gpu.name, gpu.minor, gpu.pci_bus_id, gpu.numa_node, gpu.error) == (
        3, node.profile["gpus"][3]["uuid"], "unknown", None, "", None, "name: GPU is lost"
    )


def test_a_gpu_whose_minor_number_query_fails_is_returned_with_an_error(mock_nvml, tmp_path):
    node = mock_nvml.use("h100-sxm-8")
    node.control.fail("nvmlDeviceGetMinorNumber", 3, "NVML_ERROR_UNKNOWN")
    gpu = discover(sysfs_root=tmp_path).gpus[3]
    assert (gpu.uuid, gpu.name, gpu.minor, gpu.error) == (
        node.profile["gpus"][3]["uuid"], node.profile["gpus"][3]["name"], None, "minor number: Unknown Error"
    )


def test_a_gpu_without_a_minor_number_gets_no_device_node(mock_nvml, tmp_path):
    node = mock_nvml.use("h100-sxm-8")
    node.control.fail("nvmlDeviceGetMinorNumber", 3, "NVML_ERROR_UNKNOWN")
    by_id = {d.id: d for d in discover(sysfs_root=tmp_path).devices()}
    assert by_id[node.profile["gpus"][3]["uuid"]].dev_paths == ()


def test_every_failing_required_query_is_named_in_the_error(mock_nvml, tmp_path):
    node = mock_nvml.use("h100-sxm-8")
    node.control.fail("nvmlDeviceGetPciInfo", 3, "NVML_ERROR_UNKNOWN")
    node.control.fail("nvmlDeviceGetName", 3, "NVML_ERROR_NO_PERMISSION")
    assert discover(sysfs_root=tmp_path).gpus[3].error == "name: Insufficient Permissions; PCI info: Unknown Error"


def test_an_optional_query_answering_gpu_is_lost_puts_the_gpu_in_error(mock_nvml, tmp_path):
    node = mock_nvml.use("h100-sxm-8")
    node.control.fail("nvmlDeviceGetMemoryInfo", 3, LOST)
    assert discover(sysfs_root=tmp_path).gpus[3].error == "memory info: GPU is lost"


def test_an_optional_query_that_is_not_supported_leaves_the_gpu_without_error(mock_nvml, tmp_path):
    node = mock_nvml.use("h100-sxm-8")
    node.control.fail("nvmlDeviceGetCudaComputeCapability", 3, "NVML_ERROR_NOT_SUPPORTED")
    gpu = discover(sysfs_root=tmp_path).gpus[3]
    assert (gpu.compute_capability, gpu.error) == (None, None)


def test_unhealthy_at_start_names_the_devices_of_gpus_in_error(mock_nvml, tmp_path):
    node = mock_nvml.use("h100-sxm-8")
    node.control.fail("nvmlDeviceGetMinorNumber", 5, "NVML_ERROR_UNKNOWN")
    lose_all_but_identity(node, 2)
    uuids = [g["uuid"] for g in node.profile["gpus"]]
    assert discover(sysfs_root=tmp_path).unhealthy_at_start() == tuple(sorted([uuids[2], uuids[5]]))


def test_expected_leaves_out_skipped_display_gpus(mock_nvml, tmp_path):
    profile = copy.deepcopy(mock_nvml.use("h100-sxm-8").profile)
    profile["gpus"][2]["name"] = "DGX Display"
    mock_nvml.use(profile).control.lose(5)
    inventory = discover(sysfs_root=tmp_path)
    assert (len(inventory.gpus), inventory.expected) == (6, 7)


# --------------------------------------------------------------------------- nvdp devices


def test_nvdp_devices_marks_a_gpu_in_error_and_says_why(mock_nvml, tmp_path, capsys):
    node = mock_nvml.use("h100-sxm-8")
    node.control.fail("nvmlDeviceGetMinorNumber", 3, "NVML_ERROR_UNKNOWN")
    assert main(["devices", "--sysfs-root", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    uuid = node.profile["gpus"][3]["uuid"]
    assert lines[1].split()[-1] == "STATE"  # lines[0] is the driver summary
    assert [line.split()[-1] for line in lines[2:10]] == ["ok"] * 3 + ["error"] + ["ok"] * 4
    assert f"error GPU 3 ({uuid}): minor number: Unknown Error (advertised Unhealthy)" in lines


def test_nvdp_devices_counts_and_names_an_unidentified_gpu(mock_nvml, tmp_path, capsys):
    mock_nvml.use("h100-sxm-8").control.lose(3)
    assert main(["devices", "--sysfs-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith(", 7 of 8 GPU(s)")
    assert "unidentified GPU at index 3: GPU is lost (not advertised)" in out.splitlines()


def test_nvdp_devices_json_carries_errors_and_unidentified_gpus(mock_nvml, tmp_path, capsys):
    node = mock_nvml.use("h100-sxm-8")
    node.control.lose(3)
    node.control.fail("nvmlDeviceGetMinorNumber", 5, "NVML_ERROR_UNKNOWN")
    assert main(["devices", "--json", "--sysfs-root", str(tmp_path)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [(d["index"], d["error"]) for d in document["devices"] if d["error"]] == [(5, "minor number: Unknown Error")]
    assert (document["unidentified"], document["expected"]) == (["index 3: GPU is lost"], 8)


def test_nvdp_devices_exits_69_when_nvml_is_unavailable(mock_nvml, capsys):
    mock_nvml.use("driver-not-loaded")
    assert main(["devices"]) == 69
    assert "the NVIDIA kernel module is not loaded" in capsys.readouterr().err


def test_nvdp_devices_rejects_dev_root_which_it_never_used(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["devices", "--dev-root", "/dev"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --dev-root" in capsys.readouterr().err
