"""GetPreferredAllocation over real gRPC from a running ``nvdp serve`` on linked mock nodes."""

from __future__ import annotations

import signal

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
    daemon.wait_log("read the links of")  # on a thread once serving; until then whole GPUs pack by NUMA
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


def test_links_are_read_once_after_start_and_never_during_a_request(nvdp_daemon, kubelet_peer, mock_nvml, tmp_path):
    node = mock_nvml.use("dgx1-v100-8")
    serve(nvdp_daemon, kubelet_peer, node, tmp_path)
    ids = in_index_order(profile_table("dgx1-v100-8")[1])
    before = [c for c in node.calls() if c in LINK_CALLS]
    for size in range(1, 9):
        preferred(kubelet_peer, ids, [], size)
    assert "nvmlDeviceGetTopologyCommonAncestor" in before
    assert [c for c in node.calls() if c in LINK_CALLS] == before


def test_a_reload_reads_the_links_again_and_keeps_preferring_the_best_set(
    nvdp_daemon, kubelet_peer, mock_nvml, tmp_path
):
    node = mock_nvml.use("dgx1-v100-8")
    daemon = serve(nvdp_daemon, kubelet_peer, node, tmp_path)
    daemon.signal(signal.SIGHUP)
    daemon.wait_log_count("read the links of", 2)
    table, devices = profile_table("dgx1-v100-8")
    ids = in_index_order(devices)
    assert preferred(kubelet_peer, ids, [ids[0]], 2) == brute_force(table, devices, ids, [ids[0]], 2)


def test_the_mig_layout_check_reuses_the_links_instead_of_scanning_them(
    nvdp_daemon, kubelet_peer, mock_nvml, tmp_path
):
    node = mock_nvml.use("a100-mig-8")
    node.write_sysfs(tmp_path / "sys")
    config = '[plugin]\nmig_strategy = "mixed"\nmig_check_interval = 1\n'
    daemon = nvdp_daemon(kubelet_peer.plugin_dir, env={**clean_env(), **node.env()}, sysfs_root=tmp_path / "sys",
                         config=config)
    daemon.wait_log("read the links of")
    scans = node.calls().count("nvmlDeviceGetTopologyCommonAncestor")
    node.control.mig(7, mode=1, devices=["7g.40gb"])
    daemon.wait_log("MIG layout changed")  # the layout check ran, and so did the apply it led to
    assert node.calls().count("nvmlDeviceGetTopologyCommonAncestor") == scans
    assert daemon.log().count("read the links of") == 1
