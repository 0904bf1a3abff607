"""CDI end to end: mock NVML + a fake driver tree → ``nvdp serve`` → its CDI spec and Allocate over real gRPC.

The driver trees (``tests/driver_tree.py``) hold real ELF libraries and an ld
cache made by ``ldconfig``; the spec directory and the driver root are the
test's, given through the config file.
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import grpc
import pytest

from tests.daemon.conftest import clean_env
from tests.driver_tree import DRIVERS, LIB_DIR, libraries, make_driver_tree, make_hook
from tests.mock_nvml.environment import load_profile

GPU = "nvidia.com/gpu"
SPEC = "k8s.device-plugin.nvidia.com-gpu.json"
KEY = re.compile(r"^cdi\.k8s\.io/nvidia-device-plugin_[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
OLD, NEW = DRIVERS


@pytest.fixture(scope="session")
def driver_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("driver-trees")


class Node:
    """One test's host: the mock GPUs, a driver tree, a spec directory, and the daemon once started."""

    def __init__(self, mock_nvml, tmp_path: Path, driver_cache: Path, profile="h100-sxm-8", version=OLD):
        data = load_profile(profile)
        data["driver_version"] = version
        self.nvml = mock_nvml.use(data)
        self.tmp = tmp_path
        self.cache = driver_cache
        self.root = make_driver_tree(tmp_path / "driver", version, driver_cache)
        self.nvml.write_sysfs(tmp_path / "sys")
        self.nvml.write_devfs(self.root / "dev")
        self.nvml.write_procfs(tmp_path / "proc")
        self.spec_dir = tmp_path / "cdi"
        self.hook = tmp_path / "bin/nvidia-cdi-hook"
        self.daemon = None

    def config(self, strategies, extra: str = "") -> str:
        return (
            f"[plugin]\ndevice_list_strategy = {json.dumps(list(strategies))}\n"
            f'nvidia_driver_root = "{self.root}"\nnvidia_cdi_hook_path = "{self.hook}"\n'
            f'cdi_spec_dir = "{self.spec_dir}"\n{extra}'
        )

    def serve(self, nvdp_daemon, kubelet_peer, strategies, extra: str = "", env=None):
        self.daemon = nvdp_daemon(
            kubelet_peer.plugin_dir, env={**clean_env(), **self.nvml.env(), **(env or {})}, sysfs_root=self.tmp / "sys",
            config=self.config(strategies, extra),
            args=("--dev-root", str(self.root / "dev"), "--proc-root", str(self.tmp / "proc")),
        )
        return self.daemon

    def spec(self) -> dict:
        return json.loads((self.spec_dir / SPEC).read_text())

    def uuids(self) -> list[str]:
        return [g["uuid"] for g in self.nvml.profile["gpus"]]


@pytest.fixture
def node(mock_nvml, tmp_path, driver_cache):
    return Node(mock_nvml, tmp_path, driver_cache)


def cdi(*ids: str) -> list[str]:
    return [f"k8s.device-plugin.nvidia.com/gpu={i}" for i in ids]


@pytest.fixture
def started(node, nvdp_daemon, kubelet_peer):
    """``started(strategies, extra="", devices=8)`` → the node, once kubelet has all its devices."""
    def start(strategies, extra: str = "", devices: int = 8):
        node.serve(nvdp_daemon, kubelet_peer, strategies, extra)
        kubelet_peer.wait_node_status(GPU, (devices, devices))
        return node
    return start


def response(kubelet_peer, ids):
    return kubelet_peer.call_allocate(GPU, ids).container_responses[0]


# -- Allocate, per strategy combination -------------------------------------------------------------


def test_cdi_annotations_alone_gives_one_annotation_with_the_cdi_names_and_nothing_else(started, kubelet_peer):
    node = started(["cdi-annotations"])
    a, b = node.uuids()[:2]
    got = response(kubelet_peer, [b, a])
    [(key, value)] = got.annotations.items()
    assert KEY.match(key) and value == ",".join(cdi(b, a))
    assert (dict(got.envs), list(got.mounts), list(got.devices), list(got.cdi_devices)) == ({}, [], [], [])


