"""`nvdp config show|validate|init|import`, driven through a local argparse parser."""

from __future__ import annotations

import argparse
import os
import stat
import tomllib
from pathlib import Path

import pytest

from nvdp_node.app import config_cli
from nvdp_node.config import Config, load_config
from nvdp_node.config.render import render_default

UPSTREAM_YAML = """\
version: v1
flags:
  migStrategy: none
  failOnInitError: false
  plugin:
    deviceListStrategy: volume-mounts
sharing:
  timeSlicing:
    resources:
    - name: nvidia.com/gpu
      replicas: 4
      rename: gpu-shared
"""


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="nvdp")
    parser.add_argument("--config", type=Path)
    config_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("NVDP_", "DP_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NVDP_CONFIG", str(tmp_path / "absent.toml"))


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o644)
    return path


def test_show_prints_the_effective_config_as_toml(tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path, 'resource_name = "example.com/gpu"\n')
    monkeypatch.setenv("NVDP_HEALTH__ENABLED", "false")
    code, out, err = run(["--config", str(path), "config", "show"], capsys)
    assert code == 0
    shown = tomllib.loads(out)
    assert shown["resource_name"] == "example.com/gpu"
    assert shown["health"]["enabled"] is False
    assert Config.model_validate(shown) == load_config(path).config


def test_show_sources_says_where_each_value_came_from(tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path, 'resource_name = "example.com/gpu"\n')
    monkeypatch.setenv("NVDP_LOGGING__LEVEL", "debug")
    code, out, _ = run(["--config", str(path), "config", "show", "--sources"], capsys)
    assert code == 0
    assert 'resource_name = "example.com/gpu"  # file\n' in out
    assert 'level = "debug"  # env NVDP_LOGGING__LEVEL\n' in out
    assert 'socket_dir = "/var/lib/kubelet/device-plugins"  # default\n' in out
    assert tomllib.loads(out)["logging"]["level"] == "debug"


