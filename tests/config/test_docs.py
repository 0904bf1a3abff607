"""The shipped etc/nvdp/config.toml and docs/configuration.md cover every schema key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from nvdp_node.config import Config, config_keys, env_var_name
from nvdp_node.config.render import render_default

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "etc" / "nvdp" / "config.toml"
DOCS = ROOT / "docs" / "configuration.md"


def test_shipped_file_is_what_config_init_prints() -> None:
    assert SHIPPED.read_text() == render_default(), "regenerate with: nvdp config init > etc/nvdp/config.toml"


def test_shipped_file_means_the_defaults() -> None:
    assert Config.model_validate(tomllib.loads(SHIPPED.read_text())) == Config()


def test_shipped_file_lists_every_key_with_its_default() -> None:
    # Uncommenting every "#key = value" line must give exactly the defaults, key for key.
    uncommented = re.sub(r"(?m)^#(\w+ = )", r"\1", SHIPPED.read_text())
    assert tomllib.loads(uncommented) == Config().model_dump(mode="json")


@pytest.mark.parametrize("key", config_keys())
def test_shipped_file_explains_each_key(key: str) -> None:
    section, _, leaf = key.rpartition(".")
    text = SHIPPED.read_text()
    if section:  # the same leaf name may be in two tables (sharing.time_slicing, sharing.mps)
        text = text[text.index(f"\n[{section}]\n") :]
        end = text.find("\n[", 1)
        text = text if end < 0 else text[:end]
    block = re.search(rf"((?:^# .*\n)+)#?{leaf} = ", text, re.MULTILINE)
    assert block, f"{key} has no comment above it"
    if key != "version":
        assert f"# env: {env_var_name(key)}\n" in block.group(1)


@pytest.mark.parametrize("key", config_keys())
def test_docs_describe_each_key_and_its_environment_variable(key: str) -> None:
    text = DOCS.read_text()
    assert f"`{key}`" in text
    if key != "version":
        assert f"`{env_var_name(key)}`" in text


@pytest.mark.parametrize(
    "fact",
    ["78", "EX_CONFIG", "NVDP_CONFIG", "DP_DISABLE_HEALTHCHECKS", "DP_ENABLE_HEALTHCHECKS", "not supported yet", "did you mean"],
)
def test_docs_cover_exit_code_env_and_errors(fact: str) -> None:
    assert fact in DOCS.read_text()