def test_each_response_gets_a_fresh_annotation_key(started, kubelet_peer):
    node = started(["cdi-annotations"])
    first = response(kubelet_peer, node.uuids()[:1]).annotations
    second = response(kubelet_peer, node.uuids()[:1]).annotations
    assert list(first.values()) == list(second.values()) and set(first) != set(second)


def test_cdi_cri_alone_gives_cdi_devices_and_nothing_else(started, kubelet_peer):
    node = started(["cdi-cri"], "pass_device_specs = true\n")
    a, b = node.uuids()[3:5]
    got = response(kubelet_peer, [a, b])
    assert [d.name for d in got.cdi_devices] == cdi(a, b)
    assert (dict(got.envs), dict(got.annotations), list(got.mounts), list(got.devices)) == ({}, {}, [], [])


@pytest.mark.parametrize(
    ("strategies", "env", "mounts", "annotated", "cri"),
    [
        (["cdi-annotations", "envvar"], "ids", False, True, False),
        (["envvar", "cdi-cri"], "ids", False, False, True),
        (["cdi-annotations", "volume-mounts"], "dir", True, True, False),
        (["cdi-cri", "volume-mounts"], "dir", True, False, True),
        (["cdi-annotations", "cdi-cri"], None, False, True, True),
    ],
    ids=["annotations+envvar", "envvar+cri", "annotations+volume-mounts", "cri+volume-mounts", "annotations+cri"],
)
def test_cdi_strategies_combine_with_the_others_as_upstream(started, kubelet_peer, strategies, env, mounts,
                                                             annotated, cri):
    node = started(strategies)
    ids = node.uuids()[6:8]
    got = response(kubelet_peer, ids)
    expected_env = {} if env is None else {
        "NVIDIA_VISIBLE_DEVICES": ",".join(ids) if env == "ids" else "/var/run/nvidia-container-devices"}
    assert dict(got.envs) == expected_env
    expected_mounts = [(f"/var/run/nvidia-container-devices/{i}", "/dev/null") for i in ids] if mounts else []
    assert [(m.container_path, m.host_path) for m in got.mounts] == expected_mounts
    assert list(got.annotations.values()) == ([",".join(cdi(*ids))] if annotated else [])
    assert [d.name for d in got.cdi_devices] == (cdi(*ids) if cri else [])


def test_index_ids_give_index_cdi_names_that_the_spec_declares(started, kubelet_peer):
    node = started(["cdi-cri"], 'device_id_strategy = "index"\n')
    got = response(kubelet_peer, node.uuids()[2:4])
    assert [d.name for d in got.cdi_devices] == cdi("2", "3")
    spec = node.spec()
    assert [d["name"] for d in spec["devices"]] == [str(i) for i in range(8)]
    assert spec["cdiVersion"] == "0.5.0"  # names starting with a digit (and hostPath) need 0.5.0