def test_show_without_a_file_prints_defaults_and_the_notice(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run(["config", "show"], capsys)
    assert code == 0
    assert Config.model_validate(tomllib.loads(out)) == Config()
    assert err == f"nvdp: no config file at {tmp_path / 'absent.toml'}, using defaults\n"


def test_show_with_an_invalid_config_exits_78(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path, "resource_name = 1\n")
    code, out, err = run(["--config", str(path), "config", "show"], capsys)
    assert (code, out) == (78, "")
    assert "resource_name: Input should be a valid string (got 1)" in err


def test_validate_accepts_a_good_file(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path, "version = 1\n[plugin]\ndevice_id_strategy = \"index\"\n")
    code, out, err = run(["config", "validate", str(path)], capsys)
    assert (code, out, err) == (0, f"{path}: configuration is valid\n", "")


def test_validate_lists_every_error_and_exits_78(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path, 'resourse_name = "x"\n[health]\nignored_xids = [0]\n')
    code, out, err = run(["config", "validate", str(path)], capsys)
    assert (code, out) == (78, "")
    assert err.splitlines() == [
        f"nvdp: invalid configuration in {path}:",
        "  health.ignored_xids[0]: Input should be greater than or equal to 1 (got 0)",
        "  resourse_name: unknown key (did you mean 'resource_name'?)",
    ]


def test_validate_reports_toml_syntax_errors_with_position(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path, "version = 1\nresource_name = nvidia.com/gpu\n")
    code, _, err = run(["config", "validate", str(path)], capsys)
    assert code == 78
    assert f"{path}:2:17: invalid TOML: Invalid value" in err


def test_validate_of_a_missing_explicit_file_fails(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(["config", "validate", str(tmp_path / "nope.toml")], capsys)
    assert code == 78
    assert err == f"nvdp: cannot validate {tmp_path / 'nope.toml'}: no such file\n"


def test_validate_uses_the_global_config_option(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path, "[logging]\nlevel = \"loud\"\n")
    code, _, err = run(["--config", str(path), "config", "validate"], capsys)
    assert code == 78 and "logging.level" in err


def test_validate_with_no_file_anywhere_passes_with_a_notice(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run(["config", "validate"], capsys)
    assert code == 0
    assert "no config file at" in err


def test_validate_consults_the_environment(tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path, "version = 1\n")
    monkeypatch.setenv("DP_DISABLE_HEALTHCHECKS", "xid")
    code, _, err = run(["config", "validate", str(path)], capsys)
    assert code == 78 and "DP_DISABLE_HEALTHCHECKS: 'xid' is not an XID" in err


def test_validate_reload_refuses_a_file_others_can_change(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path, "version = 1\n")
    path.chmod(0o666)
    assert run(["config", "validate", str(path)], capsys)[0] == 0
    code, out, err = run(["config", "validate", "--reload", str(path)], capsys)
    assert (code, out) == (78, "")
    assert err.startswith(f"nvdp: refusing to use {path}:\n  config file {path} can be changed by users other than root")


def test_validate_reload_needs_the_file(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(["config", "validate", "--reload"], capsys)
    assert code == 78
    assert f"{tmp_path / 'absent.toml'} does not exist; a reload needs the file" in err


def test_validate_reload_accepts_a_root_owned_file(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.skip("needs a root-owned file")
    path = write(tmp_path, "version = 1\n")
    assert run(["config", "validate", "--reload", str(path)], capsys) == (0, f"{path}: configuration is valid\n", "")


def test_validate_rejects_a_resource_name_that_cannot_be_served(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    name = "a" * 232 + ".com/gpu"
    path = write(tmp_path, f'resource_name = "{name}"\n')
    code, _, err = run(["config", "validate", str(path)], capsys)
    assert code == 78
    assert f"resource_name: the socket path '/var/lib/kubelet/device-plugins/nvidia-{'a' * 232}.com-gpu.sock'" in err


def test_init_prints_the_commented_default_file(capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run(["config", "init"], capsys)
    assert (code, out, err) == (0, render_default(), "")
    assert Config.model_validate(tomllib.loads(out)) == Config()


def test_init_writes_a_0644_file_and_refuses_to_overwrite(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "config.toml"
    old_umask = os.umask(0o022)
    try:
        assert run(["config", "init", "-o", str(target)], capsys)[0] == 0
    finally:
        os.umask(old_umask)
    assert target.read_text() == render_default()
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    code, _, err = run(["config", "init", "-o", str(target)], capsys)
    assert code == 73 and "already exists; use --force" in err
    target.write_text("old")
    assert run(["config", "init", "-o", str(target), "--force"], capsys)[0] == 0
    assert target.read_text() == render_default()


def test_init_into_a_missing_directory_exits_73(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(["config", "init", "-o", str(tmp_path / "no" / "config.toml")], capsys)
    assert code == 73 and "cannot write" in err


def test_import_prints_toml_and_warns_on_stderr(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    source = write(tmp_path, UPSTREAM_YAML, "upstream.yaml")
    code, out, err = run(["config", "import", str(source)], capsys)
    assert code == 0
    assert "fail_on_init_error = false\n" in out
    assert 'device_list_strategy = ["volume-mounts"]\n' in out
    assert '  { name = "nvidia.com/gpu", replicas = 4, devices = "all" },\n' in out
    assert err.splitlines() == [
        'nvdp: warning: sharing.timeSlicing.resources[0].rename = "gpu-shared" dropped: upstream ignores a custom '
        "name (renameByDefault advertises <name>.shared)"
    ]
    written = write(tmp_path, out, "imported.toml")
    assert load_config(written, environ={}).config.plugin.fail_on_init_error is False


def test_import_to_a_file(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    source = write(tmp_path, UPSTREAM_YAML, "upstream.yaml")
    target = tmp_path / "out.toml"
    code, out, _ = run(["config", "import", str(source), "-o", str(target)], capsys)
    assert (code, out) == (0, "")
    assert "fail_on_init_error = false" in target.read_text()


def test_import_of_an_invalid_upstream_file_exits_78(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    source = write(tmp_path, "version: v2\n", "upstream.yaml")
    code, out, err = run(["config", "import", str(source)], capsys)
    assert (code, out) == (78, "")
    assert 'version: unknown version "v2" (upstream knows only v1)' in err


def test_import_of_a_missing_file_exits_78(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(["config", "import", str(tmp_path / "nope.yaml")], capsys)
    assert code == 78 and "No such file or directory" in err


@pytest.mark.parametrize("sub", ["show", "validate", "init", "import"])
def test_every_subcommand_has_help(sub: str, capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exc:
        run(["config", sub, "--help"], capsys)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: nvdp config {sub}" in out
    assert "78" in out and "exit codes" in out


def test_config_without_a_subcommand_is_a_usage_error(capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exc:
        run(["config"], capsys)
    assert exc.value.code == 2


def test_serve_with_an_invalid_config_exits_78_with_the_errors(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    cli = pytest.importorskip("nvdp_node.app.cli")
    path = write(tmp_path, 'resource_name = "gpu"\n[plugin]\ndevice_list_strategy = "cdi"\n')
    code = cli.main(["--config", str(path), "serve"])
    err = capsys.readouterr().err
    assert code == 78
    assert f"nvdp: invalid configuration in {path}:" in err
    assert 'resource_name: the ResourceName "gpu" is invalid' in err
    assert 'unknown strategy "cdi"' in err


def test_the_nvdp_cli_dispatches_config_commands(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    cli = pytest.importorskip("nvdp_node.app.cli")
    assert cli.main(["config", "init"]) == 0
    assert capsys.readouterr().out == render_default()
