"""The driver fingerprint the periodic CDI check compares, on fixture driver trees and a fixture /proc."""

from __future__ import annotations

from pathlib import Path

import pytest

from nvdp_node.adapters.host import HostRoot
from nvdp_node.adapters.host.driver_files import DriverRoots
from nvdp_node.adapters.host.driver_fingerprint import driver_fingerprint
from tests.driver_tree import DRIVERS, make_driver_tree

OLD, NEW = DRIVERS


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("driver-trees")


def roots(root: Path, proc: Path) -> DriverRoots:
    return DriverRoots(driver_root=root, host=HostRoot(proc_dir=str(proc)))


def kernel_module(proc: Path, version: str) -> None:
    path = proc / "driver/nvidia/version"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {version}  Release Build\nGCC version: 12\n")


def test_the_fingerprint_is_the_same_while_nothing_changes(tmp_path, cache_dir):
    root = make_driver_tree(tmp_path / "root", OLD, cache_dir)
    kernel_module(tmp_path / "proc", OLD)
    assert driver_fingerprint(roots(root, tmp_path / "proc")) == driver_fingerprint(roots(root, tmp_path / "proc"))


def test_a_reinstalled_driver_changes_the_ld_cache_part(tmp_path, cache_dir):
    root = make_driver_tree(tmp_path / "root", OLD, cache_dir)
    before = driver_fingerprint(roots(root, tmp_path / "proc"))
    make_driver_tree(root, NEW, cache_dir)
    after = driver_fingerprint(roots(root, tmp_path / "proc"))
    assert after.ld_cache != before.ld_cache and after.differences(before) == ["the ld cache was rewritten"]


def test_a_new_kernel_module_changes_the_version_part_in_one_line(tmp_path, cache_dir):
    root = make_driver_tree(tmp_path / "root", OLD, cache_dir)
    kernel_module(tmp_path / "proc", OLD)
    before = driver_fingerprint(roots(root, tmp_path / "proc"))
    kernel_module(tmp_path / "proc", NEW)
    after = driver_fingerprint(roots(root, tmp_path / "proc"))
    assert after.differences(before) == [f"kernel module now NVRM version: NVIDIA UNIX x86_64 Kernel Module {NEW} "
                                         "Release Build"]


def test_missing_files_give_none_parts_instead_of_an_error(tmp_path):
    got = driver_fingerprint(roots(tmp_path / "no-driver", tmp_path / "no-proc"))
    assert (got.ld_cache, got.kernel_module) == (None, None)