# -- the spec -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", DRIVERS)
def test_the_spec_names_every_gpu_and_mounts_the_running_drivers_files(mock_nvml, tmp_path, driver_cache,
                                                                      nvdp_daemon, kubelet_peer, version):
    node = Node(mock_nvml, tmp_path, driver_cache, version=version)
    make_hook(node.hook)
    node.serve(nvdp_daemon, kubelet_peer, ["cdi-cri"])
    kubelet_peer.wait_node_status(GPU, (8, 8))
    spec, root = node.spec(), str(node.root)
    assert (spec["kind"], spec["cdiVersion"]) == ("k8s.device-plugin.nvidia.com/gpu", "0.5.0")
    minors = {g["uuid"]: g["minor_number"] for g in node.nvml.profile["gpus"]}
    assert spec["devices"] == [
        {"name": u, "containerEdits": {"deviceNodes": [{"path": f"/dev/nvidia{minors[u]}",
                                                        "hostPath": f"{root}/dev/nvidia{minors[u]}"}]}}
        for u in sorted(minors)
    ]
    edits = spec["containerEdits"]
    assert edits["env"] == ["NVIDIA_VISIBLE_DEVICES=void"]
    assert edits["deviceNodes"] == [{"path": p, "hostPath": f"{root}{p}"} for p in ("/dev/nvidiactl", "/dev/nvidia-uvm")]
    ro = ["ro", "nosuid", "nodev", "rbind", "rprivate"]
    files = [*libraries(version), "/usr/bin/nvidia-smi", "/usr/bin/nvidia-persistenced",
             "/usr/bin/nvidia-cuda-mps-control", "/usr/bin/nvidia-cuda-mps-server",
             f"/lib/firmware/nvidia/{version}/gsp_ga10x.bin", f"/lib/firmware/nvidia/{version}/gsp_tu10x.bin"]
    assert edits["mounts"] == [{"hostPath": f"{root}{p}", "containerPath": p, "options": ro} for p in files] + [
        {"hostPath": f"{root}/run/nvidia-persistenced/socket", "containerPath": "/run/nvidia-persistenced/socket",
         "options": ["nosuid", "nodev", "rbind", "rprivate", "noexec"]}]
    hook = str(node.hook)
    assert edits["hooks"] == [
        {"hookName": "createContainer", "path": hook, "env": ["NVIDIA_CTK_DEBUG=false"], "args": [
            "nvidia-cdi-hook", "create-symlinks",
            "--link", f"libcuda.so.1::{LIB_DIR}/libcuda.so",
            "--link", f"libcuda.so.{version}::{LIB_DIR}/libcuda.so.1",
            "--link", f"libnvidia-ml.so.{version}::{LIB_DIR}/libnvidia-ml.so.1",
            "--link", f"libnvidia-ptxjitcompiler.so.{version}::{LIB_DIR}/libnvidia-ptxjitcompiler.so.1",
            "--link", f"libvdpau_nvidia.so.{version}::{LIB_DIR}/vdpau/libvdpau_nvidia.so.1"]},
        {"hookName": "createContainer", "path": hook, "env": ["NVIDIA_CTK_DEBUG=false"], "args": [
            "nvidia-cdi-hook", "update-ldcache", "--folder", LIB_DIR, "--folder", f"{LIB_DIR}/vdpau"]},
    ]


def test_the_spec_file_is_world_readable_and_nothing_else_is_left_in_the_directory(started):
    node = started(["cdi-cri"])
    assert (node.spec_dir / SPEC).stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in node.spec_dir.iterdir()) == [SPEC]


def test_without_the_hook_the_spec_has_no_hooks_and_a_warning_says_why(started):
    node = started(["cdi-cri"])
    assert "hooks" not in node.spec()["containerEdits"]
    assert f"{node.hook} not found: the CDI spec has no create-symlinks/update-ldcache hooks" in node.daemon.log()
    assert len(node.spec()["containerEdits"]["mounts"]) == 12  # every file is mounted all the same


def test_mig_devices_are_in_the_spec_with_their_parent_and_capability_nodes(mock_nvml, tmp_path, driver_cache,
                                                                           nvdp_daemon, kubelet_peer):
    node = Node(mock_nvml, tmp_path, driver_cache, profile="a100-mig-8")
    node.serve(nvdp_daemon, kubelet_peer, ["cdi-cri"], 'mig_strategy = "mixed"\n')
    kubelet_peer.wait_node_status("nvidia.com/mig-4g.20gb", (1, 1))
    kubelet_peer.wait_node_status("nvidia.com/mig-1g.5gb", (8, 8))
    gpu7 = node.nvml.profile["gpus"][7]
    mig = gpu7["mig_devices"][0]["uuid"]
    by_name = {d["name"]: d for d in node.spec()["devices"]}
    assert len(by_name) == 4 + 8 + 3 + 3 + 1
    paths = [n["path"] for n in by_name[mig]["containerEdits"]["deviceNodes"]]
    assert paths[0] == f"/dev/nvidia{gpu7['minor_number']}" and len(paths) == 3
    assert all(re.fullmatch(r"/dev/nvidia-caps/nvidia-cap\d+", p) for p in paths[1:])
    got = kubelet_peer.call_allocate("nvidia.com/mig-4g.20gb", [mig]).container_responses[0]
    assert [d.name for d in got.cdi_devices] == cdi(mig)


