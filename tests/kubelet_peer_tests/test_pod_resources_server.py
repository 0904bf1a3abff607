"""The stand-in serves kubelet's PodResources API (``v1.PodResourcesLister``) on its own socket.

Asked with a plain grpc stub over the real unix socket, the way a monitoring agent (or nvdp's
adapter, tested in tests/daemon/test_pod_resources_adapter.py) asks kubelet.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from nvdp_node.api import podresources_v1_pb2 as pr
from nvdp_node.api import podresources_v1_pb2_grpc as pr_grpc
from tests.kubelet_peer import KubeletPeer

from .tiny_plugin import RES, dev, plugin_factory

OTHER = "example.com/other"


def ask(peer: KubeletPeer, method: str, request: object) -> object:
    with grpc.insecure_channel(f"unix:{peer.pod_resources_socket}") as ch:
        return getattr(pr_grpc.PodResourcesListerStub(ch), method)(request, timeout=5)


def listed(peer: KubeletPeer) -> list[tuple[str, str, str, str, tuple[str, ...], tuple[int, ...]]]:
    """(namespace, pod, container, resource, ids, numa) for each ContainerDevices ``List`` sent."""
    resp = ask(peer, "List", pr.ListPodResourcesRequest())
    return [
        (p.namespace, p.name, c.name, d.resource_name, tuple(d.device_ids), tuple(n.ID for n in d.topology.nodes))
        for p in resp.pod_resources
        for c in p.containers
        for d in c.devices
    ]


def test_list_reports_each_admitted_pod_with_its_devices_per_resource_and_numa_node(kubelet_peer, plugins):
    plugins([dev("a", numa=(0,)), dev("b", numa=(1,)), dev("c")]).register()
    plugins([dev("x")], name="other.sock").register(resource=OTHER)
    kubelet_peer.wait_node_status(RES, (3, 3))
    kubelet_peer.wait_node_status(OTHER, (1, 1))
    kubelet_peer.allocate(RES, ["a", "b", "c"], pod_uid="u1", namespace="ml", pod_name="train")
    kubelet_peer.allocate(OTHER, 1, pod_uid="u2", pod_name="web", container_name="srv")
    assert sorted(listed(kubelet_peer)) == [
        ("default", "web", "srv", OTHER, ("x",), ()),
        ("ml", "train", "main", RES, ("a",), (0,)),
        ("ml", "train", "main", RES, ("b",), (1,)),
        ("ml", "train", "main", RES, ("c",), ()),
    ]


def test_a_pod_without_a_name_is_listed_under_its_uid_in_default(kubelet_peer, plugins):
    plugins([dev("a")]).register()
    kubelet_peer.wait_node_status(RES, (1, 1))
    kubelet_peer.allocate(RES, 1, pod_uid="u1")
    assert listed(kubelet_peer) == [("default", "u1", "main", RES, ("a",), ())]


def test_a_released_pod_is_no_longer_listed(kubelet_peer, plugins):
    plugins([dev("a"), dev("b")]).register()
    kubelet_peer.wait_node_status(RES, (2, 2))
    kubelet_peer.allocate(RES, ["a"], pod_uid="u1", pod_name="gone")
    kubelet_peer.allocate(RES, ["b"], pod_uid="u2", pod_name="stays")
    kubelet_peer.release("u1")
    assert [row[1] for row in listed(kubelet_peer)] == ["stays"]


def test_a_rejected_pod_is_not_listed(kubelet_peer, plugins):
    plugins([dev("a")]).register()
    kubelet_peer.wait_node_status(RES, (1, 1))
    with pytest.raises(Exception, match="unavailable"):
        kubelet_peer.allocate(RES, 2, pod_uid="u1")
    assert listed(kubelet_peer) == []


def test_pods_of_a_resource_whose_plugin_is_gone_are_still_listed(kubelet_peer_factory):
    peer = kubelet_peer_factory(grace_period=0.2)
    with plugin_factory(peer.plugin_dir) as make:
        plugin = make([dev("a")])
        plugin.register()
        peer.wait_node_status(RES, (1, 1))
        peer.allocate(RES, 1, pod_uid="u1", pod_name="p")
        plugin.stop()
        peer.wait_node_status(RES, (0, 0))
    assert listed(peer) == [("default", "p", "main", RES, ("a",), ())]


def test_pods_are_listed_with_their_names_after_a_restart(kubelet_peer, plugins):
    plugins([dev("a", numa=(1,))]).register()
    kubelet_peer.wait_node_status(RES, (1, 1))
    kubelet_peer.allocate(RES, 1, pod_uid="u1", namespace="ml", pod_name="train")
    kubelet_peer.restart()
    assert listed(kubelet_peer) == [("ml", "train", "main", RES, ("a",), (1,))]


def test_get_allocatable_resources_lists_the_healthy_devices_of_registered_resources(kubelet_peer_factory):
    peer = kubelet_peer_factory(grace_period=0.2)
    with plugin_factory(peer.plugin_dir) as make:
        make([dev("a", numa=(0,)), dev("b", "Unhealthy"), dev("c")]).register()
        gone = make([dev("x")], name="other.sock")
        gone.register(resource=OTHER)
        peer.wait_node_status(RES, (2, 3))
        peer.wait_node_status(OTHER, (1, 1))
        gone.stop()
        peer.wait_node_status(OTHER, (0, 0))
        resp = ask(peer, "GetAllocatableResources", pr.AllocatableResourcesRequest())
    assert [(d.resource_name, list(d.device_ids), [n.ID for n in d.topology.nodes]) for d in resp.devices] == [
        (RES, ["a"], [0]), (RES, ["c"], []),
    ]


def test_get_returns_the_named_pod(kubelet_peer, plugins):
    plugins([dev("a"), dev("b")]).register()
    kubelet_peer.wait_node_status(RES, (2, 2))
    kubelet_peer.allocate(RES, ["a"], pod_uid="u1", namespace="ml", pod_name="train")
    kubelet_peer.allocate(RES, ["b"], pod_uid="u2", namespace="ml", pod_name="eval")
    resp = ask(kubelet_peer, "Get", pr.GetPodResourcesRequest(pod_name="eval", pod_namespace="ml"))
    assert (resp.pod_resources.name, list(resp.pod_resources.containers[0].devices[0].device_ids)) == ("eval", ["b"])


def test_get_of_an_unknown_pod_fails_with_kubelets_text(kubelet_peer):
    with pytest.raises(grpc.RpcError) as excinfo:
        ask(kubelet_peer, "Get", pr.GetPodResourcesRequest(pod_name="nope", pod_namespace="ml"))
    assert (excinfo.value.code(), excinfo.value.details()) == (
        grpc.StatusCode.UNKNOWN, "pod nope in namespace ml not found"
    )


def test_pod_resources_down_takes_the_socket_away_and_up_brings_it_back(kubelet_peer):
    kubelet_peer.pod_resources_down()
    assert not kubelet_peer.pod_resources_socket.exists()
    kubelet_peer.pod_resources_up()
    assert kubelet_peer.pod_resources_socket.is_socket()
    assert listed(kubelet_peer) == []


def test_a_restart_serves_pod_resources_again(kubelet_peer):
    kubelet_peer.restart()
    assert listed(kubelet_peer) == []


def test_a_restart_keeps_pod_resources_down_when_a_test_took_it_down(kubelet_peer):
    kubelet_peer.pod_resources_down()
    kubelet_peer.restart()
    assert not kubelet_peer.pod_resources_socket.exists()


def test_stop_takes_the_pod_resources_socket_away(kubelet_peer_factory):
    peer = kubelet_peer_factory()
    peer.stop()
    assert not peer.pod_resources_socket.exists()


def test_the_fixture_gives_each_peer_its_own_short_pod_resources_socket(kubelet_peer_factory):
    first, second = kubelet_peer_factory(), kubelet_peer_factory()
    assert first.pod_resources_socket != second.pod_resources_socket
    for peer in (first, second):
        path = peer.pod_resources_socket
        assert path.is_socket() and path.parts[-2:] == ("pod-resources", "kubelet.sock")
        assert len(str(path)) < 60 and not path.is_relative_to(peer.plugin_dir)


def test_by_default_the_socket_lives_in_a_temp_dir_beside_the_plugin_dir_and_goes_with_stop(tmp_path):
    plugin_dir = tmp_path / "device-plugins"
    peer = KubeletPeer(plugin_dir).start()
    try:
        owned = peer.pod_resources_socket.parents[1]
        assert owned.parent == tmp_path and peer.pod_resources_socket.is_socket()
    finally:
        peer.stop()
    assert not owned.exists()
    assert plugin_dir.is_dir(), "kubelet leaves its device-plugin directory"


def test_a_socket_path_too_long_for_unix_is_refused_with_a_clear_error(tmp_path):
    too_long = Path("/tmp") / ("x" * 100) / "kubelet.sock"
    with pytest.raises(ValueError, match=r"^pod-resources socket '/tmp/x+/kubelet.sock' is 118 bytes; "
                                         r"unix socket paths allow 107$"):
        KubeletPeer(tmp_path, pod_resources_socket=too_long)
    assert os.listdir(tmp_path) == [], "nothing created"
