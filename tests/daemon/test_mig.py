"""MIG strategies end to end: mock NVML (a100-mig-8) → nvdp serve → the kubelet stand-in.

a100-mig-8: GPUs 0-3 MIG off; 4: 7× 1g.5gb; 5: 3× 2g.10gb + 1g.5gb;
6: 2× 3g.20gb; 7: 4g.20gb + 3g.20gb.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.daemon.conftest import ROOT, clean_env

GPU = "nvidia.com/gpu"
MIXED = {
    GPU: 4,
    "nvidia.com/mig-1g.5gb": 8,
    "nvidia.com/mig-2g.10gb": 3,
    "nvidia.com/mig-3g.20gb": 3,
    "nvidia.com/mig-4g.20gb": 1,
}


@pytest.fixture
def a100(mock_nvml, tmp_path):
    node = mock_nvml.use("a100-mig-8")
    node.write_sysfs(tmp_path / "sys")
    return node


def serve(nvdp_daemon, kubelet_peer, node, tmp_path, notify_socket, config):
    env = {**clean_env(), **node.env(), "NOTIFY_SOCKET": str(notify_socket.path)}
    return nvdp_daemon(kubelet_peer.plugin_dir, env=env, sysfs_root=tmp_path / "sys", config=config)


def mig_uuids(node, gpu: int) -> list[str]:
    return [m["uuid"] for m in node.profile["gpus"][gpu]["mig_devices"]]


def wait_all(kubelet_peer, counts: dict[str, int]) -> None:
    for name, n in counts.items():
        kubelet_peer.wait_node_status(name, (n, n))


def test_mixed_gives_one_resource_per_profile_with_its_own_socket(
    nvdp_daemon, kubelet_peer, a100, tmp_path, notify_socket
):
    serve(nvdp_daemon, kubelet_peer, a100, tmp_path, notify_socket, '[plugin]\nmig_strategy = "mixed"\n')
    wait_all(kubelet_peer, MIXED)
    assert kubelet_peer.node_status() == {name: (n, n) for name, n in MIXED.items()}
    for name in MIXED:
        assert (kubelet_peer.plugin_dir / f"nvidia-{name.split('/')[1]}.sock").is_socket()
        assert kubelet_peer.registration_count(name) == 1
    assert {d.id for d in kubelet_peer.devices("nvidia.com/mig-2g.10gb")} == set(mig_uuids(a100, 5)[:3])
    notify_socket.wait_for(lambda m: m.get("STATUS", "").startswith(
        "Serving 4 nvidia.com/gpu, 8 nvidia.com/mig-1g.5gb, 3 nvidia.com/mig-2g.10gb, "
        "3 nvidia.com/mig-3g.20gb, 1 nvidia.com/mig-4g.20gb, registered with kubelet"))


def test_allocate_of_a_mig_device_names_its_uuid(nvdp_daemon, kubelet_peer, a100, tmp_path, notify_socket):
    serve(nvdp_daemon, kubelet_peer, a100, tmp_path, notify_socket, '[plugin]\nmig_strategy = "mixed"\n')
    wait_all(kubelet_peer, MIXED)
    response = kubelet_peer.allocate("nvidia.com/mig-4g.20gb", 1)
    assert response.envs["NVIDIA_VISIBLE_DEVICES"] == mig_uuids(a100, 7)[0]


def test_an_xid_with_gi_and_ci_marks_exactly_that_mig_device(nvdp_daemon, kubelet_peer, a100, tmp_path, notify_socket):
    daemon = serve(nvdp_daemon, kubelet_peer, a100, tmp_path, notify_socket, '[plugin]\nmig_strategy = "mixed"\n')
    wait_all(kubelet_peer, MIXED)
    daemon.wait_log("registered nvidia.com/mig-1g.5gb")
    target = a100.profile["gpus"][4]["mig_devices"][2]
    a100.control.xid(4, 79, gi=target["gpu_instance_id"], ci=target["compute_instance_id"])
    kubelet_peer.wait_node_status("nvidia.com/mig-1g.5gb", (7, 8))
    unhealthy = {d.id for d in kubelet_peer.devices("nvidia.com/mig-1g.5gb") if d.health != "Healthy"}
    assert unhealthy == {target["uuid"]}
    assert kubelet_peer.node_status()[GPU] == (4, 4)


def test_an_xid_without_instance_marks_every_mig_device_of_the_gpu(
    nvdp_daemon, kubelet_peer, a100, tmp_path, notify_socket
):
    serve(nvdp_daemon, kubelet_peer, a100, tmp_path, notify_socket, '[plugin]\nmig_strategy = "mixed"\n')
    wait_all(kubelet_peer, MIXED)
    a100.control.xid(5, 79)
    kubelet_peer.wait_node_status("nvidia.com/mig-2g.10gb", (0, 3))
    kubelet_peer.wait_node_status("nvidia.com/mig-1g.5gb", (7, 8))  # GPU 5's 1g.5gb too
    assert kubelet_peer.node_status()["nvidia.com/mig-3g.20gb"] == (3, 3)


def test_single_on_a_node_mixing_mig_and_whole_gpus_says_why_and_keeps_running(
    nvdp_daemon, kubelet_peer, a100, tmp_path, notify_socket
):
    daemon = serve(nvdp_daemon, kubelet_peer, a100, tmp_path, notify_socket, '[plugin]\nmig_strategy = "single"\n')
    _, message = notify_socket.wait_for(lambda m: "READY" in m)
    status = message["STATUS"]
    assert "all devices on the node must be configured with the same migEnabled value" in status \
        or "more than one MIG device type present on node" in status, status
    assert daemon.proc.poll() is None
    assert "devices concerned are not advertised" in daemon.log()


def test_per_model_names_follow_the_patterns(nvdp_daemon, kubelet_peer, a100, tmp_path, notify_socket):
    config = '[[resources.gpus]]\npattern = "*A100*"\nname = "nvidia.com/a100"\n'
    serve(nvdp_daemon, kubelet_peer, a100, tmp_path, notify_socket, config)
    kubelet_peer.wait_node_status("nvidia.com/a100", (8, 8))
    assert GPU not in kubelet_peer.node_status()
    assert (kubelet_peer.plugin_dir / "nvidia-a100.sock").is_socket()


def test_nvdp_devices_lists_the_resources_serve_would_advertise(a100, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[plugin]\nmig_strategy = "mixed"\n')
    out = subprocess.run(
        [sys.executable, "-m", "nvdp_node", "--config", str(config), "devices", "--json"],
        capture_output=True, text=True, env={**clean_env(), **a100.env(), "PYTHONPATH": str(ROOT)}, cwd=ROOT,
        check=True,
    ).stdout
    resources = json.loads(out)["resources"]
    assert {name: len(devices) for name, devices in resources.items()} == MIXED
    assert [d["id"] for d in resources["nvidia.com/mig-4g.20gb"]] == [mig_uuids(a100, 7)[0]]
    assert resources["nvidia.com/mig-4g.20gb"][0]["index"] == "7:0"


def test_single_on_a_uniform_node_advertises_every_mig_device_as_the_resource(
    nvdp_daemon, kubelet_peer, mock_nvml, tmp_path, notify_socket
):
    node = mock_nvml.use("a100-single-8")
    daemon = serve(nvdp_daemon, kubelet_peer, node, tmp_path, notify_socket, '[plugin]\nmig_strategy = "single"\n')
    kubelet_peer.wait_node_status(GPU, (56, 56))
    ids = {d.id for d in kubelet_peer.devices(GPU)}
    assert ids == {m["uuid"] for g in node.profile["gpus"] for m in g["mig_devices"]}
    assert "not advertised" not in daemon.log()


def test_allocate_with_device_specs_passes_the_parent_node_and_the_mig_capability_nodes(
    nvdp_daemon, kubelet_peer, a100, tmp_path, notify_socket
):
    from tests.mock_nvml.mig import cap_minor

    a100.write_procfs(tmp_path / "proc")
    a100.write_devfs(tmp_path / "dev")
    env = {**clean_env(), **a100.env(), "NOTIFY_SOCKET": str(notify_socket.path)}
    nvdp_daemon(kubelet_peer.plugin_dir, env=env, sysfs_root=tmp_path / "sys",
                config='[plugin]\nmig_strategy = "mixed"\npass_device_specs = true\n',
                args=("--proc-root", str(tmp_path / "proc"), "--dev-root", str(tmp_path / "dev")))
    kubelet_peer.wait_node_status("nvidia.com/mig-4g.20gb", (1, 1))
    device = a100.profile["gpus"][7]["mig_devices"][0]
    response = kubelet_peer.allocate("nvidia.com/mig-4g.20gb", 1)
    paths = [spec.container_path for spec in response.devices]
    gi, ci = device["gpu_instance_id"], device["compute_instance_id"]
    expected_caps = [f"/dev/nvidia-caps/nvidia-cap{cap_minor(7, gi)}", f"/dev/nvidia-caps/nvidia-cap{cap_minor(7, gi, ci)}"]
    assert "/dev/nvidiactl" in paths and "/dev/nvidia7" in paths
    assert paths[-3:] == ["/dev/nvidia7", *expected_caps], paths
    assert all(spec.permissions == "rw" for spec in response.devices)


def test_a_mig_re_layout_is_applied_without_a_restart_and_leaves_other_resources_alone(
    nvdp_daemon, kubelet_peer, a100, tmp_path, notify_socket
):
    config = '[plugin]\nmig_strategy = "mixed"\nmig_check_interval = 1\n'
    daemon = serve(nvdp_daemon, kubelet_peer, a100, tmp_path, notify_socket, config)
    wait_all(kubelet_peer, MIXED)
    pid = daemon.proc.pid
    a100.control.mig(7, mode=1, devices=["7g.40gb"])  # was 4g.20gb + 3g.20gb
    kubelet_peer.wait_node_status("nvidia.com/mig-7g.40gb", (1, 1), timeout=15)
    kubelet_peer.wait_node_status("nvidia.com/mig-3g.20gb", (2, 2))
    kubelet_peer.wait_until(lambda: kubelet_peer.endpoint_stopped("nvidia.com/mig-4g.20gb"),
                            what="the vanished resource's endpoint stopped")
    # its streams end before its socket is unlinked: wait for both, in that order
    kubelet_peer.wait_until(lambda: not (kubelet_peer.plugin_dir / "nvidia-mig-4g.20gb.sock").exists(),
                            what="the vanished resource's socket removed")
    daemon.wait_log("MIG layout changed")
    assert daemon.proc.pid == pid and daemon.proc.poll() is None
    for untouched in (GPU, "nvidia.com/mig-1g.5gb", "nvidia.com/mig-2g.10gb"):
        assert kubelet_peer.registration_count(untouched) == 1, untouched
        assert kubelet_peer.history(untouched) == [(MIXED[untouched],) * 2], f"a capacity gap on {untouched}"
    assert kubelet_peer.registration_count("nvidia.com/mig-3g.20gb") == 1, "a changed resource is updated in place"


@pytest.mark.parametrize(
    ("relayout", "error"),
    [
        ({"devices": ["2g.10gb", "2g.10gb", "2g.10gb"]}, "more than one MIG device type present on node"),
        ({"devices": []}, "device 0 has no MIG devices configured"),
    ],
    ids=["several-profiles", "mig-gpu-without-devices"],
)
def test_each_single_strategy_error_is_named_in_status_and_nvdp_keeps_running(
    nvdp_daemon, kubelet_peer, mock_nvml, tmp_path, notify_socket, relayout, error
):
    node = mock_nvml.use("a100-single-8")
    node.control.mig(0, mode=1, **relayout)
    daemon = serve(nvdp_daemon, kubelet_peer, node, tmp_path, notify_socket, '[plugin]\nmig_strategy = "single"\n')
    notify_socket.wait_for(lambda m: error in m.get("STATUS", ""), what=f"STATUS naming {error!r}")
    assert f"{error} (devices concerned are not advertised)" in daemon.log()
    assert daemon.proc.poll() is None