def test_replicas_are_handed_over_as_their_gpu_which_the_spec_names_once(started, kubelet_peer):
    node = started(["cdi-cri"], '[sharing.time_slicing]\nresources = [{ name = "nvidia.com/gpu", replicas = 2 }]\n',
                   devices=16)
    a = node.uuids()[0]
    got = response(kubelet_peer, [f"{a}::0", f"{a}::1"])
    assert [d.name for d in got.cdi_devices] == cdi(a)
    assert sorted(d["name"] for d in node.spec()["devices"]) == sorted(node.uuids())


# -- regeneration, removal, failure ---------------------------------------------------------------


def test_a_reload_onto_a_new_driver_rewrites_the_spec_for_it(started, kubelet_peer):
    node = started(["cdi-cri"], "[health]\nenabled = false\n")  # no NVML worker: the mock re-reads its profile
    assert f"libcuda.so.{OLD}" in (node.spec_dir / SPEC).read_text()
    profile = json.loads(node.nvml.config_path.read_text())
    profile["driver_version"] = NEW
    node.nvml.config_path.write_text(json.dumps(profile))
    make_driver_tree(node.root, NEW, node.cache)
    node.nvml.write_devfs(node.root / "dev")
    node.daemon.signal(signal.SIGHUP)
    node.daemon.wait_log_count("wrote CDI spec", 2)
    text = (node.spec_dir / SPEC).read_text()
    assert f"libcuda.so.{NEW}" in text and OLD not in text


def test_a_reload_without_cdi_removes_nvdps_spec_and_only_that(started, kubelet_peer):
    node = started(["cdi-cri"])
    other = node.spec_dir / "nvidia.yaml"
    other.write_text("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices: []\n")
    node.daemon.config_path.write_text(node.config(["envvar"]))
    node.daemon.signal(signal.SIGHUP)
    node.daemon.wait_log("no cdi-* strategy any more: removed")
    assert sorted(p.name for p in node.spec_dir.iterdir()) == ["nvidia.yaml"]
    assert response(kubelet_peer, node.uuids()[:1]).envs["NVIDIA_VISIBLE_DEVICES"] == node.uuids()[0]


def test_when_the_spec_cannot_be_written_cdi_requests_fail_with_the_reason(mock_nvml, tmp_path, driver_cache,
                                                                          nvdp_daemon, kubelet_peer):
    node = Node(mock_nvml, tmp_path, driver_cache)
    node.spec_dir.write_text("a file, not a directory")
    daemon = node.serve(nvdp_daemon, kubelet_peer, ["cdi-cri"])
    kubelet_peer.wait_node_status(GPU, (8, 8))
    with pytest.raises(grpc.RpcError) as err:
        kubelet_peer.call_allocate(GPU, node.uuids()[:1])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(
        f'invalid allocation request for "nvidia.com/gpu": cannot hand over '
        f"k8s.device-plugin.nvidia.com/gpu={node.uuids()[0]} by CDI: cannot write the CDI spec in {node.spec_dir}")
    assert daemon.proc.poll() is None


def test_when_the_spec_cannot_be_written_the_status_line_says_why(mock_nvml, tmp_path, driver_cache, nvdp_daemon,
                                                                   kubelet_peer, notify_socket):
    node = Node(mock_nvml, tmp_path, driver_cache)
    node.spec_dir.write_text("a file, not a directory")
    node.serve(nvdp_daemon, kubelet_peer, ["cdi-annotations"], env={"NOTIFY_SOCKET": str(notify_socket.path)})
    notify_socket.wait_for(lambda m: f"; cannot write the CDI spec in {node.spec_dir}: " in m.get("STATUS", ""),
                           what="STATUS naming the CDI spec problem")


# -- the periodic check: a driver upgraded under a running nvdp, a failed write retried -------------------

CHECKING = "mig_check_interval = 1\n[health]\nenabled = false\n"  # no NVML worker: each check re-reads the profile


