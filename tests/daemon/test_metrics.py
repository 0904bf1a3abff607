"""Each metric family moves when the event that drives it happens (issue 16).

A real ``nvdp serve`` against the mock NVML and the kubelet test peer; the
metrics are read from the textfile it rewrites (parsed with
prometheus_client's own parser) or scraped from its loopback HTTP endpoint
with a real HTTP client.
"""

from __future__ import annotations

import signal
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nvdp_node.api import deviceplugin_v1beta1_pb2 as pb
from nvdp_node.api import deviceplugin_v1beta1_pb2_grpc as pb_grpc
from tests.daemon.conftest import clean_env

GPU = "nvidia.com/gpu"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def config(tmp_path: Path, extra: str = "") -> str:
    return (f'[metrics]\ntextfile = "{tmp_path}/nvdp.prom"\ntextfile_interval = 1\n{extra}\n'
            f'[labels]\npath = "{tmp_path}/features"\n')


def start(nvdp_daemon, kubelet_peer, node, tmp_path, *, extra: str = "", pod_resources: bool = False):
    env = {**clean_env(), **node.env()}
    return nvdp_daemon(kubelet_peer.plugin_dir, env=env, sysfs_root=tmp_path / "sys", config=config(tmp_path, extra),
                       args=("--state-file", str(tmp_path / "state.json")),
                       pod_resources=kubelet_peer.pod_resources_socket if pod_resources else "")


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The one sample of ``name`` whose labels include ``labels``; None when there is none."""
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    assert len(found) <= 1, f"{name}{labels} is ambiguous: {found}"
    return found[0] if found else None


def wait_metrics(path: Path, ok: Callable[[Samples], bool], timeout: float = 15.0) -> Samples:
    deadline = time.monotonic() + timeout
    samples: Samples = {}
    while time.monotonic() < deadline:
        try:
            samples = parse(path.read_text())
        except FileNotFoundError:
            samples = {}
        if samples and ok(samples):
            return samples
        time.sleep(0.1)
    raise AssertionError(f"{path} never matched; last samples: {sorted(samples.items())[:60]}")


def test_the_textfile_counts_devices_and_the_registration(nvdp_daemon, kubelet_peer, h100, tmp_path):
    start(nvdp_daemon, kubelet_peer, h100, tmp_path)
    kubelet_peer.wait_node_status(GPU, (8, 8))
    samples = wait_metrics(tmp_path / "nvdp.prom",
                           lambda s: value(s, "nvdp_resource_registered", resource=GPU) == 1)
    assert value(samples, "nvdp_resource_devices", resource=GPU) == 8
    assert value(samples, "nvdp_resource_healthy_devices", resource=GPU) == 8
    assert value(samples, "nvdp_registrations_total", resource=GPU) == 1
    assert (tmp_path / "nvdp.prom").stat().st_mode & 0o777 == 0o644


def test_an_xid_marks_the_gpu_unhealthy_and_is_counted_by_xid(nvdp_daemon, kubelet_peer, h100, tmp_path):
    start(nvdp_daemon, kubelet_peer, h100, tmp_path)
    kubelet_peer.wait_node_status(GPU, (8, 8))
    uuid = h100.profile["gpus"][2]["uuid"]
    h100.control.xid(2, 79)
    samples = wait_metrics(tmp_path / "nvdp.prom", lambda s: value(s, "nvdp_device_healthy", device=uuid) == 0)
    assert value(samples, "nvdp_gpu_xid_events_total", uuid=uuid, xid="79") == 1
    assert value(samples, "nvdp_gpu_last_xid", uuid=uuid, index="2") == 79
    assert value(samples, "nvdp_resource_healthy_devices", resource=GPU) == 7


def test_an_ignored_xid_is_counted_but_leaves_the_gpu_healthy(nvdp_daemon, kubelet_peer, h100, tmp_path):
    start(nvdp_daemon, kubelet_peer, h100, tmp_path)
    kubelet_peer.wait_node_status(GPU, (8, 8))
    uuid = h100.profile["gpus"][1]["uuid"]
    h100.control.xid(1, 13)
    samples = wait_metrics(tmp_path / "nvdp.prom",
                           lambda s: value(s, "nvdp_gpu_xid_events_total", uuid=uuid, xid="13") == 1)
    assert value(samples, "nvdp_device_healthy", device=uuid) == 1


def test_a_lost_gpu_is_marked_lost(nvdp_daemon, kubelet_peer, h100, tmp_path):
    start(nvdp_daemon, kubelet_peer, h100, tmp_path)
    kubelet_peer.wait_node_status(GPU, (8, 8))
    uuid = h100.profile["gpus"][3]["uuid"]
    h100.control.lose(3)
    samples = wait_metrics(tmp_path / "nvdp.prom", lambda s: value(s, "nvdp_gpu_lost", uuid=uuid) == 1)
    assert value(samples, "nvdp_device_healthy", device=uuid) == 0


def test_a_kubelet_restart_counts_a_reregistration_with_its_cause(nvdp_daemon, kubelet_peer, h100, tmp_path):
    start(nvdp_daemon, kubelet_peer, h100, tmp_path)
    kubelet_peer.wait_registered(GPU)
    kubelet_peer.restart()
    kubelet_peer.wait_registered(GPU, count=2)
    samples = wait_metrics(tmp_path / "nvdp.prom",
                           lambda s: value(s, "nvdp_registrations_total", resource=GPU) == 2)
    assert value(samples, "nvdp_reregistrations_total", resource=GPU, cause="kubelet_restart") == 1


def test_a_deleted_plugin_socket_counts_a_reregistration_caused_by_it(nvdp_daemon, kubelet_peer, h100, tmp_path):
    daemon = start(nvdp_daemon, kubelet_peer, h100, tmp_path)
    kubelet_peer.wait_registered(GPU)
    daemon.socket.unlink()
    kubelet_peer.wait_registered(GPU, count=2)
    samples = wait_metrics(tmp_path / "nvdp.prom",
                           lambda s: value(s, "nvdp_registrations_total", resource=GPU) == 2)
    assert value(samples, "nvdp_reregistrations_total", resource=GPU, cause="socket_deleted") == 1
    assert value(samples, "nvdp_reregistrations_total", resource=GPU, cause="kubelet_restart") is None


def test_reloads_are_counted_by_result_and_a_good_one_moves_the_generation(
    nvdp_daemon, kubelet_peer, h100, tmp_path
):
    daemon = start(nvdp_daemon, kubelet_peer, h100, tmp_path)
    kubelet_peer.wait_registered(GPU)
    path = tmp_path / "nvdp.prom"
    wait_metrics(path, lambda s: value(s, "nvdp_config_generation") == 1)
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("reloaded configuration")
    samples = wait_metrics(path, lambda s: value(s, "nvdp_reloads_total", result="success") == 1)
    assert value(samples, "nvdp_config_generation") == 2
    daemon.config_path.write_text(daemon.config_path.read_text() + "\nbogus = 1\n")
    daemon.signal(signal.SIGHUP)
    samples = wait_metrics(path, lambda s: value(s, "nvdp_reloads_total", result="failure") == 1)
    assert value(samples, "nvdp_config_generation") == 2


def test_allocate_is_counted_timed_and_its_holder_named(nvdp_daemon, kubelet_peer, h100, tmp_path):
    start(nvdp_daemon, kubelet_peer, h100, tmp_path, pod_resources=True)
    kubelet_peer.wait_node_status(GPU, (8, 8))
    response = kubelet_peer.allocate(GPU, 1, pod_uid="uid-1", pod_name="trainer", namespace="ml",
                                     container_name="cuda")
    device = response.envs["NVIDIA_VISIBLE_DEVICES"]
    samples = wait_metrics(tmp_path / "nvdp.prom", lambda s: value(
        s, "nvdp_device_allocation_info", device=device) == 1, timeout=20)
    assert value(samples, "nvdp_device_allocation_info", device=device, namespace="ml", pod="trainer",
                 container="cuda") == 1
    assert value(samples, "nvdp_rpc_requests_total", resource=GPU, method="Allocate", code="OK") == 1
    assert value(samples, "nvdp_rpc_duration_seconds_count", resource=GPU, method="Allocate") == 1


def test_a_rejected_allocate_is_counted_by_its_grpc_code(nvdp_daemon, kubelet_peer, h100, tmp_path):
    daemon = start(nvdp_daemon, kubelet_peer, h100, tmp_path)
    kubelet_peer.wait_registered(GPU)
    with grpc.insecure_channel(f"unix://{daemon.socket}") as channel:
        request = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=["GPU-nope"])])
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.DevicePluginStub(channel).Allocate(request, timeout=5)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    wait_metrics(tmp_path / "nvdp.prom", lambda s: value(
        s, "nvdp_rpc_requests_total", resource=GPU, method="Allocate", code="INVALID_ARGUMENT") == 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_loopback_endpoint_serves_the_same_families(nvdp_daemon, kubelet_peer, h100, tmp_path):
    port = free_port()
    daemon = start(nvdp_daemon, kubelet_peer, h100, tmp_path, extra=f'listen = "127.0.0.1:{port}"')
    kubelet_peer.wait_registered(GPU)
    daemon.wait_log(f"serving metrics on http://127.0.0.1:{port}/metrics")
    deadline = time.monotonic() + 10
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            samples = parse(answer.read().decode())
        if value(samples, "nvdp_resource_registered", resource=GPU) == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert value(samples, "nvdp_resource_registered", resource=GPU) == 1
    assert value(samples, "nvdp_build_info", driver=h100.profile["driver_version"]) == 1


def test_a_non_loopback_endpoint_without_allow_remote_is_refused(nvdp_daemon, kubelet_peer, h100, tmp_path):
    daemon = start(nvdp_daemon, kubelet_peer, h100, tmp_path, extra='listen = "0.0.0.0:9400"')
    assert daemon.wait_exit() == 78
    assert "metrics.listen" in daemon.log() and "allow_remote" in daemon.log()


def test_a_port_in_use_is_a_note_and_the_daemon_keeps_serving(nvdp_daemon, kubelet_peer, h100, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = start(nvdp_daemon, kubelet_peer, h100, tmp_path, extra=f'listen = "127.0.0.1:{port}"')
        kubelet_peer.wait_registered(GPU)
        daemon.wait_log(f"cannot serve metrics on 127.0.0.1:{port}")
        state = tmp_path / "state.json"
        deadline = time.monotonic() + 10
        while "cannot serve metrics" not in (state.read_text() if state.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "Address already in use" in state.read_text()
        assert daemon.proc.poll() is None
