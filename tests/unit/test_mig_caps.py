"""MIG capability minors read from /proc fixture trees under a HostRoot."""

from __future__ import annotations

import logging

import pytest

from nvdp_node.adapters.host.mig_caps import read_cap_minors
from nvdp_node.adapters.host.paths import HostRoot

CAPS = "proc/driver/nvidia/capabilities"


def access_file(root, relative: str, minor: int) -> None:
    """An access file as the driver writes it (mode 292 is 0444)."""
    path = root / CAPS / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"DeviceFileMinor: {minor}\nDeviceFileMode: 292\nDeviceFileModify: 1\n")


def mig_minors(root, text: str) -> None:
    path = root / "proc/driver/nvidia-caps/mig-minors"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_gi_and_ci_access_files_give_the_minors_in_that_order(tmp_path):
    access_file(tmp_path, "gpu4/mig/gi7/access", 66)
    access_file(tmp_path, "gpu4/mig/gi7/ci0/access", 67)
    assert read_cap_minors(HostRoot(root=tmp_path), 4, 7, 0) == (66, 67)


def test_the_access_files_are_found_under_the_parents_minor_not_another_gpus(tmp_path):
    access_file(tmp_path, "gpu3/mig/gi1/access", 30)
    access_file(tmp_path, "gpu3/mig/gi1/ci0/access", 31)
    access_file(tmp_path, "gpu4/mig/gi1/access", 40)
    access_file(tmp_path, "gpu4/mig/gi1/ci0/access", 41)
    assert read_cap_minors(HostRoot(root=tmp_path), 4, 1, 0) == (40, 41)


def test_the_proc_dir_of_the_host_root_is_honoured(tmp_path):
    path = tmp_path / "altproc/driver/nvidia/capabilities/gpu0/mig/gi1"
    (path / "ci2").mkdir(parents=True)
    (path / "access").write_text("DeviceFileMinor: 12\nDeviceFileMode: 292\n")
    (path / "ci2/access").write_text("DeviceFileMinor: 14\nDeviceFileMode: 292\n")
    assert read_cap_minors(HostRoot(root=tmp_path, proc_dir="/altproc"), 0, 1, 2) == (12, 14)


def test_missing_access_files_fall_back_to_the_mig_minors_list(tmp_path):
    mig_minors(tmp_path, "config 1\nmonitor 2\ngpu0/gi1/access 12\ngpu0/gi1/ci0/access 13\ngpu0/gi2/access 21\n")
    assert read_cap_minors(HostRoot(root=tmp_path), 0, 1, 0) == (12, 13)


def test_lines_of_mig_minors_that_do_not_parse_are_skipped(tmp_path):
    mig_minors(tmp_path, "garbage\ngpu0/gi1/access twelve\ngpu0/gi1/access 12\n\ngpu0/gi1/ci0/access 13\n")
    assert read_cap_minors(HostRoot(root=tmp_path), 0, 1, 0) == (12, 13)


def test_an_access_file_wins_over_the_mig_minors_list(tmp_path):
    access_file(tmp_path, "gpu0/mig/gi1/access", 99)
    mig_minors(tmp_path, "gpu0/gi1/access 12\ngpu0/gi1/ci0/access 13\n")
    assert read_cap_minors(HostRoot(root=tmp_path), 0, 1, 0) == (99, 13)


@pytest.mark.parametrize(
    "files",
    [{}, {"gpu0/mig/gi1/access": 12}, {"gpu0/mig/gi1/ci0/access": 13}],
    ids=["none", "gi-only", "ci-only"],
)
def test_without_both_minors_there_are_none(tmp_path, files):
    for relative, minor in files.items():
        access_file(tmp_path, relative, minor)
    assert read_cap_minors(HostRoot(root=tmp_path), 0, 1, 0) == ()


def test_an_access_file_without_a_minor_line_counts_as_missing(tmp_path):
    access_file(tmp_path, "gpu0/mig/gi1/ci0/access", 13)
    (tmp_path / CAPS / "gpu0/mig/gi1/access").write_text("DeviceFileMode: 292\n")
    assert read_cap_minors(HostRoot(root=tmp_path), 0, 1, 0) == ()


def test_missing_minors_are_logged_at_debug_naming_the_files(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="nvdp_node.adapters.host.mig_caps")
    read_cap_minors(HostRoot(root=tmp_path), 0, 1, 0)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [(
        "DEBUG",
        "no capability minors for MIG device gpu0/gi1/ci0 (neither /proc/driver/nvidia/capabilities/gpu0/mig/gi1/…"
        "/access nor /proc/driver/nvidia-caps/mig-minors names them): it gets no /dev/nvidia-caps nodes",
    )]
