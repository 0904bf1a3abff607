"""Never hand out a GPU twice: GPUs that running pods hold under another resource name.

Seen with the real kubelet: after a reload renamed nvidia.com/gpu → nvidia.com/h100,
a pod asking for 8 nvidia.com/h100 was admitted and got the 6 GPUs that running
pods still held (kubelet accounts per resource name). nvdp asks kubelet's
PodResources API and advertises those GPUs Unhealthy under the new name until
the pods are gone.
"""

from __future__ import annotations

import signal

import pytest

from tests.daemon.conftest import clean_env
from tests.kubelet_peer import AdmissionError

OLD, NEW = "nvidia.com/gpu", "nvidia.com/h100"


def start(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket, config=""):
    env = {**clean_env(), **h100.env(), "NOTIFY_SOCKET": str(notify_socket.path)}
    return nvdp_daemon(kubelet_peer.plugin_dir, env=env, sysfs_root=tmp_path / "sys", config=config,
                       pod_resources=kubelet_peer.pod_resources_socket)


def held_by_pod(kubelet_peer, count: int) -> set[str]:
    response = kubelet_peer.allocate(OLD, count, pod_uid="pod-a", pod_name="training")
    return set(response.envs["NVIDIA_VISIBLE_DEVICES"].split(","))


def unhealthy(kubelet_peer, resource: str) -> set[str]:
    return {d.id for d in kubelet_peer.devices(resource) if d.health != "Healthy"}


def test_after_a_rename_by_reload_gpus_held_under_the_old_name_are_not_offered(
    nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket
):
    daemon = start(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket)
    kubelet_peer.wait_node_status(OLD, (8, 8))
    held = held_by_pod(kubelet_peer, 6)
    daemon.config_path.write_text(f'resource_name = "{NEW}"\n')
    daemon.signal(signal.SIGHUP)
    kubelet_peer.wait_node_status(NEW, (2, 8))  # (allocatable, capacity)
    assert unhealthy(kubelet_peer, NEW) == held
    with pytest.raises(AdmissionError):
        kubelet_peer.allocate(NEW, 8, pod_uid="pod-b")
    notify_socket.wait_for(lambda m: "6 held by pods under another resource name" in m.get("STATUS", ""))
    free = kubelet_peer.allocate(NEW, 2, pod_uid="pod-c")
    assert not set(free.envs["NVIDIA_VISIBLE_DEVICES"].split(",")) & held, "a held GPU was handed out again"


def test_held_gpus_come_back_once_their_pod_is_gone(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket):
    daemon = start(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket)
    kubelet_peer.wait_node_status(OLD, (8, 8))
    held_by_pod(kubelet_peer, 6)
    daemon.config_path.write_text(f'resource_name = "{NEW}"\n')
    daemon.signal(signal.SIGHUP)
    kubelet_peer.wait_node_status(NEW, (2, 8))
    kubelet_peer.release("pod-a")
    kubelet_peer.wait_node_status(NEW, (8, 8))
    daemon.wait_log("released by their pods, advertised again")


def test_a_restart_with_a_new_name_also_respects_running_pods(
    nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket
):
    first = start(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket)
    kubelet_peer.wait_node_status(OLD, (8, 8))
    held = held_by_pod(kubelet_peer, 3)
    assert first.stop() == 0
    start(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket, config=f'resource_name = "{NEW}"\n')
    kubelet_peer.wait_node_status(NEW, (5, 8))
    assert unhealthy(kubelet_peer, NEW) == held
    assert kubelet_peer.registration_count(NEW) == 1, "the held GPUs were known before Register"


def test_pods_under_the_same_name_do_not_count_as_held(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket):
    daemon = start(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket)
    kubelet_peer.wait_node_status(OLD, (8, 8))
    held_by_pod(kubelet_peer, 4)
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("reloaded configuration")
    notify_socket.wait_for(lambda m: m.get("STATUS") == "Serving 8 GPUs as nvidia.com/gpu, registered with kubelet"
                           and "reloaded configuration" in daemon.log())
    assert kubelet_peer.node_status() == {OLD: (8, 8)}


def test_an_unreachable_podresources_is_said_in_the_log_and_status(
    nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket
):
    kubelet_peer.pod_resources_down()
    daemon = start(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket)
    kubelet_peer.wait_node_status(OLD, (8, 8))
    daemon.wait_log("cannot tell whether running pods hold these GPUs")
    notify_socket.wait_for(lambda m: "PodResources unreachable" in m.get("STATUS", ""))


def test_a_kubelet_that_starts_after_nvdp_brings_podresources_and_a_clean_status(
    nvdp_daemon, kubelet_peer_factory, h100, tmp_path, notify_socket
):
    peer = kubelet_peer_factory(start=False)
    peer.plugin_dir.mkdir(parents=True, exist_ok=True)
    daemon = start(nvdp_daemon, peer, h100, tmp_path, notify_socket)
    daemon.wait_log("cannot tell whether running pods hold these GPUs")
    peer.start()
    peer.wait_node_status(OLD, (8, 8))
    notify_socket.wait_for(lambda m: m.get("STATUS") == "Serving 8 GPUs as nvidia.com/gpu, registered with kubelet")
    daemon.wait_log("PodResources answers again")
