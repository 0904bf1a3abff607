"""`nvdp check`: run_checks on whole fixture hosts, the CLI's output formats and exit codes."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

import nvdp_node.adapters.host as host_adapters
from nvdp_node.app import check_cli, host_checks
from nvdp_node.app.host_checks import render_json, render_table, run_checks, serve_time_checks
from nvdp_node.config import parse_config
from nvdp_node.domain.checks import CheckReport, CheckResult, Status

ANSI = "\033["


def _parser() -> argparse.ArgumentParser:
    """The same shape as nvdp_node.app.cli: a global --config and subcommands."""
    parser = argparse.ArgumentParser(prog="nvdp")
    parser.add_argument("--config", type=Path)
    check_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


def nvdp(*argv: str) -> int:
    args = _parser().parse_args(list(argv))
    return args.func(args)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in [n for n in os.environ if n.startswith(("NVDP_", "DP_"))] + ["NO_COLOR"]:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def gpu_node(host, mock_nvml):
    """A fully set-up containerd node with 8 simulated H100s."""
    mock_nvml.use("h100-sxm-8").write_devfs(host.path("/dev"))
    return host.healthy()


def _statuses(report: CheckReport) -> dict[str, Status]:
    return {r.id: r.status for r in report.results}


def test_a_fully_set_up_node_passes_with_exit_code_0(gpu_node, capsys):
    assert nvdp("check", "--root", str(gpu_node.root)) == 0
    out = capsys.readouterr().out
    assert "0 errors, 0 warnings" in out and "nothing stands between this node and GPU pods" in out


def test_every_check_appears_once_in_a_stable_order(gpu_node):
    report = run_checks(parse_config({}), gpu_node.paths)
    assert [r.id for r in report.results] == [
        "driver.library", "driver.nvml", "driver.version", "driver.device-nodes",
        "runtime.engines", "runtime.docker", "runtime.containerd", "runtime.crio", "runtime.cdi", "cdi.spec",
        "toolkit.binaries", "toolkit.config", "kubelet.socket-dir", "kubelet.socket", "kubelet.version",
        "metrics.listen",
    ]


def test_json_output_lists_each_check_with_status_evidence_and_fix(gpu_node, capsys):
    gpu_node.layer("docker-not-default").binaries("dockerd")
    nvdp("check", "--json", "--root", str(gpu_node.root))
    document = json.loads(capsys.readouterr().out)
    assert set(document) == {"format", "status", "exit_code", "counts", "checks"}
    assert document["format"] == 1
    assert document["checks"][0] == {
        "id": "config.valid", "title": "nvdp configuration", "status": "ok",
        "evidence": [f"no config file at {gpu_node.path('/etc/nvdp/config.toml')}, using defaults"], "fix": ""}
    docker = next(c for c in document["checks"] if c["id"] == "runtime.docker")
    assert docker["status"] == "warning" and "--runtime=docker --set-as-default" in docker["fix"]
    assert document["status"] == "warning" and document["exit_code"] == 0


def test_any_error_makes_the_exit_code_1(gpu_node, capsys):
    gpu_node.path("/var/lib/kubelet/device-plugins/kubelet.sock").unlink()
    assert nvdp("check", "--root", str(gpu_node.root)) == 1
    assert "GPU pods will not work on this node" in capsys.readouterr().out


def test_an_invalid_config_exits_78_and_the_other_checks_still_run(gpu_node, capsys):
    gpu_node.layer("nvdp-config-invalid")
    assert nvdp("check", "--json", "--root", str(gpu_node.root)) == 78
    checks = {c["id"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["config.valid"]["status"] == "error"
    assert any("device_list_strategy" in line for line in checks["config.valid"]["evidence"])
    assert checks["runtime.containerd"]["status"] == "ok"


def test_the_config_under_the_root_decides_what_the_toolkit_must_allow(gpu_node, capsys):
    gpu_node.layer("nvdp-config-volume-mounts")
    assert nvdp("check", "--json", "--root", str(gpu_node.root)) == 1
    checks = {c["id"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["toolkit.config"]["status"] == "error"


def test_an_explicit_config_path_is_used(gpu_node, tmp_path, capsys):
    config = tmp_path / "nvdp.toml"
    config.write_text('[runtime_check]\nmin_driver_version = "999.1"\n')
    assert nvdp("--config", str(config), "check", "--root", str(gpu_node.root)) == 1
    assert "minimum 999.1" in capsys.readouterr().out


def test_min_driver_version_on_the_command_line_overrides_the_config(gpu_node, capsys):
    assert nvdp("check", "--root", str(gpu_node.root), "--min-driver-version", "600.1") == 1
    assert "minimum 600.1" in capsys.readouterr().out


def test_a_min_driver_version_that_is_not_a_version_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        nvdp("check", "--min-driver-version", "latest")
    assert exit_info.value.code == 2


def test_output_to_a_pipe_has_no_colour(gpu_node, capsys):
    nvdp("check", "--root", str(gpu_node.root))
    assert ANSI not in capsys.readouterr().out


def test_colour_is_used_only_on_a_terminal_without_no_color(monkeypatch):
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as tty, open(os.devnull, "w") as pipe:
        monkeypatch.setenv("TERM", "xterm")
        assert check_cli.use_color(tty) and not check_cli.use_color(pipe)
        monkeypatch.setenv("NO_COLOR", "")
        assert not check_cli.use_color(tty)
    os.close(leader)


def test_the_table_colours_only_the_status_word():
    report = CheckReport((CheckResult("driver.nvml", "NVML", Status.ERROR, ("bad",), "fix it"),))
    lines = render_table(report, color=True).splitlines()
    assert lines[1].startswith(f"{ANSI}1;31merror   {ANSI}0m driver.nvml")
    assert ANSI not in render_table(report, color=False)


def test_the_table_shows_the_fix_only_for_warnings_and_errors():
    report = CheckReport((CheckResult("a.b", "t", Status.OK, ("fine",), "unused"),
                          CheckResult("c.d", "t", Status.WARNING, ("meh",), "do this")))
    table = render_table(report)
    assert "fix: unused" not in table and "fix: do this" in table


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        nvdp("check", "--help")
    text = capsys.readouterr().out
    for line in ("0   no errors", "1   at least one check is an error", "78  the configuration is invalid"):
        assert line in text


def test_engines_named_in_the_config_are_the_only_ones_checked(gpu_node):
    config = parse_config({"runtime_check": {"engines": ["docker"]}})
    statuses = _statuses(run_checks(config, gpu_node.paths))
    assert "runtime.containerd" not in statuses
    assert statuses["runtime.docker"] is Status.ERROR  # named but not installed


def test_a_reader_that_crashes_costs_one_error_not_the_report(gpu_node, monkeypatch):
    def broken(paths):
        raise RuntimeError("boom")
    monkeypatch.setattr(host_checks, "read_toolkit", broken)
    report = run_checks(parse_config({}), gpu_node.paths)
    assert _statuses(report)["toolkit"] is Status.ERROR
    assert _statuses(report)["kubelet.version"] is Status.OK


def test_serving_treats_a_missing_kubelet_socket_as_a_warning_because_nvdp_waits(gpu_node):
    gpu_node.path("/var/lib/kubelet/device-plugins/kubelet.sock").unlink()
    socket = serve_time_checks(parse_config({}), gpu_node.paths).get("kubelet.socket")
    assert socket.status is Status.WARNING and socket.fix == ""


def test_serve_time_checks_leave_out_the_config_check(gpu_node):
    report = serve_time_checks(parse_config({}), gpu_node.paths)
    assert report.get("config.valid") is None and report.worst is Status.OK


def test_the_configured_kubelet_socket_dir_is_checked_under_the_root(gpu_node):
    gpu_node.path("/var/lib/rancher/k3s/agent/kubelet/device-plugins").mkdir(parents=True)
    config = parse_config({"kubelet": {"socket_dir": "/var/lib/rancher/k3s/agent/kubelet/device-plugins"}})
    report = run_checks(config, gpu_node.paths)
    assert report.get("kubelet.socket-dir").status is Status.OK
    assert report.get("kubelet.socket").status is Status.ERROR


def test_json_rendering_keeps_every_field_of_every_result():
    result = CheckResult("x.y", "title", Status.SKIPPED, ("a", "b"), "")
    document = json.loads(render_json(CheckReport((result,))))
    assert document["checks"] == [{"id": "x.y", "title": "title", "status": "skipped", "evidence": ["a", "b"],
                                   "fix": ""}]
    assert document["counts"] == {"ok": 0, "warning": 0, "error": 0, "skipped": 1}


def test_the_host_adapters_export_a_reader_per_engine():
    assert set(host_adapters.ENGINE_READERS) == {"docker", "containerd", "crio"}
    assert replace(host_adapters.HostRoot(), root=Path("/x")).at("/dev") == Path("/x/dev")


@pytest.mark.parametrize(("listen", "status"), [
    ("", Status.SKIPPED), ("127.0.0.1:9400", Status.OK), ("[::1]:9400", Status.OK),
    ("0.0.0.0:9400", Status.WARNING), ("[::]:9400", Status.WARNING), ("10.1.2.3:9400", Status.WARNING),
], ids=["off", "ipv4-loopback", "ipv6-loopback", "any-ipv4", "any-ipv6", "node-address"])
def test_a_metrics_endpoint_beyond_loopback_is_flagged(gpu_node, listen, status):
    config = parse_config({"metrics": {"listen": listen, "allow_remote": True}})
    assert _statuses(run_checks(config, gpu_node.paths))["metrics.listen"] is status
