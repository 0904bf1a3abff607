"""Nothing slow runs on the supervisor's loop: a hung kubelet, a reload storm, a FIFO as config.

Each test orders events instead of timing them: READY, watchdog pings and
SIGTERM must all happen *while* kubelet still holds our Register call, and
Allocate must answer *between* reloads. Latency numbers are the benchmark's.
"""

from __future__ import annotations

import os
import signal

import grpc
import pytest

from nvdp_node.api import deviceplugin_v1beta1_pb2 as pb
from nvdp_node.api import deviceplugin_v1beta1_pb2_grpc as pb_grpc
from tests.daemon.conftest import clean_env
from tests.kubelet_peer.silent import SilentKubelet

GPU = "nvidia.com/gpu"


@pytest.fixture
def silent_kubelet(tmp_path):
    directory = tmp_path / "dp"
    directory.mkdir()
    kubelet = SilentKubelet(directory / "kubelet.sock")
    yield directory, kubelet
    kubelet.close()


def start_against(nvdp_daemon, directory, h100, tmp_path, notify_socket, extra_env=None):
    env = {**clean_env(), **h100.env(), "NOTIFY_SOCKET": str(notify_socket.path), **(extra_env or {})}
    return nvdp_daemon(directory, env=env, sysfs_root=tmp_path / "sys", config="")


def test_ready_goes_out_while_kubelet_holds_the_register_call(
    nvdp_daemon, silent_kubelet, h100, tmp_path, notify_socket
):
    directory, kubelet = silent_kubelet
    daemon = start_against(nvdp_daemon, directory, h100, tmp_path, notify_socket)
    notify_socket.wait_for(lambda m: m.get("READY") == "1", what="READY=1")
    assert kubelet.connected.wait(10), "nvdp never dialled kubelet"
    assert "registered nvidia.com/gpu" not in daemon.log()
    assert daemon.proc.poll() is None


def test_watchdog_pings_continue_while_register_hangs(nvdp_daemon, silent_kubelet, h100, tmp_path, notify_socket):
    directory, kubelet = silent_kubelet
    # WATCHDOG_USEC=1 s: a ping every 0.5 s; Register's deadline is 20 s.
    daemon = start_against(nvdp_daemon, directory, h100, tmp_path, notify_socket,
                           {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": ""})
    assert kubelet.connected.wait(10)
    for count in (1, 3):
        notify_socket.wait_for(
            lambda m, c=count: sum(x.get("WATCHDOG") == "1" for x in notify_socket.messages()) >= c,
            what=f"{count} watchdog ping(s) during the hung Register",
        )
    assert "registered nvidia.com/gpu" not in daemon.log(), "the pings must come while Register still hangs"


def test_sigterm_stops_nvdp_while_register_hangs(nvdp_daemon, silent_kubelet, h100, tmp_path, notify_socket):
    directory, kubelet = silent_kubelet
    daemon = start_against(nvdp_daemon, directory, h100, tmp_path, notify_socket)
    assert kubelet.connected.wait(10)
    notify_socket.wait_for(lambda m: m.get("READY") == "1")
    daemon.signal(signal.SIGTERM)
    # Well inside Register's 20 s deadline: the call is cancelled, not waited for.
    assert daemon.wait_exit(timeout=5) == 0
    assert not (directory / "nvidia-gpu.sock").exists()


def test_allocate_answers_between_back_to_back_reloads(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket):
    env = {**clean_env(), **h100.env(), "NOTIFY_SOCKET": str(notify_socket.path)}
    daemon = nvdp_daemon(kubelet_peer.plugin_dir, env=env, sysfs_root=tmp_path / "sys", config="")
    kubelet_peer.wait_node_status(GPU, (8, 8))
    gpu = h100.profile["gpus"][0]["uuid"]
    with grpc.insecure_channel(f"unix://{daemon.socket}") as channel:
        stub = pb_grpc.DevicePluginStub(channel)
        request = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=[gpu])])
        for _ in range(20):
            daemon.signal(signal.SIGHUP)
            response = stub.Allocate(request, timeout=5)
            assert response.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == gpu
    notify_socket.wait_for(lambda m: "reloaded" in daemon.log() and m.get("READY") == "1")
    assert daemon.proc.poll() is None
    assert kubelet_peer.registration_count(GPU) == 1
    assert kubelet_peer.node_status() == {GPU: (8, 8)}


def test_a_fifo_as_the_config_fails_the_reload_and_nothing_freezes(
    nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket
):
    env = {**clean_env(), **h100.env(), "NOTIFY_SOCKET": str(notify_socket.path)}
    daemon = nvdp_daemon(kubelet_peer.plugin_dir, env=env, sysfs_root=tmp_path / "sys", config="")
    kubelet_peer.wait_node_status(GPU, (8, 8))
    daemon.config_path.unlink()
    os.mkfifo(daemon.config_path)
    daemon.signal(signal.SIGHUP)
    _, message = notify_socket.wait_for(lambda m: "Reload failed" in m.get("STATUS", ""))
    assert "not a regular file" in message["STATUS"] or "FIFO" in message["STATUS"]
    assert kubelet_peer.call_allocate(GPU, [h100.profile["gpus"][1]["uuid"]]).container_responses
    assert daemon.proc.poll() is None
