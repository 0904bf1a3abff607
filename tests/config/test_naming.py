"""naming_from_config: what the config says about resource names, as the domain planner takes it."""

from __future__ import annotations

import pytest

from nvdp_node.config import Config, parse_config
from nvdp_node.config import naming_from_config
from nvdp_node.domain.resources import NamePattern, ResourceNaming


def test_the_defaults_name_every_gpu_resource_name_without_mig() -> None:
    assert naming_from_config(Config()) == ResourceNaming(strategy="none", resource_name="nvidia.com/gpu")


@pytest.mark.parametrize("strategy", ["none", "single", "mixed"])
def test_each_mig_strategy_reaches_the_planner(strategy: str) -> None:
    assert naming_from_config(parse_config({"plugin": {"mig_strategy": strategy}})).strategy == strategy


def test_patterns_reach_the_planner_in_file_order_with_qualified_names() -> None:
    config = parse_config(
        {
            "resource_name": "example.com/gpu",
            "plugin": {"mig_strategy": "mixed"},
            "resources": {
                "gpus": [{"pattern": "*A100*", "name": "a100"}, {"pattern": "*", "name": "example.com/gpu"}],
                "mig": [{"pattern": "1g.*", "name": "mig-small"}],
            },
        }
    )
    assert naming_from_config(config) == ResourceNaming(
        strategy="mixed",
        resource_name="example.com/gpu",
        gpu_patterns=(NamePattern("*A100*", "nvidia.com/a100"), NamePattern("*", "example.com/gpu")),
        mig_patterns=(NamePattern("1g.*", "nvidia.com/mig-small"),),
    )
