"""The GPUs' link table read through the real pynvml from the mock NVML, failures included."""

from __future__ import annotations

import logging

import pytest

from nvdp_node.adapters.nvml import discover
from nvdp_node.domain.topology import PairLink, PcieLevel
from tests.daemon.test_discovery import lose_all_but_identity
from tests.topology.tables import TOPOLOGY_PROFILES, profile_table


@pytest.mark.parametrize("profile", TOPOLOGY_PROFILES)
def test_discovery_reads_the_link_table_the_profile_describes(mock_nvml, tmp_path, profile):
    mock_nvml.use(profile)
    assert discover(sysfs_root=tmp_path, links=True).links == profile_table(profile)[0]


def test_a_gpu_whose_link_queries_fail_makes_only_its_pairs_unknown(mock_nvml, tmp_path, caplog):
    node = mock_nvml.use("a100-pcie-8")
    uuids = [g["uuid"] for g in node.profile["gpus"]]
    for fn in ("nvmlDeviceGetTopologyCommonAncestor", "nvmlDeviceGetNvLinkState"):
        node.control.fail(fn, 1, "NVML_ERROR_UNKNOWN")
    with caplog.at_level(logging.WARNING, logger="nvdp_node.adapters.nvml_topology"):
        links = discover(sysfs_root=tmp_path, links=True).links
    # GPU 0 still sees its bridge to GPU 1; GPU 1's own answers are unknown.
    assert links.link(uuids[0], uuids[1]) == PairLink(None, 12)
    assert links.link(uuids[1], uuids[2]) == PairLink(None, 0)
    assert links.link(uuids[2], uuids[3]) == PairLink(PcieLevel.NODE, 12)
    assert "GPU links partly unknown" in caplog.text and "Unknown Error" in caplog.text


def test_a_lost_gpu_has_no_links_and_discovery_goes_on(mock_nvml, tmp_path):
    node = mock_nvml.use("dgx1-v100-8")
    uuids = [g["uuid"] for g in node.profile["gpus"]]
    lose_all_but_identity(node, 3)
    inventory = discover(sysfs_root=tmp_path, links=True)
    assert [g.uuid for g in inventory.gpus] == uuids and inventory.gpus[3].error
    # Its PCI bus id is unknown too, so not even the NVLinks other GPUs see ending at it count.
    assert {inventory.links.link(uuids[3], u) for u in uuids if u != uuids[3]} == {PairLink(None, 0)}
    assert inventory.links.link(uuids[0], uuids[1]) == PairLink(PcieLevel.SINGLE, 1)
