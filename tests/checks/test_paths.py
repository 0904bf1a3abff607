"""HostRoot and the file readers: every broken host file becomes a FileProblem, never an exception."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from nvdp_node.adapters.host import HostRoot
from nvdp_node.adapters.host.paths import MAX_FILE_BYTES, lookup, merge, read_json, read_text, read_toml
from nvdp_node.domain.checks import FileProblem, ProblemKind

ROOT = Path(__file__).resolve().parents[2]


def test_host_paths_are_mapped_under_the_root():
    assert HostRoot(root=Path("/srv/img")).at("/etc/docker/daemon.json") == Path("/srv/img/etc/docker/daemon.json")


def test_the_default_root_is_the_real_host():
    assert HostRoot().at("/etc/cdi") == Path("/etc/cdi")


def test_locate_returns_the_host_path_of_the_first_bin_dir_holding_the_binary(host):
    host.binaries("crio", bin_dir="/usr/local/bin").binaries("crio", bin_dir="/usr/bin")
    assert host.paths.locate("crio") == "/usr/local/bin/crio"


def test_locate_checks_an_absolute_path_under_the_root(host):
    host.binaries("nvidia-container-runtime", bin_dir="/opt/nvidia")
    assert host.paths.locate("/opt/nvidia/nvidia-container-runtime") == "/opt/nvidia/nvidia-container-runtime"
    assert host.paths.locate("/opt/nvidia/missing") is None


@pytest.mark.parametrize(
    ("setup", "kind", "detail"),
    [
        (lambda p: None, ProblemKind.MISSING, ""),
        (lambda p: p.mkdir(parents=True), ProblemKind.UNREADABLE, "it is a directory"),
        (lambda p: (p.parent.mkdir(parents=True), p.write_bytes(b"\xff\xfe")), ProblemKind.INVALID, "not UTF-8 (byte 0)"),
        (lambda p: (p.parent.mkdir(parents=True), p.write_bytes(b" " * (MAX_FILE_BYTES + 1))), ProblemKind.INVALID,
         f"larger than {MAX_FILE_BYTES} bytes"),
        (lambda p: (p.parent.mkdir(parents=True), p.parent.joinpath("x").write_text(""), p.symlink_to("x/y")),
         ProblemKind.UNREADABLE, "Not a directory"),
    ],
    ids=["missing", "directory", "not-utf8", "too-large", "path-through-a-file"],
)
def test_reading_a_broken_file_returns_a_problem(host, setup, kind, detail):
    setup(host.path("/etc/x/config"))
    problem = read_text(host.paths, "/etc/x/config")
    assert problem == FileProblem("/etc/x/config", kind, detail)


def test_a_file_without_read_permission_is_unreadable(tmp_path):
    # Root reads mode-000 files, so as root the read runs in a child as "nobody".
    shared = Path(tempfile.mkdtemp(prefix="nvdp-host-", dir="/tmp"))
    try:
        shared.chmod(0o755)
        (shared / "etc/x").mkdir(parents=True)
        for d in (shared / "etc", shared / "etc/x"):
            d.chmod(0o755)
        (shared / "etc/x/config").write_text("{}")
        (shared / "etc/x/config").chmod(0)
        expected = FileProblem("/etc/x/config", ProblemKind.UNREADABLE, "permission denied")
        if os.geteuid() != 0:
            assert read_text(HostRoot(root=shared), "/etc/x/config") == expected
            return
        if not all(p.stat().st_mode & 0o001 for p in [Path(sys.executable).resolve(), *ROOT.parents, ROOT]):
            pytest.skip("the checkout is not reachable for an unprivileged user")
        code = (
            "from pathlib import Path\n"
            "from nvdp_node.adapters.host import HostRoot\n"
            "from nvdp_node.adapters.host.paths import read_text\n"
            f"print(repr(read_text(HostRoot(root=Path({str(shared)!r})), '/etc/x/config')))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], user=65534, group=65534, capture_output=True, text=True,
            cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")},
        )
        assert result.stdout.strip() == repr(expected), result.stderr
    finally:
        shutil.rmtree(shared)


def test_invalid_json_says_where(host):
    host.write("/etc/x.json", '{"a": 1,}')
    problem = read_json(host.paths, "/etc/x.json")
    assert problem.kind is ProblemKind.INVALID and "line 1 column 9" in problem.detail


def test_invalid_toml_is_a_problem(host):
    host.write("/etc/x.toml", "a = \n")
    assert read_toml(host.paths, "/etc/x.toml").kind is ProblemKind.INVALID


def test_lookup_treats_an_absent_key_as_unset_without_a_problem():
    problems: list[FileProblem] = []
    assert lookup({"a": {}}, ("a", "b", "c"), str, file="f", problems=problems) is None
    assert problems == []


def test_lookup_reports_a_table_that_is_not_a_table():
    problems: list[FileProblem] = []
    assert lookup({"a": 3}, ("a", "b"), str, file="f", problems=problems, prefix="p") is None
    assert problems == [FileProblem("f", ProblemKind.WRONG_TYPE, "p.a: expected a table, got int 3")]


def test_lookup_does_not_take_a_boolean_for_an_integer():
    problems: list[FileProblem] = []
    assert lookup({"version": True}, ("version",), int, file="f", problems=problems) is None
    assert problems[0].detail == "version: expected an integer, got the boolean true"


def test_merge_merges_tables_and_replaces_everything_else():
    base = {"crio": {"runtime": {"default_runtime": "crun", "runtimes": {"crun": {}}}}, "list": [1]}
    over = {"crio": {"runtime": {"default_runtime": "nvidia", "runtimes": {"nvidia": {}}}}, "list": [2]}
    assert merge(base, over) == {
        "crio": {"runtime": {"default_runtime": "nvidia", "runtimes": {"crun": {}, "nvidia": {}}}}, "list": [2]}
