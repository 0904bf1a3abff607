"""Discovery through the real pynvml against the mock NVML, with sysfs fixture trees."""

from __future__ import annotations

import copy

from nvdp_node.adapters.nvml import discover, sysfs_bus_id


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
