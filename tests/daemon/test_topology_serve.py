"""GetPreferredAllocation over real gRPC from a running ``nvdp serve`` on linked mock nodes."""

from __future__ import annotations

import pytest

from tests.daemon.conftest import clean_env
from tests.topology.tables import brute_force, in_index_order, profile_table

GPU = "nvidia.com/gpu"
LINK_CALLS = {"nvmlDeviceGetTopologyCommonAncestor", "nvmlDeviceGetNvLinkState", "nvmlDeviceGetNvLinkRemotePciInfo_v2"}


def serve(nvdp_daemon, kubelet_peer, node, tmp_path):
    node.write_sysfs(tmp_path / "sys")
    daemon = nvdp_daemon(kubelet_peer.plugin_dir, env={**clean_env(), **node.env()}, sysfs_root=tmp_path / "sys",
                         config="")
    kubelet_peer.wait_registered(GPU)
    return daemon


def preferred(kubelet_peer, available, must, size):
    response = kubelet_peer.call_get_preferred_allocation(GPU, available, must, size)
    return list(response.container_responses[0].deviceIDs)


@pytest.mark.parametrize("profile", ["dgx1-v100-8", "a100-pcie-8", "l40s-4"])
def test_every_size_gets_the_best_linked_set(nvdp_daemon, kubelet_peer, mock_nvml, tmp_path, profile):
    node = mock_nvml.use(profile)
    serve(nvdp_daemon, kubelet_peer, node, tmp_path)
    table, devices = profile_table(profile)
    ids = in_index_order(devices)
    for size in range(1, len(ids) + 1):
        for must in ([], [ids[-1]]):
            if len(must) < size:
                assert preferred(kubelet_peer, ids, must, size) == brute_force(table, devices, ids, must, size)


def test_a_gpu_lost_before_start_is_skipped_and_the_others_still_get_the_best_set(
    nvdp_daemon, kubelet_peer, mock_nvml, tmp_path
):
    node = mock_nvml.use("dgx1-v100-8")
    node.control.lose(0)
    serve(nvdp_daemon, kubelet_peer, node, tmp_path)
    table, devices = profile_table("dgx1-v100-8")
    ids = in_index_order(devices)
    assert preferred(kubelet_peer, ids, [], 4) == brute_force(table, devices, ids[1:], (), 4)


def test_links_are_read_at_start_and_never_during_a_request(nvdp_daemon, kubelet_peer, mock_nvml, tmp_path):
    node = mock_nvml.use("dgx1-v100-8")
    serve(nvdp_daemon, kubelet_peer, node, tmp_path)
    ids = in_index_order(profile_table("dgx1-v100-8")[1])
    before = [c for c in node.calls() if c in LINK_CALLS]
    for size in range(1, 9):
        preferred(kubelet_peer, ids, [], size)
    assert "nvmlDeviceGetTopologyCommonAncestor" in before
    assert [c for c in node.calls() if c in LINK_CALLS] == before
