"""The ld cache reader, the driver-file finder and the spec writer, on fixture trees (real ldconfig output)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from nvdp_node.adapters.cdi_writer import remove_spec, write_spec
from nvdp_node.adapters.host import HostRoot
from nvdp_node.adapters.host.driver_files import DriverRoots, find_driver_files
from nvdp_node.adapters.host.ld_cache import LdCacheError, parse_ld_cache, read_ld_cache
from tests.driver_tree import DRIVERS, LIB_DIR, libraries, make_driver_tree, make_hook

OLD, NEW = DRIVERS


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("driver-trees")


def test_the_ld_cache_reader_lists_what_ldconfig_p_lists(tmp_path, cache_dir):
    root = make_driver_tree(tmp_path / "root", OLD, cache_dir)
    cache = root / "etc/ld.so.cache"
    listed = subprocess.run(["ldconfig", "-p", "-C", str(cache)], check=True, capture_output=True, text=True).stdout
    expected = sorted((line.split()[0], line.split(" => ")[1]) for line in listed.splitlines()[1:] if " => " in line)
    assert sorted(read_ld_cache(cache)) == expected and len(expected) == 5


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"", "no glibc-ld.so.cache1.1 header"), (b"glibc-ld.so.cache1.1\x05", "truncated header"),
     (b"glibc-ld.so.cache1.1" + (1000).to_bytes(4, "little") + bytes(24), "1000 entries do not fit"),
     (b"ld.so-1.7.0", "truncated header")],
    ids=["empty", "short header", "too many entries", "old format truncated"],
)
def test_a_broken_ld_cache_is_an_error_naming_the_problem(data, message):
    with pytest.raises(LdCacheError, match=message):
        parse_ld_cache(data)


def test_only_libraries_of_the_running_version_are_found_when_two_are_installed(tmp_path, cache_dir):
    root = make_driver_tree(tmp_path / "root", OLD, cache_dir)
    stale = root / LIB_DIR.lstrip("/") / f"libcuda.so.{NEW}"
    stale.write_bytes(b"")  # a left-over of another driver version next to the running one
    files = find_driver_files(DriverRoots(root, str(root), HostRoot(dev_dir=str(root / "dev"))), OLD, "/nonexistent")
    assert [f.container_path for f in files.libraries] == libraries(OLD)
    assert all(f.host_path == f"{root}{f.container_path}" for f in files.libraries)


def test_without_an_ld_cache_the_usual_library_directories_are_searched(tmp_path, cache_dir):
    root = make_driver_tree(tmp_path / "root", NEW, cache_dir)
    (root / "etc/ld.so.cache").unlink()
    files = find_driver_files(DriverRoots(root, "/", HostRoot()), NEW, "/nonexistent")
    assert [f.container_path for f in files.libraries] == libraries(NEW)
    assert any(p.startswith(f"cannot read {root}/etc/ld.so.cache (No such file or directory)") for p in files.problems)


def test_a_cache_without_the_drivers_libraries_falls_back_to_the_usual_directories(tmp_path, cache_dir):
    root = make_driver_tree(tmp_path / "root", NEW, cache_dir)
    (root / "etc/ld.so.cache").write_bytes(Path("/etc/ld.so.cache").read_bytes())  # made without the driver
    files = find_driver_files(DriverRoots(root, "/", HostRoot()), NEW, "/nonexistent")
    assert [f.container_path for f in files.libraries] == libraries(NEW)
    assert any(f"names no library of driver {NEW}" in p for p in files.problems)


def test_control_nodes_are_those_that_exist_in_nvdps_view_of_dev(tmp_path, cache_dir):
    root = make_driver_tree(tmp_path / "root", OLD, cache_dir)
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidiactl", "nvidia-uvm-tools"):
        (dev / name).touch()
    files = find_driver_files(DriverRoots(root, "/host", HostRoot(dev_dir=str(dev))), OLD, "/nonexistent")
    assert [(f.container_path, f.host_path) for f in files.control_nodes] == [
        ("/dev/nvidiactl", "/host/dev/nvidiactl"), ("/dev/nvidia-uvm-tools", "/host/dev/nvidia-uvm-tools")]


def test_the_hook_is_used_only_when_it_is_an_executable(tmp_path, cache_dir):
    root = make_driver_tree(tmp_path / "root", OLD, cache_dir)
    hook = make_hook(tmp_path / "bin/nvidia-cdi-hook")
    roots = DriverRoots(root, "/", HostRoot())
    assert find_driver_files(roots, OLD, str(hook)).hook_path == str(hook)
    hook.chmod(0o644)
    assert find_driver_files(roots, OLD, str(hook)).hook_path is None


# -- the writer ------------------------------------------------------------------------------------


def test_the_spec_is_written_0644_and_an_identical_one_is_not_rewritten(tmp_path):
    spec = {"cdiVersion": "0.3.0", "kind": "k8s.device-plugin.nvidia.com/gpu", "devices": []}
    path, changed = write_spec(tmp_path / "cdi", spec)
    assert changed and path.stat().st_mode & 0o777 == 0o644
    inode = path.stat().st_ino
    assert write_spec(tmp_path / "cdi", spec) == (path, False) and path.stat().st_ino == inode


def test_a_changed_spec_replaces_the_file_by_rename(tmp_path):
    path, _ = write_spec(tmp_path, {"kind": "a", "devices": []})
    reader = open(path)  # an engine reading the old file keeps reading the old file
    write_spec(tmp_path, {"kind": "b", "devices": []})
    assert '"a"' in reader.read() and '"b"' in path.read_text()
    reader.close()


def test_removal_touches_no_other_vendors_spec(tmp_path):
    write_spec(tmp_path, {"kind": "a", "devices": []})
    (tmp_path / "nvidia.yaml").write_text("kind: nvidia.com/gpu\n")
    (tmp_path / "k8s.device-plugin.nvidia.com-gpu.json.bak").write_text("{}")
    assert remove_spec(tmp_path) is True and remove_spec(tmp_path) is False
    assert sorted(os.listdir(tmp_path)) == ["k8s.device-plugin.nvidia.com-gpu.json.bak", "nvidia.yaml"]


def test_an_unwritable_directory_raises_with_the_path(tmp_path):
    blocker = tmp_path / "cdi"
    blocker.write_text("not a directory")
    with pytest.raises(OSError):
        write_spec(blocker, {"kind": "a", "devices": []})
    assert Path(blocker).read_text() == "not a directory"