def upgrade_driver(node: Node) -> None:
    """What apt does to a running node, as one switch of the driver root: new libraries, ld cache, kernel module."""
    new = make_driver_tree(node.tmp / "driver-new", NEW, node.cache)
    node.nvml.write_devfs(new / "dev")
    version = node.tmp / "proc/driver/nvidia/version"
    version.parent.mkdir(parents=True, exist_ok=True)
    version.write_text(f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {NEW}  Release Build\n")
    profile = json.loads(node.nvml.config_path.read_text())
    profile["driver_version"] = NEW
    node.nvml.config_path.write_text(json.dumps(profile))
    (node.tmp / "next").symlink_to(new)
    (node.tmp / "next").replace(node.root)


@pytest.fixture
def linked(node):
    """The node with its driver root behind a symlink, so ``upgrade_driver`` can swap it at once."""
    link = node.tmp / "current"
    link.symlink_to(node.root)
    node.root = link
    return node


def test_a_driver_upgraded_under_a_running_daemon_gets_a_new_spec_without_reload_or_reregistration(
        linked, nvdp_daemon, kubelet_peer):
    node = linked
    node.serve(nvdp_daemon, kubelet_peer, ["cdi-cri"], CHECKING)
    kubelet_peer.wait_node_status(GPU, (8, 8))
    node.daemon.wait_log("wrote CDI spec")
    upgrade_driver(node)
    node.daemon.wait_log(f"driver {NEW}, 9 files")  # 5 libraries, 4 binaries: the new tree in full
    text = (node.spec_dir / SPEC).read_text()
    assert f"libcuda.so.{NEW}" in text and OLD not in text
    assert f"the driver changed (driver {OLD} -> {NEW}" in node.daemon.log()
    assert "reloaded configuration" not in node.daemon.log() and len(kubelet_peer.registrations) == 1


def test_a_failed_spec_write_is_retried_and_cdi_requests_succeed_once_it_is_written(
        mock_nvml, tmp_path, driver_cache, nvdp_daemon, kubelet_peer):
    node = Node(mock_nvml, tmp_path, driver_cache)
    node.spec_dir.write_text("a file, not a directory")
    node.serve(nvdp_daemon, kubelet_peer, ["cdi-cri"], CHECKING)
    kubelet_peer.wait_node_status(GPU, (8, 8))
    node.daemon.wait_log("cannot write the CDI spec")
    node.spec_dir.unlink()
    node.daemon.wait_log("wrote CDI spec")
    got = response(kubelet_peer, node.uuids()[:1])
    assert [d.name for d in got.cdi_devices] == cdi(node.uuids()[0])


def test_a_retry_that_fails_the_same_way_logs_the_error_only_once(mock_nvml, tmp_path, driver_cache, nvdp_daemon,
                                                                  kubelet_peer):
    node = Node(mock_nvml, tmp_path, driver_cache)
    node.spec_dir.write_text("a file, not a directory")
    node.serve(nvdp_daemon, kubelet_peer, ["cdi-cri"], CHECKING)
    kubelet_peer.wait_node_status(GPU, (8, 8))
    checks = calls(node, "nvmlInit")
    wait_for_calls(node, "nvmlInit", checks + 3)  # three more checks, each retrying the write
    assert node.daemon.log().count("ERROR nvdp.cdi: cannot write the CDI spec") == 1


def test_nothing_is_rewritten_while_the_driver_stays_the_same(started):
    node = started(["cdi-cri"], CHECKING)
    before = (node.spec_dir / SPEC).stat()
    checks = calls(node, "nvmlInit")
    wait_for_calls(node, "nvmlInit", checks + 3)  # the check after a write has finished twice at least
    after = (node.spec_dir / SPEC).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert node.daemon.log().count("wrote CDI spec") == 1 and "the driver changed" not in node.daemon.log()


def wait_for_calls(node: Node, function: str, count: int, timeout: float = 20.0) -> None:
    """Until the mock NVML logged ``count`` calls of ``function`` (each periodic check opens NVML once)."""
    deadline = time.monotonic() + timeout
    while calls(node, function) < count:
        assert time.monotonic() < deadline, f"{function} called {calls(node, function)}/{count} times"
        time.sleep(0.05)


def calls(node: Node, prefix: str) -> int:
    return sum(c.startswith(prefix) for c in node.nvml.calls())
