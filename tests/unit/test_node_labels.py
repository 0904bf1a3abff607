"""Node labels per mock profile, with gpu-feature-discovery's names and values (issue 16).

The inventory comes from real discovery (pynvml against the mock NVML), the
labels from the pure ``node_labels``; each row lists what GFD v0.20.0 writes
for that node (``internal/lm``), only the keys nvdp can know.
"""

from __future__ import annotations

import pytest

from nvdp_node.adapters.nvml import discover
from nvdp_node.domain.devices import NodeInventory
from nvdp_node.domain.labels import arch_family, features_file, node_labels, sanitise
from nvdp_node.domain.sharing import SharedResource, Sharing

VERSIONS = {
    "nvidia.com/cuda.driver.major": "550", "nvidia.com/cuda.driver.minor": "90", "nvidia.com/cuda.driver.rev": "07",
    "nvidia.com/cuda.runtime.major": "12", "nvidia.com/cuda.runtime.minor": "4",
    "nvidia.com/cuda.driver-version.full": "550.90.07", "nvidia.com/cuda.runtime-version.full": "12.4",
}

TABLE = [
    ("h100-sxm-8", "none", {
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.count": "8",
        "nvidia.com/gpu.memory": "81559", "nvidia.com/gpu.family": "hopper", "nvidia.com/gpu.compute.major": "9",
        "nvidia.com/gpu.compute.minor": "0", "nvidia.com/gpu.replicas": "1",
        "nvidia.com/gpu.sharing-strategy": "none", "nvidia.com/mps.capable": "false",
    }),
    ("t4-1", "none", {
        "nvidia.com/gpu.product": "Tesla-T4", "nvidia.com/gpu.count": "1", "nvidia.com/gpu.memory": "15360",
        "nvidia.com/gpu.family": "turing", "nvidia.com/gpu.compute.major": "7", "nvidia.com/gpu.compute.minor": "5",
    }),
    ("a100-mig-8", "mixed", {
        "nvidia.com/mig.strategy": "mixed", "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB",
        "nvidia.com/gpu.family": "ampere", "nvidia.com/mig-1g.5gb.count": "8",
        "nvidia.com/mig-1g.5gb.product": "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", "nvidia.com/mig-1g.5gb.memory": "4864",
        "nvidia.com/mig-1g.5gb.replicas": "1", "nvidia.com/mig-3g.20gb.count": "3",
    }),
    ("a100-single-8", "single", {
        "nvidia.com/mig.strategy": "single", "nvidia.com/gpu.count": "56",
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", "nvidia.com/gpu.memory": "4864",
        "nvidia.com/gpu.family": "ampere",
    }),
    ("a100-mig-8", "single", {  # MIG next to whole GPUs and several profiles: upstream's INVALID labels
        "nvidia.com/mig.strategy": "single", "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB-MIG-INVALID",
        "nvidia.com/gpu.count": "0", "nvidia.com/gpu.memory": "0", "nvidia.com/gpu.sharing-strategy": "",
    }),
    ("h200-mig-8", "mixed", {
        "nvidia.com/gpu.product": "NVIDIA-H200", "nvidia.com/mig-1g.18gb.count": "8",
        "nvidia.com/mig-1g.18gb.me.count": "1", "nvidia.com/mig-1g.18gb.me.product": "NVIDIA-H200-MIG-1g.18gbme",
    }),
]


def inventory_of(mock_nvml, tmp_path, profile: str) -> NodeInventory:
    mock_nvml.use(profile)
    return discover(sysfs_root=tmp_path)


@pytest.mark.parametrize(("profile", "strategy", "expected"), TABLE,
                         ids=[f"{p}-{s}" for p, s, _ in TABLE])
def test_labels_match_what_gpu_feature_discovery_writes(mock_nvml, tmp_path, profile, strategy, expected):
    labels = node_labels(inventory_of(mock_nvml, tmp_path, profile), mig_strategy=strategy, sharing=None)
    assert {k: labels.get(k) for k in {**VERSIONS, **expected}} == {**VERSIONS, **expected}


def test_strategy_none_writes_no_mig_labels(mock_nvml, tmp_path):
    labels = node_labels(inventory_of(mock_nvml, tmp_path, "a100-mig-8"), mig_strategy="none", sharing=None)
    assert not [k for k in labels if k.startswith("nvidia.com/mig")]


def test_time_slicing_marks_the_product_shared_and_counts_replicas(mock_nvml, tmp_path):
    sharing = Sharing("time-slicing", (SharedResource("nvidia.com/gpu", 4),))
    labels = node_labels(inventory_of(mock_nvml, tmp_path, "h100-sxm-8"), mig_strategy="none", sharing=sharing)
    assert (labels["nvidia.com/gpu.product"], labels["nvidia.com/gpu.replicas"],
            labels["nvidia.com/gpu.sharing-strategy"]) == ("NVIDIA-H100-80GB-HBM3-SHARED", "4", "time-slicing")


def test_a_renamed_shared_resource_keeps_the_plain_product(mock_nvml, tmp_path):
    sharing = Sharing("mps", (SharedResource("nvidia.com/gpu", 2, rename=True),))
    labels = node_labels(inventory_of(mock_nvml, tmp_path, "h100-sxm-8"), mig_strategy="none", sharing=sharing)
    assert (labels["nvidia.com/gpu.product"], labels["nvidia.com/mps.capable"]) == ("NVIDIA-H100-80GB-HBM3", "true")


def test_a_node_without_gpus_gets_no_labels():
    assert node_labels(NodeInventory("550.90.07", "12.4", ()), mig_strategy="none", sharing=None) == {}


@pytest.mark.parametrize(("major", "minor", "family"), [
    (6, 0, "pascal"), (7, 0, "volta"), (7, 5, "turing"), (8, 0, "ampere"), (8, 9, "ada-lovelace"),
    (9, 0, "hopper"), (10, 0, "blackwell"), (12, 0, "blackwell"), (4, 0, "undefined"),
], ids=lambda v: str(v))
def test_the_family_follows_the_compute_capability(major, minor, family):
    assert arch_family(major, minor) == family


def test_sanitise_drops_odd_characters_and_joins_words_with_dashes():
    assert sanitise("NVIDIA  A100-SXM4 (40GB)+x") == "NVIDIA-A100-SXM4-40GBx"


def test_the_features_file_is_one_key_value_line_per_label():
    assert features_file({"nvidia.com/gpu.count": "8", "nvidia.com/gpu.family": "hopper"}) == (
        "nvidia.com/gpu.count=8\nnvidia.com/gpu.family=hopper\n")
