"""GPU sharing end to end: time-slicing replicas through nvdp serve to the kubelet stand-in."""

from __future__ import annotations

import signal

import grpc
import pytest

from tests.daemon.conftest import clean_env

GPU = "nvidia.com/gpu"


def time_slicing(name: str = GPU, replicas: int = 4, extra: str = "", resource_extra: str = "") -> str:
    return (f"[sharing.time_slicing]\n{extra}"
            f"[[sharing.time_slicing.resources]]\nname = \"{name}\"\nreplicas = {replicas}\n{resource_extra}")


def serve(nvdp_daemon, kubelet_peer, node, tmp_path, notify_socket, config):
    env = {**clean_env(), **node.env(), "NOTIFY_SOCKET": str(notify_socket.path)}
    return nvdp_daemon(kubelet_peer.plugin_dir, env=env, sysfs_root=tmp_path / "sys", config=config)


def uuid(node, i: int) -> str:
    return node.profile["gpus"][i]["uuid"]


@pytest.mark.parametrize(
    ("config", "resource"),
    [(time_slicing(), GPU), (time_slicing(resource_extra="rename = true\n"), "nvidia.com/gpu.shared"),
     (time_slicing(extra="rename_by_default = true\n"), "nvidia.com/gpu.shared")],
    ids=["same-name", "rename", "rename-by-default"],
)
def test_eight_gpus_times_four_replicas_give_a_capacity_of_32(
    nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket, config, resource
):
    serve(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket, config)
    kubelet_peer.wait_node_status(resource, (32, 32))
    ids = {d.id for d in kubelet_peer.devices(resource)}
    assert ids == {f"{uuid(h100, i)}::{n}" for i in range(8) for n in range(4)}
    topology = kubelet_peer.topology(resource)
    assert topology[f"{uuid(h100, 5)}::3"] == (h100.profile["gpus"][5]["numa_node"],)


def test_an_xid_on_gpu_3_marks_all_four_of_its_replicas(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket):
    daemon = serve(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket, time_slicing())
    kubelet_peer.wait_node_status(GPU, (32, 32))
    daemon.wait_log("registered nvidia.com/gpu")
    h100.control.xid(3, 79)
    kubelet_peer.wait_node_status(GPU, (28, 32))
    unhealthy = {d.id for d in kubelet_peer.devices(GPU) if d.health != "Healthy"}
    assert unhealthy == {f"{uuid(h100, 3)}::{n}" for n in range(4)}


def test_allocate_of_replicas_of_one_gpu_names_that_gpu_once(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket):
    serve(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket, time_slicing())
    kubelet_peer.wait_node_status(GPU, (32, 32))
    gpu = uuid(h100, 2)
    response = kubelet_peer.call_allocate(GPU, [f"{gpu}::1", f"{gpu}::3"])
    assert response.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == gpu


def test_more_than_one_replica_is_refused_with_fail_requests_greater_than_one(
    nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket
):
    config = time_slicing(extra="fail_requests_greater_than_one = true\n")
    serve(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket, config)
    kubelet_peer.wait_node_status(GPU, (32, 32))
    with pytest.raises(grpc.RpcError) as err:
        kubelet_peer.call_allocate(GPU, [f"{uuid(h100, 0)}::0", f"{uuid(h100, 1)}::0"])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == ('invalid allocation request for "nvidia.com/gpu": invalid request: '
                                   "maximum request size for shared resources is 1; found 2")
    one = kubelet_peer.call_allocate(GPU, [f"{uuid(h100, 0)}::2"])
    assert one.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == uuid(h100, 0)


def test_replicas_of_mig_devices_under_mixed(nvdp_daemon, kubelet_peer, mock_nvml, tmp_path, notify_socket):
    node = mock_nvml.use("a100-mig-8")
    config = '[plugin]\nmig_strategy = "mixed"\n' + time_slicing("nvidia.com/mig-1g.5gb", 2)
    serve(nvdp_daemon, kubelet_peer, node, tmp_path, notify_socket, config)
    kubelet_peer.wait_node_status("nvidia.com/mig-1g.5gb", (16, 16))
    kubelet_peer.wait_node_status("nvidia.com/mig-2g.10gb", (3, 3))
    mig = node.profile["gpus"][4]["mig_devices"][0]["uuid"]
    assert {f"{mig}::0", f"{mig}::1"} <= {d.id for d in kubelet_peer.devices("nvidia.com/mig-1g.5gb")}


def test_a_reload_that_changes_replicas_leaves_other_resources_alone(
    nvdp_daemon, kubelet_peer, mock_nvml, tmp_path, notify_socket
):
    node = mock_nvml.use("a100-mig-8")
    mixed = '[plugin]\nmig_strategy = "mixed"\n'
    daemon = serve(nvdp_daemon, kubelet_peer, node, tmp_path, notify_socket,
                   mixed + time_slicing("nvidia.com/mig-1g.5gb", 2))
    kubelet_peer.wait_node_status("nvidia.com/mig-1g.5gb", (16, 16))
    kubelet_peer.wait_node_status(GPU, (4, 4))
    daemon.config_path.write_text(mixed + time_slicing("nvidia.com/mig-1g.5gb", 3))
    daemon.signal(signal.SIGHUP)
    kubelet_peer.wait_node_status("nvidia.com/mig-1g.5gb", (24, 24))
    for untouched, n in ((GPU, 4), ("nvidia.com/mig-2g.10gb", 3), ("nvidia.com/mig-3g.20gb", 3)):
        assert kubelet_peer.history(untouched) == [(n, n)], f"a capacity gap on {untouched}"
        assert kubelet_peer.registration_count(untouched) == 1


def parents(ids) -> list[str]:
    return sorted(i.split("::")[0] for i in ids)


@pytest.mark.parametrize(
    ("policy", "offered", "size", "expected"),
    [
        # GPU 0 has all 4 replicas free, GPU 1 only one (3 in use): one replica.
        ("distributed", {0: 4, 1: 1}, 1, [0]),
        ("packed", {0: 4, 1: 1}, 1, [1]),
        # Two fresh GPUs, two replicas: spread over both, or both on the first.
        ("distributed", {0: 4, 2: 4}, 2, [0, 2]),
        ("packed", {0: 4, 2: 4}, 2, [0, 0]),
    ],
    ids=["distributed-least-used", "packed-most-used", "distributed-spreads", "packed-fills"],
)
def test_get_preferred_allocation_follows_the_shared_devices_policy(
    nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket, policy, offered, size, expected
):
    config = f'[plugin]\nshared_devices_allocation_policy = "{policy}"\n' + time_slicing()
    serve(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket, config)
    kubelet_peer.wait_node_status(GPU, (32, 32))
    available = [f"{uuid(h100, gpu)}::{n}" for gpu, free in offered.items() for n in range(4 - free, 4)]
    response = kubelet_peer.call_get_preferred_allocation(GPU, available, size=size)
    chosen = list(response.container_responses[0].deviceIDs)
    assert len(chosen) == size and set(chosen) <= set(available)
    assert parents(chosen) == sorted(uuid(h100, g) for g in expected)
