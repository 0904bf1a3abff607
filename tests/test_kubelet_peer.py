"""The kubelet stand-in behaves like kubelet's device manager (kubelet-api.md §2).

Everything here talks real gRPC over real unix sockets: a tiny, steerable DevicePlugin
servicer (tests/kubelet_peer_tests/tiny_plugin.py) registers with the KubeletPeer the way a
device plugin registers with kubelet. Kubelet-1.32 specifics and the PodResources server are
tested in tests/kubelet_peer_tests/.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from nvdp_node.api import deviceplugin_v1beta1_pb2 as pb
from nvdp_node.api import deviceplugin_v1beta1_pb2_grpc as pb_grpc
from nvdp_node.api import podresources_v1_pb2 as pr
from nvdp_node.api import podresources_v1_pb2_grpc as pr_grpc
from tests.kubelet_peer import (
    CHECKPOINT_FILE,
    AdmissionError,
    ContainerStartError,
    KubeletPeer,
    is_extended_resource_name,
)
from tests.kubelet_peer_tests.tiny_plugin import RES, TinyPlugin, dev, plugin_factory, rpc_error_text, tiny_devices

REPO = Path(__file__).resolve().parents[1]
GRACE = 0.5


@pytest.fixture
def plugins(kubelet_peer: KubeletPeer) -> Iterator[Callable[..., TinyPlugin]]:
    with plugin_factory(kubelet_peer.plugin_dir) as make:
        yield make


# --------------------------------------------------------------------------- registration


def test_register_rejects_an_unsupported_version_with_kubelets_exact_text(kubelet_peer, plugins):
    plugin = plugins([dev("a")])
    with pytest.raises(grpc.RpcError) as excinfo:
        plugin.register(version="v1alpha")
    assert rpc_error_text(excinfo) == (
        grpc.StatusCode.UNKNOWN,
        'requested API version "v1alpha" is not supported by kubelet. Supported version is ["v1beta1"]',
    )
    assert plugin.requests == []
    assert kubelet_peer.node_status() == {}


BAD_NAMES = [
    "gpu",
    "kubernetes.io/gpu",
    "foo.kubernetes.io/gpu",
    "requests.nvidia.com/gpu",
    "Nvidia.com/gpu",
    "nvidia.com/" + "g" * 64,
    "nvidia.com/",
    "/gpu",
    "nvidia.com/gpu/extra",
    "nvidia.com/-gpu",
    "nvidia.com/gpu-",
    "nvidia_com/gpu",
    "x" * 245 + ".com/gpu",
]
GOOD_NAMES = ["nvidia.com/gpu", "nvidia.com/mig-1g.10gb", "nvidia.com/gpu.shared", "nvidia.com/GPU_x", "a/b"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_register_rejects_an_invalid_resource_name_with_kubelets_exact_text(kubelet_peer, plugins, name):
    plugin = plugins([dev("a")])
    with pytest.raises(grpc.RpcError) as excinfo:
        plugin.register(resource=name)
    assert rpc_error_text(excinfo) == (grpc.StatusCode.UNKNOWN, f'the ResourceName "{name}" is invalid')
    assert plugin.requests == []


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_register_accepts_a_valid_extended_resource_name(kubelet_peer, plugins, name):
    plugins([dev("a")]).register(resource=name)
    kubelet_peer.wait_node_status(name, (1, 1))


def test_resource_name_rules_match_kubelets_prefix_length_limit():
    assert is_extended_resource_name("x" * 244 + "/gpu")  # "requests." + 244 = 253
    assert not is_extended_resource_name("x" * 245 + "/gpu")
    assert is_extended_resource_name("nvidia.com/" + "g" * 63)


def test_registrations_are_recorded_and_counted_even_when_rejected(kubelet_peer, plugins):
    plugin = plugins([dev("a")])
    with pytest.raises(grpc.RpcError):
        plugin.register(version="v0")
    plugin.register()
    regs = kubelet_peer.registrations
    assert [(r.resource, r.endpoint, r.version, r.ok) for r in regs] == [
        (RES, "tiny.sock", "v0", False),
        (RES, "tiny.sock", "v1beta1", True),
    ]
    assert regs[0].result.startswith("requested API version") and regs[1].result == "ok"
    assert regs[1].socket_path == str(kubelet_peer.plugin_dir / "tiny.sock")
    assert kubelet_peer.registration_count(RES) == 2


def test_register_returns_only_after_get_device_plugin_options_answered(kubelet_peer, plugins):
    plugin = plugins([dev("a")])
    plugin.register()
    assert [m for m, _ in plugin.requests][:1] == ["GetDevicePluginOptions"]
    assert len(kubelet_peer.calls_to("GetDevicePluginOptions")) == 1


def test_options_failure_fails_register_and_the_resource_never_appears(kubelet_peer, plugins):
    plugin = plugins([dev("a"), dev("b")])
    plugin.fail["GetDevicePluginOptions"] = "injected options failure"
    with pytest.raises(grpc.RpcError) as excinfo:
        plugin.register()
    assert rpc_error_text(excinfo) == (
        grpc.StatusCode.UNKNOWN,
        "failed to get device plugin options: rpc error: code = Unknown desc = injected options failure",
    )
    time.sleep(0.2)
    assert RES not in kubelet_peer.node_status()
    assert [m for m, _ in plugin.requests] == ["GetDevicePluginOptions"]


def test_dial_failure_fails_register_after_the_dial_timeout(kubelet_peer_factory):
    peer = kubelet_peer_factory(dial_timeout=0.3)
    with grpc.insecure_channel(f"unix:{peer.socket_path}") as ch:
        with pytest.raises(grpc.RpcError) as excinfo:
            pb_grpc.RegistrationStub(ch).Register(
                pb.RegisterRequest(version="v1beta1", endpoint="nobody.sock", resource_name=RES), timeout=5
            )
    assert excinfo.value.details() == "failed to dial device plugin: context deadline exceeded"
    assert peer.node_status() == {}


@pytest.mark.parametrize("kubelet_peer", [{"dial_timeout": 0.2}], indirect=True)
def test_endpoint_is_joined_under_the_directory_even_when_absolute(kubelet_peer, plugins):
    plugin = plugins([dev("a")])
    with pytest.raises(grpc.RpcError):
        plugin.register(endpoint=str(plugin.socket_path))  # dir + abs path does not exist
    assert kubelet_peer.registrations[-1].socket_path == str(kubelet_peer.plugin_dir) + str(plugin.socket_path)


# --------------------------------------------------------------------------- §2.9 oracle


def test_one_device_goes_healthy_unhealthy_healthy(kubelet_peer, plugins):
    plugin = plugins([dev("a")])
    plugin.register()
    kubelet_peer.wait_node_status(RES, (1, 1))
    plugin.set_health("a", "Unhealthy")
    kubelet_peer.wait_node_status(RES, (0, 1))
    plugin.set_health("a", "Healthy")
    kubelet_peer.wait_node_status(RES, (1, 1))
    assert kubelet_peer.history(RES) == [(1, 1), (0, 1), (1, 1)]


def test_four_devices_one_then_two_unhealthy_then_recover(kubelet_peer, plugins):
    plugin = plugins([dev(i) for i in "abcd"])
    plugin.register()
    kubelet_peer.wait_node_status(RES, (4, 4))
    steps = [("a", "Unhealthy", (3, 4)), ("a", "Healthy", (4, 4)), ("b", "Unhealthy", (3, 4)),
             ("c", "Unhealthy", (2, 4)), ("b", "Healthy", (3, 4)), ("c", "Healthy", (4, 4))]
    for dev_id, health, expected in steps:
        plugin.set_health(dev_id, health)
        kubelet_peer.wait_node_status(RES, expected)
    assert kubelet_peer.history(RES) == [(4, 4), (3, 4), (4, 4), (3, 4), (2, 4), (3, 4), (4, 4)]


def test_a_pod_holding_a_device_that_turns_unhealthy_keeps_capacity(kubelet_peer, plugins):
    plugin = plugins([dev("a")])
    plugin.register()
    kubelet_peer.wait_node_status(RES, (1, 1))
    kubelet_peer.allocate(RES, 1, pod_uid="pod-1")
    assert kubelet_peer.in_use(RES) == {"a"}
    plugin.set_health("a", "Unhealthy")
    kubelet_peer.wait_node_status(RES, (0, 1))
    assert kubelet_peer.release("pod-1") == 1
    assert kubelet_peer.node_status()[RES] == (0, 1)
    assert kubelet_peer.in_use(RES) == set()


def test_list_and_watch_failing_immediately_gives_zero_and_is_never_retried(kubelet_peer, plugins):
    plugin = plugins([dev("a"), dev("b")])
    plugin.list_and_watch_fail_after = 0
    plugin.register()
    kubelet_peer.wait_node_status(RES, (0, 0))
    time.sleep(0.3)
    assert len(plugin.called("ListAndWatch")) == 1
    assert len(kubelet_peer.calls_to("ListAndWatch")) == 1


@pytest.mark.parametrize("kubelet_peer", [GRACE], indirect=True)
def test_list_and_watch_failing_after_the_first_message_zeroes_after_the_grace(kubelet_peer, plugins):
    plugin = plugins([dev("a"), dev("b")])
    plugin.list_and_watch_fail_after = 1
    plugin.register()
    kubelet_peer.wait_node_status(RES, (0, 2))
    assert kubelet_peer.endpoint_stopped(RES) is True
    t0 = time.monotonic()
    kubelet_peer.wait_node_status(RES, (0, 0), timeout=5)
    assert time.monotonic() - t0 >= GRACE * 0.5
    assert kubelet_peer.history(RES)[-2:] == [(0, 2), (0, 0)]
    assert kubelet_peer.devices(RES) == []
    assert len(plugin.called("ListAndWatch")) == 1


@pytest.mark.parametrize("kubelet_peer", [GRACE], indirect=True)
def test_a_stopped_plugin_server_drops_allocatable_then_capacity_after_the_grace(kubelet_peer, plugins):
    plugin = plugins([dev("a"), dev("b")])
    plugin.register()
    kubelet_peer.wait_node_status(RES, (2, 2))
    plugin.stop()
    kubelet_peer.wait_node_status(RES, (0, 2))
    assert {d.health for d in kubelet_peer.devices(RES)} == {"Unhealthy"}
    kubelet_peer.wait_node_status(RES, (0, 0), timeout=5)
    assert kubelet_peer.history(RES) == [(2, 2), (0, 2), (0, 0)]


@pytest.mark.parametrize("kubelet_peer", [GRACE], indirect=True)
def test_a_new_registration_within_the_grace_revives_the_resource(kubelet_peer, plugins):
    plugin = plugins([dev("a")])
    plugin.register()
    kubelet_peer.wait_node_status(RES, (1, 1))
    plugin.stop()
    kubelet_peer.wait_node_status(RES, (0, 1))
    plugin.start()
    plugin.register()
    kubelet_peer.wait_node_status(RES, (1, 1))
    time.sleep(GRACE * 1.5)
    assert kubelet_peer.node_status()[RES] == (1, 1)


# --------------------------------------------------------------------------- accounting details


def test_each_message_replaces_the_whole_device_set(kubelet_peer, plugins):
    plugin = plugins([dev("a"), dev("b"), dev("c")])
    plugin.register()
    kubelet_peer.wait_node_status(RES, (3, 3))
    plugin.set_devices([dev("c"), dev("d", "Unhealthy")])
    kubelet_peer.wait_node_status(RES, (1, 2))
    assert [(d.id, d.health) for d in kubelet_peer.devices(RES)] == [("c", "Healthy"), ("d", "Unhealthy")]


def test_only_the_exact_string_healthy_counts_as_healthy(kubelet_peer, plugins):
    plugin = plugins([dev("a"), dev("b", "healthy"), dev("c", ""), dev("d", "Unknown")])
    plugin.register()
    kubelet_peer.wait_node_status(RES, (1, 4))


def test_topology_from_messages_is_kept_per_device(kubelet_peer, plugins):
    plugin = plugins([dev("a", numa=(0,)), dev("b", numa=(1,)), dev("c")])
    plugin.register()
    kubelet_peer.wait_node_status(RES, (3, 3))
    assert kubelet_peer.topology(RES) == {"a": (0,), "b": (1,), "c": ()}


def test_no_resource_is_shown_before_the_first_list_and_watch_message(kubelet_peer, plugins):
    plugin = plugins([])
    plugin._version = -1  # the stream sends nothing until set_devices
    plugin.register()
    kubelet_peer.wait_until(lambda: kubelet_peer.calls_to("ListAndWatch"))
    time.sleep(0.1)
    assert RES not in kubelet_peer.node_status()
    plugin.set_devices([dev("a")])
    kubelet_peer.wait_node_status(RES, (1, 1))


@pytest.mark.parametrize("kubelet_peer", [{"grace_period": GRACE, "stale_stream_disconnects": False}], indirect=True)
def test_with_kubelet_1_36_tracking_a_replaced_endpoints_stream_ending_does_not_zero_the_new_one(kubelet_peer, plugins):
    old = plugins([dev("a")], name="old.sock")
    new = plugins([dev("x"), dev("y")], name="new.sock")
    old.register()
    kubelet_peer.wait_node_status(RES, (1, 1))
    new.register()
    kubelet_peer.wait_node_status(RES, (2, 2))
    old.set_devices([dev("a"), dev("b"), dev("c")])  # updates from the replaced stream are ignored
    old.stop()
    time.sleep(GRACE * 1.5)
    assert kubelet_peer.node_status()[RES] == (2, 2)
    assert kubelet_peer.endpoint_socket(RES) == str(new.socket_path)


# --------------------------------------------------------------------------- allocation


def test_get_preferred_allocation_is_not_called_when_not_advertised(kubelet_peer, plugins):
    plugin = plugins([dev("a"), dev("b"), dev("c")], preferred=False)
    plugin.register()
    kubelet_peer.wait_node_status(RES, (3, 3))
    resp = kubelet_peer.allocate(RES, 2)
    assert plugin.called("GetPreferredAllocation") == []
    assert kubelet_peer.calls_to("GetPreferredAllocation") == []
    assert tiny_devices(resp) == ["a", "b"]


def test_get_preferred_allocation_gets_available_must_include_and_the_total_size(kubelet_peer, plugins):
    plugin = plugins([dev(i) for i in "abcde"], preferred=True)
    plugin.register()
    kubelet_peer.wait_node_status(RES, (5, 5))
    kubelet_peer.allocate(RES, 1, pod_uid="busy")  # "a" is in use from now on
    plugin.preferred_answer = ["e", "zzz-unknown"]  # intersected with the candidates, rest filled
    resp = kubelet_peer.allocate(RES, 3, must_include=["b"])
    (req,) = plugin.called("GetPreferredAllocation")[-1:]
    creq = req.container_requests[0]
    assert len(req.container_requests) == 1
    assert sorted(creq.available_deviceIDs) == ["b", "c", "d", "e"]
    assert list(creq.must_include_deviceIDs) == ["b"]
    assert creq.allocation_size == 3
    assert tiny_devices(resp) == ["b", "c", "e"]


def test_preferred_allocation_honours_a_numa_hint(kubelet_peer, plugins):
    plugin = plugins([dev("a", numa=(0,)), dev("b", numa=(1,)), dev("c", numa=(1,)), dev("d", numa=(1,))],
                     preferred=True)
    plugin.register()
    kubelet_peer.wait_node_status(RES, (4, 4))
    resp = kubelet_peer.allocate(RES, 2, numa_hint=[1])
    creq = plugin.called("GetPreferredAllocation")[-1].container_requests[0]
    assert sorted(creq.available_deviceIDs) == ["b", "c", "d"]
    assert tiny_devices(resp) == ["b", "c"]


def test_a_get_preferred_allocation_error_fails_admission(kubelet_peer, plugins):
    plugin = plugins([dev("a"), dev("b")], preferred=True)
    plugin.fail["GetPreferredAllocation"] = "boom"
    plugin.register()
    kubelet_peer.wait_node_status(RES, (2, 2))
    with pytest.raises(AdmissionError, match="^device plugin GetPreferredAllocation rpc failed with err: "
                                             "rpc error: code = Unknown desc = boom$"):
        kubelet_peer.allocate(RES, 1)
    assert plugin.called("Allocate") == []
    assert kubelet_peer.in_use(RES) == set()


def test_allocate_carries_exactly_one_container_request(kubelet_peer, plugins):
    plugin = plugins([dev("a"), dev("b")])
    plugin.register()
    kubelet_peer.wait_node_status(RES, (2, 2))
    kubelet_peer.allocate(RES, 2, pod_uid="p")
    (req,) = plugin.called("Allocate")
    assert len(req.container_requests) == 1
    assert sorted(req.container_requests[0].devices_ids) == ["a", "b"]
    alloc = kubelet_peer.allocations[-1]
    assert (alloc.pod_uid, alloc.resource, alloc.device_ids) == ("p", RES, ("a", "b"))


def test_a_container_that_already_has_devices_is_not_allocated_again(kubelet_peer, plugins):
    plugin = plugins([dev("a"), dev("b")])
    plugin.register()
    kubelet_peer.wait_node_status(RES, (2, 2))
    first = kubelet_peer.allocate(RES, 1, pod_uid="p")
    again = kubelet_peer.allocate(RES, 1, pod_uid="p")
    assert first == again
    assert len(plugin.called("Allocate")) == 1


def test_pre_start_container_is_called_only_when_required(kubelet_peer, plugins):
    plain = plugins([dev("a")], name="plain.sock")
    plain.register(resource="example.com/plain")
    needy = plugins([dev("x")], name="needy.sock", pre_start=True)
    needy.register(resource="example.com/needy")
    kubelet_peer.wait_node_status("example.com/needy", (1, 1))
    kubelet_peer.wait_node_status("example.com/plain", (1, 1))
    kubelet_peer.allocate("example.com/plain", 1)
    kubelet_peer.allocate("example.com/needy", 1, pod_uid="p")
    assert plain.called("PreStartContainer") == []
    assert [list(r.devices_ids) for r in needy.called("PreStartContainer")] == [["x"]]
    kubelet_peer.start_container("p")  # every container (re)start calls it again
    assert len(needy.called("PreStartContainer")) == 2
    assert [c.method for c in kubelet_peer.calls if c.resource == "example.com/needy"][-3:] == [
        "Allocate", "PreStartContainer", "PreStartContainer"]


def test_a_pre_start_container_error_fails_the_container_start(kubelet_peer, plugins):
    plugin = plugins([dev("a")], pre_start=True)
    plugin.fail["PreStartContainer"] = "not today"
    plugin.register()
    kubelet_peer.wait_node_status(RES, (1, 1))
    with pytest.raises(ContainerStartError, match="^device plugin PreStartContainer rpc failed with err: "
                                                  "rpc error: code = Unknown desc = not today$"):
        kubelet_peer.allocate(RES, 1)


def test_an_empty_container_responses_is_an_error(kubelet_peer, plugins):
    plugin = plugins([dev("a")])
    plugin.allocate_response = pb.AllocateResponse()
    plugin.register()
    kubelet_peer.wait_node_status(RES, (1, 1))
    with pytest.raises(AdmissionError, match="^no containers return in allocation response"):
        kubelet_peer.allocate(RES, 1)
    assert kubelet_peer.in_use(RES) == set()


def test_admission_errors_use_kubelets_texts(kubelet_peer, plugins):
    with pytest.raises(AdmissionError, match=f"^cannot allocate unregistered device {RES}$"):
        kubelet_peer.allocate(RES, 1)
    plugin = plugins([dev("a"), dev("b", "Unhealthy")])
    plugin.register()
    kubelet_peer.wait_node_status(RES, (1, 2))
    with pytest.raises(AdmissionError, match=rf"^requested number of devices unavailable for {RES}\. "
                                             r"Requested: 2, Available: 1$"):
        kubelet_peer.allocate(RES, 2)
    plugin.set_health("a", "Unhealthy")
    kubelet_peer.wait_node_status(RES, (0, 2))
    with pytest.raises(AdmissionError, match=f"^no healthy devices present; cannot allocate unhealthy devices {RES}$"):
        kubelet_peer.allocate(RES, 1)
    assert plugin.called("Allocate") == []


def test_an_allocate_error_fails_admission_and_frees_the_devices(kubelet_peer, plugins):
    plugin = plugins([dev("a")])
    plugin.fail["Allocate"] = "nope"
    plugin.register()
    kubelet_peer.wait_node_status(RES, (1, 1))
    with pytest.raises(AdmissionError, match="^rpc error: code = Unknown desc = nope$"):
        kubelet_peer.allocate(RES, 1)
    assert kubelet_peer.in_use(RES) == set()


def test_call_allocate_sends_exactly_the_given_ids_and_surfaces_grpc_errors(kubelet_peer, plugins):
    plugin = plugins([dev("a")])
    plugin.register()
    kubelet_peer.wait_node_status(RES, (1, 1))
    resp = kubelet_peer.call_allocate(RES, ["no-such", "a", "a"])
    assert list(plugin.called("Allocate")[0].container_requests[0].devices_ids) == ["no-such", "a", "a"]
    assert len(resp.container_responses) == 1
    plugin.fail["Allocate"] = "unknown device no-such"
    with pytest.raises(grpc.RpcError) as excinfo:
        kubelet_peer.call_allocate(RES, ["no-such"])
    assert excinfo.value.details() == "unknown device no-such"
    assert kubelet_peer.calls_to("Allocate")[-1].error == "rpc error: code = Unknown desc = unknown device no-such"


# --------------------------------------------------------------------------- restart & checkpoint


def test_restart_deletes_every_non_directory_entry_but_the_checkpoint(kubelet_peer, plugins):
    d = kubelet_peer.plugin_dir
    plugin = plugins([dev("a")])
    plugin.register()
    kubelet_peer.wait_node_status(RES, (1, 1))
    (d / "DEPRECATION").write_text("")
    (d / "subdir").mkdir()
    other = socket.socket(socket.AF_UNIX)
    other.bind(str(d / "other.sock"))
    checkpoint = (d / CHECKPOINT_FILE).read_bytes()
    try:
        elapsed = kubelet_peer.restart()
    finally:
        other.close()
    assert elapsed < 0.1
    assert sorted(os.listdir(d)) == ["kubelet.sock", CHECKPOINT_FILE, "subdir"]
    assert (d / CHECKPOINT_FILE).read_bytes() == checkpoint
    assert kubelet_peer.last_cleanup_removed == ["DEPRECATION", "other.sock", "tiny.sock"]
    assert (d / "kubelet.sock").is_socket()
    plugin.stop()
    plugin.start()
    plugin.register()  # served again on the new kubelet.sock
    kubelet_peer.wait_node_status(RES, (1, 1))


def test_restart_leaves_the_resource_pre_stopped_at_zero_until_the_plugin_registers_again(kubelet_peer, plugins):
    plugin = plugins([dev("a"), dev("b")])
    plugin.register()
    kubelet_peer.wait_node_status(RES, (2, 2))
    kubelet_peer.restart()
    assert kubelet_peer.node_status()[RES] == (0, 0)
    assert kubelet_peer.endpoint_stopped(RES) is True
    plugin.stop()  # its socket is gone: serve again, then register again
    plugin.start()
    plugin.register()
    kubelet_peer.wait_node_status(RES, (2, 2))
    assert kubelet_peer.history(RES) == [(2, 2), (0, 0), (2, 2)]
    assert len(plugin.called("ListAndWatch")) == 2


def test_restart_ends_the_plugins_list_and_watch_stream(kubelet_peer, plugins):
    plugin = plugins([dev("a")])
    plugin.register()
    kubelet_peer.wait_node_status(RES, (1, 1))
    plugin.wait_streams(1)
    kubelet_peer.restart()
    plugin.wait_streams(0)  # the old kubelet's connection is gone
    assert any("ListAndWatch ended" in e for _, e in kubelet_peer.events)


@pytest.mark.parametrize("kubelet_peer", [GRACE], indirect=True)
def test_a_pre_stopped_resource_is_removed_after_the_grace(kubelet_peer, plugins):
    plugin = plugins([dev("a")])
    plugin.register()
    kubelet_peer.wait_node_status(RES, (1, 1))
    kubelet_peer.restart()
    time.sleep(GRACE * 1.5)
    assert kubelet_peer.node_status()[RES] == (0, 0)
    assert kubelet_peer.endpoint_stopped(RES) is None
    assert RES not in kubelet_peer.read_checkpoint()["Data"]["RegisteredDevices"]


def test_restart_keeps_allocations_from_the_checkpoint(kubelet_peer, plugins):
    plugin = plugins([dev("a"), dev("b")])
    plugin.register()
    kubelet_peer.wait_node_status(RES, (2, 2))
    kubelet_peer.allocate(RES, 1, pod_uid="p")
    kubelet_peer.restart()
    assert kubelet_peer.in_use(RES) == {"a"}
    plugin.stop()
    plugin.start()
    plugin.register()
    kubelet_peer.wait_node_status(RES, (2, 2))
    resp = kubelet_peer.allocate(RES, 1)
    assert resp.envs["TINY_DEVICES"] == "b"


def test_the_checkpoint_holds_registered_devices_allocations_and_a_checksum(kubelet_peer, plugins):
    plugin = plugins([dev("a", numa=(0,)), dev("b"), dev("c", "Unhealthy")])
    plugin.register()
    kubelet_peer.wait_node_status(RES, (2, 3))
    kubelet_peer.allocate(RES, ["a"], pod_uid="p", container_name="ctr")
    doc = kubelet_peer.read_checkpoint()
    assert doc["Data"]["RegisteredDevices"] == {RES: ["a", "b"]}
    (entry,) = doc["Data"]["PodDeviceEntries"]
    assert (entry["PodUID"], entry["ContainerName"], entry["ResourceName"], entry["DeviceIDs"]) == (
        "p", "ctr", RES, {"0": ["a"]})
    assert isinstance(doc["Checksum"], int)
    assert kubelet_peer.checkpoint_intact()


def test_a_corrupted_checkpoint_is_ignored_on_restart(kubelet_peer, plugins):
    plugin = plugins([dev("a")])
    plugin.register()
    kubelet_peer.wait_node_status(RES, (1, 1))
    kubelet_peer.checkpoint_path.write_text('{"Data": {"RegisteredDevices": {"x.com/y": []}}, "Checksum": 1}')
    assert not kubelet_peer.checkpoint_intact()
    kubelet_peer.restart()
    assert kubelet_peer.endpoint_stopped("x.com/y") is None and kubelet_peer.endpoint_stopped(RES) is None


# --------------------------------------------------------------------------- status file & fixtures


def test_the_status_file_is_rewritten_on_every_change(kubelet_peer_factory, tmp_path):
    status = tmp_path / "status.json"
    peer = kubelet_peer_factory(status_file=status)
    assert json.loads(status.read_text())["resources"] == {}
    plugin = TinyPlugin(peer.plugin_dir, devices=[dev("a", numa=(1,)), dev("b", "Unhealthy")]).start()
    try:
        plugin.register()
        peer.wait_node_status(RES, (1, 2))
        doc = json.loads(status.read_text())
        assert doc["resources"] == {RES: {"allocatable": 1, "capacity": 2, "devices": [
            {"id": "a", "health": "Healthy", "numa": [1]}, {"id": "b", "health": "Unhealthy", "numa": []}]}}
        assert doc["registrations"] == 1 and doc["updated"] <= time.time()
        assert [p.name for p in tmp_path.iterdir()] == ["status.json"]
    finally:
        plugin.stop()


@pytest.mark.parametrize("kubelet_peer", [{"grace_period": 7, "options_timeout": 2}], indirect=True)
def test_the_fixture_takes_keyword_arguments_indirectly(kubelet_peer):
    assert (kubelet_peer.grace_period, kubelet_peer.options_timeout) == (7, 2)
    assert len(str(kubelet_peer.socket_path)) < 60 and kubelet_peer.socket_path.is_socket()


def test_stop_closes_the_plugins_stream(kubelet_peer_factory):
    peer = kubelet_peer_factory()
    plugin = TinyPlugin(peer.plugin_dir, devices=[dev("a")]).start()
    try:
        plugin.register()
        peer.wait_node_status(RES, (1, 1))
        plugin.wait_streams(1)
        peer.stop()
        plugin.wait_streams(0)
        assert not peer.socket_path.exists()
    finally:
        plugin.stop()


# --------------------------------------------------------------------------- CLI


def _spawn_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.kubelet_peer", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_until(proc: subprocess.Popen[str], *needles: str, timeout: float = 10.0) -> list[str]:
    """Read stdout lines until every needle has appeared in some line."""
    lines: list[str] = []
    missing = set(needles)
    done = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            missing.difference_update({n for n in missing if n in line})
            if not missing:
                break
        done.set()

    threading.Thread(target=reader, daemon=True).start()
    if not done.wait(timeout) or missing:
        proc.kill()
        raise AssertionError(f"{sorted(missing)} not printed; got {lines}; stderr {proc.communicate()[1]}")
    return lines


def test_the_cli_prints_registrations_and_status_and_exits_0_on_sigterm(tmp_path):
    base = Path(os.path.join("/tmp", f"kp-cli-{os.getpid()}"))
    d = base / "device-plugins"  # kubelet's layout: PodResources in base/pod-resources
    proc = _spawn_cli("--dir", str(d), "--grace", "0.5")
    plugin = None
    try:
        _read_until(proc, "serving")
        plugin = TinyPlugin(d, "tiny-gpu.sock", [dev("a"), dev("b")]).start()
        plugin.register()
        lines = _read_until(proc, f"{RES}: allocatable=2 capacity=2")
        assert f"registered {RES} via tiny-gpu.sock" in lines
        proc.send_signal(signal.SIGHUP)
        lines = _read_until(proc, "restarted in", f"{RES}: allocatable=0 capacity=0")
        assert any(x.startswith("restarted in") and "removed: tiny-gpu.sock" in x for x in lines)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        if plugin is not None:
            plugin.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_the_cli_once_allocates_prints_the_response_and_exits_0(tmp_path):
    base = Path(os.path.join("/tmp", f"kp-cli1-{os.getpid()}"))
    d = base / "device-plugins"  # kubelet's layout: PodResources in base/pod-resources
    status = tmp_path / "status.json"
    proc = _spawn_cli("--dir", str(d), "--once", "--allocate", f"{RES}=2", "--timeout", "10",
                      "--status-file", str(status))
    plugin = None
    try:
        _read_until(proc, "serving")
        plugin = TinyPlugin(d, "tiny-gpu.sock", [dev("a"), dev("b"), dev("c")]).start()
        plugin.register()
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        (line,) = [x for x in out.splitlines() if x.startswith(f"allocation {RES} ")]
        doc = json.loads(line.split(" ", 2)[2])
        assert doc["device_ids"] == ["a", "b"]
        assert sorted(doc["envs"]["TINY_DEVICES"].split(",")) == ["a", "b"]
        assert json.loads(status.read_text())["resources"][RES]["capacity"] == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if plugin is not None:
            plugin.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_the_cli_once_fails_after_the_timeout(tmp_path):
    base = Path(os.path.join("/tmp", f"kp-cli2-{os.getpid()}"))
    d = base / "device-plugins"  # kubelet's layout: PodResources in base/pod-resources
    try:
        proc = _spawn_cli("--dir", str(d), "--once", "--timeout", "0.3")
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 1
        assert "timed out after 0.3 s" in out
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_cli_serves_pod_resources_beside_the_plugin_dir_as_kubelet_does(tmp_path):
    base = Path(os.path.join("/tmp", f"kp-cli3-{os.getpid()}"))
    proc = _spawn_cli("--dir", str(base / "device-plugins"))
    try:
        lines = _read_until(proc, "serving pod resources on")
        assert f"serving pod resources on {base}/pod-resources/kubelet.sock" in lines
        with grpc.insecure_channel(f"unix:{base}/pod-resources/kubelet.sock") as ch:
            resp = pr_grpc.PodResourcesListerStub(ch).List(pr.ListPodResourcesRequest(), timeout=5)
        assert list(resp.pod_resources) == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not (base / "pod-resources" / "kubelet.sock").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        shutil.rmtree(base, ignore_errors=True)
