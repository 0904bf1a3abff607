"""effective_summary: the one-line effective configuration for the start-up and reload log."""

from __future__ import annotations

import tomllib

from nvdp_node.config import Config, config_keys, parse_config
from nvdp_node.config.render import effective_summary


def test_the_summary_is_one_line_with_every_leaf_key_in_file_order() -> None:
    summary = effective_summary(Config())
    assert "\n" not in summary
    assert [item.partition("=")[0] for item in summary.split(" ")] == config_keys()


def test_the_summary_quotes_values_as_toml_does() -> None:
    config = parse_config({"resource_name": "example.com/gpu", "health": {"ignored_xids": [79, 48], "recovery": True}})
    items = dict(item.split("=", 1) for item in effective_summary(config).split(" "))
    assert items["resource_name"] == '"example.com/gpu"'
    assert items["health.ignored_xids"] == "[48,79]"
    assert items["health.recovery"] == "true"
    assert items["health.recovery_quiet_period"] == "600"
    assert items["kubelet.kubelet_socket"] == '""'


def test_each_summary_value_reads_back_as_the_configured_value() -> None:
    config = parse_config({"plugin": {"device_list_strategy": ["volume-mounts", "envvar"]}})
    items = dict(item.split("=", 1) for item in effective_summary(config).split(" "))
    assert tomllib.loads(f"v = {items['plugin.device_list_strategy']}")["v"] == ["volume-mounts", "envvar"]
