"""[metrics] and [labels]: the listen address is validated, and loopback is the only default reach (issue 16)."""

from __future__ import annotations

import pytest

from nvdp_node.config import ConfigError, parse_config
from nvdp_node.domain.listen_address import ListenError, is_loopback, parse_listen


@pytest.mark.parametrize(("text", "parsed"), [
    ("127.0.0.1:9400", ("127.0.0.1", 9400)), ("[::1]:9400", ("::1", 9400)), ("localhost:1", ("localhost", 1)),
    ("0.0.0.0:65535", ("0.0.0.0", 65535)),
], ids=["ipv4", "ipv6", "localhost", "any"])
def test_a_listen_address_is_an_ip_literal_and_a_port(text, parsed):
    assert parse_listen(text) == parsed


@pytest.mark.parametrize(("text", "why"), [
    ("9400", "expected <address>:<port>"), ("::1:9400", "in brackets"), ("node1:9400", "not an IP address"),
    ("127.0.0.1:0", "not a port number"), ("127.0.0.1:http", "not a port number"),
], ids=["no-address", "bare-ipv6", "a-name", "port-0", "port-name"])
def test_a_bad_listen_address_says_what_is_wrong(text, why):
    with pytest.raises(ListenError, match=why):
        parse_listen(text)


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.3.4.5", True), ("::1", True),
                                                ("localhost", True), ("0.0.0.0", False), ("::", False),
                                                ("192.168.1.2", False)])
def test_loopback_is_127_8_and_ipv6_1(host, loopback):
    assert is_loopback(host) is loopback


def test_a_non_loopback_listen_without_allow_remote_is_a_config_error_naming_the_fix():
    with pytest.raises(ConfigError) as caught:
        parse_config({"metrics": {"listen": "0.0.0.0:9400"}})
    line = str(caught.value.lines[0])
    assert line.startswith("metrics.listen:") and "metrics.allow_remote = true" in line and '"0.0.0.0:9400"' in line


def test_allow_remote_lets_a_non_loopback_listen_through():
    assert parse_config({"metrics": {"listen": "0.0.0.0:9400", "allow_remote": True}}).metrics.listen == "0.0.0.0:9400"


def test_the_textfile_and_the_labels_are_on_by_default_and_the_endpoint_off():
    config = parse_config({})
    assert (config.metrics.textfile, config.metrics.listen, config.labels.enabled) == (
        "/var/lib/prometheus/node-exporter/nvdp.prom", "", True)


def test_a_relative_labels_path_is_refused():
    with pytest.raises(ConfigError, match="labels.path"):
        parse_config({"labels": {"path": "features.d/nvdp"}})
