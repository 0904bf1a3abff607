"""`nvdp check`'s config checks: config.valid and config.permissions on fixture hosts."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from nvdp_node.app import check_cli

NOBODY = 65534


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in [n for n in os.environ if n.startswith(("NVDP_", "DP_"))]:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def gpu_node(host, mock_nvml):
    mock_nvml.use("h100-sxm-8").write_devfs(host.path("/dev"))
    return host.healthy()


def checks_of(node, capsys) -> tuple[int, dict[str, dict]]:
    parser = argparse.ArgumentParser(prog="nvdp")
    parser.add_argument("--config", type=Path)
    check_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["check", "--json", "--root", str(node.root)])
    code = args.func(args)
    return code, {c["id"]: c for c in json.loads(capsys.readouterr().out)["checks"]}


def test_without_a_config_file_the_permissions_check_is_skipped(gpu_node, capsys):
    code, checks = checks_of(gpu_node, capsys)
    assert code == 0 and checks["config.permissions"]["status"] == "skipped"


def test_a_root_owned_config_file_passes_the_permissions_check(gpu_node, capsys):
    path = gpu_node.write("/etc/nvdp/config.toml", "version = 1\n")
    path.chmod(0o644)
    path.parent.chmod(0o755)
    _, checks = checks_of(gpu_node, capsys)
    assert checks["config.permissions"]["status"] == "ok"
    assert checks["config.permissions"]["evidence"] == [f"{path} and its directory are owned by root and writable only by root"]


def test_a_world_writable_config_file_is_an_error_with_the_fix(gpu_node, capsys):
    path = gpu_node.write("/etc/nvdp/config.toml", "version = 1\n")
    path.chmod(0o666)
    code, checks = checks_of(gpu_node, capsys)
    permissions = checks["config.permissions"]
    assert code == 1 and permissions["status"] == "error"
    assert permissions["evidence"][0].startswith(f"config file {path} can be changed by users other than root (mode 0666")
    assert permissions["evidence"][0].endswith(f"fix with: chown root:root {path} && chmod 644 {path}")
    assert "nvdp serve refuses" in permissions["evidence"][-1]
    assert checks["config.valid"]["evidence"] == [f"{path}: configuration is valid"]  # said once, by the right check


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_config_directory_owned_by_another_user_is_an_error(gpu_node, capsys):
    path = gpu_node.write("/etc/nvdp/config.toml", "version = 1\n")
    os.chown(path.parent, NOBODY, NOBODY)
    _, checks = checks_of(gpu_node, capsys)
    assert checks["config.permissions"]["status"] == "error"
    assert checks["config.permissions"]["evidence"][0].startswith(f"directory {path.parent} holding {path}")


def test_an_invalid_world_writable_config_reports_both_problems(gpu_node, capsys):
    gpu_node.layer("nvdp-config-invalid")
    path = gpu_node.path("/etc/nvdp/config.toml")
    path.chmod(0o666)
    code, checks = checks_of(gpu_node, capsys)
    assert code == 78
    assert checks["config.valid"]["status"] == "error" and checks["config.permissions"]["status"] == "error"
