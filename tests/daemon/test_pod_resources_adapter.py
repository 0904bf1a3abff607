"""``adapters/pod_resources.list_assignments`` against the kubelet stand-in's PodResources server.

Real gRPC over real unix sockets: a TinyPlugin registers with the KubeletPeer, the peer admits
pods, and the adapter asks the peer's ``v1.PodResourcesLister`` who holds what.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nvdp_node.adapters.pod_resources import PodResourcesUnavailable, list_assignments
from nvdp_node.domain.claims import PodDeviceAssignment
from nvdp_node.domain.errors import TemporaryError
from tests.kubelet_peer import KubeletPeer
from tests.kubelet_peer_tests.tiny_plugin import RES, TinyPlugin, dev, plugin_factory

OTHER = "example.com/other"


@pytest.fixture
def plugins(kubelet_peer: KubeletPeer) -> Iterator[Callable[..., TinyPlugin]]:
    with plugin_factory(kubelet_peer.plugin_dir) as make:
        yield make


def assignments(path: Path, timeout: float = 5.0) -> list[PodDeviceAssignment]:
    return asyncio.run(list_assignments(path, timeout=timeout))


def unavailable(path: Path, timeout: float = 5.0) -> PodResourcesUnavailable:
    with pytest.raises(PodResourcesUnavailable) as excinfo:
        assignments(path, timeout)
    return excinfo.value


def test_each_container_gets_one_assignment_per_resource(kubelet_peer, plugins):
    plugins([dev("a"), dev("b"), dev("c")]).register()
    plugins([dev("x")], name="other.sock").register(resource=OTHER)
    kubelet_peer.wait_node_status(RES, (3, 3))
    kubelet_peer.wait_node_status(OTHER, (1, 1))
    kubelet_peer.allocate(RES, ["a", "b"], pod_uid="u1", pod_name="train", namespace="ml", container_name="main")
    kubelet_peer.allocate(OTHER, 1, pod_uid="u1", pod_name="train", namespace="ml", container_name="main")
    kubelet_peer.allocate(RES, ["c"], pod_uid="u1", pod_name="train", namespace="ml", container_name="side")
    assert sorted(assignments(kubelet_peer.pod_resources_socket), key=repr) == sorted([
        PodDeviceAssignment("ml", "train", "main", RES, ("a", "b")),
        PodDeviceAssignment("ml", "train", "main", OTHER, ("x",)),
        PodDeviceAssignment("ml", "train", "side", RES, ("c",)),
    ], key=repr)


def test_devices_on_several_numa_nodes_are_merged_into_one_assignment_with_each_id_once(kubelet_peer, plugins):
    plugins([dev("a", numa=(0,)), dev("b", numa=(1,)), dev("ab", numa=(0, 1))]).register()
    kubelet_peer.wait_node_status(RES, (3, 3))
    kubelet_peer.allocate(RES, ["a", "b", "ab"], pod_uid="u1", pod_name="p")
    (only,) = assignments(kubelet_peer.pod_resources_socket)
    assert sorted(only.device_ids) == ["a", "ab", "b"]


def test_no_pods_means_no_assignments(kubelet_peer):
    assert assignments(kubelet_peer.pod_resources_socket) == []


def test_pods_keep_their_devices_after_the_resources_plugin_is_gone(kubelet_peer_factory):
    peer = kubelet_peer_factory(grace_period=0.2)
    with plugin_factory(peer.plugin_dir) as make:
        plugin = make([dev("a")])
        plugin.register()
        peer.wait_node_status(RES, (1, 1))
        peer.allocate(RES, 1, pod_uid="u1", pod_name="old-name-pod")
        plugin.stop()
        peer.wait_node_status(RES, (0, 0))  # the resource is gone from the node
    assert [(a.pod, a.resource_name, a.device_ids) for a in assignments(peer.pod_resources_socket)] == [
        ("old-name-pod", RES, ("a",))
    ]


def test_an_unreachable_api_is_a_temporary_error_naming_the_socket_and_the_code(kubelet_peer):
    kubelet_peer.pod_resources_down()
    err = unavailable(kubelet_peer.pod_resources_socket)
    assert isinstance(err, TemporaryError)
    assert str(err).startswith(f"PodResources List at {kubelet_peer.pod_resources_socket} failed: UNAVAILABLE: ")


def test_the_api_answers_again_once_kubelet_serves_it_again(kubelet_peer):
    kubelet_peer.pod_resources_down()
    unavailable(kubelet_peer.pod_resources_socket)
    kubelet_peer.pod_resources_up()
    assert assignments(kubelet_peer.pod_resources_socket) == []


def test_a_socket_that_never_answers_fails_at_the_deadline(tmp_path):
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX) as silent:  # accepts connections, never speaks HTTP/2
        silent.bind(str(path))
        silent.listen(8)
        err = unavailable(path, timeout=0.3)
    assert str(err).startswith(f"PodResources List at {path} failed: DEADLINE_EXCEEDED: ")


def test_a_socket_serving_another_api_reports_the_rpc_error(kubelet_peer):
    err = unavailable(kubelet_peer.socket_path)  # kubelet.sock serves Registration only
    assert str(err) == f"PodResources List at {kubelet_peer.socket_path} failed: UNIMPLEMENTED: Method not found!"
