"""The stand-in does what kubelet 1.32's device manager was observed to do (kubelet-api.md §2.1, §2.4-2.6).

Directory clean-up at start, no checkpoint until the first device update, device ids in no
particular order, a replaced registration's stream end disconnecting the new client, and
re-admission checked against current health. Real gRPC over real unix sockets throughout.
"""

from __future__ import annotations

import os
import socket

import pytest

from tests.kubelet_peer import CHECKPOINT_FILE, AdmissionError

from .tiny_plugin import RES, dev, plugin_factory

GRACE = 0.5


# --------------------------------------------------------------------------- the directory at start


def test_start_removes_every_non_directory_entry_but_the_checkpoint(kubelet_peer_factory, tmp_path):
    peer = kubelet_peer_factory(start=False)
    d = peer.plugin_dir
    target_file, target_dir = tmp_path / "target", tmp_path / "target-dir"
    target_file.write_text("kept")
    target_dir.mkdir()
    (d / "DEPRECATION").write_text("")
    (d / "subdir").mkdir()
    (d / "to-file").symlink_to(target_file)
    (d / "to-dir").symlink_to(target_dir)
    (d / "dangling").symlink_to(tmp_path / "nothing")
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(d / "stale.sock"))
    peer.start()
    assert sorted(os.listdir(d)) == ["kubelet.sock", "subdir"]
    assert peer.last_cleanup_removed == ["DEPRECATION", "dangling", "stale.sock", "to-dir", "to-file"]
    assert target_file.read_text() == "kept" and target_dir.is_dir()


def test_start_keeps_an_existing_checkpoint_file(kubelet_peer_factory):
    peer = kubelet_peer_factory(start=False)
    (peer.plugin_dir / CHECKPOINT_FILE).write_text("not even json")
    peer.start()
    assert (peer.plugin_dir / CHECKPOINT_FILE).read_text() == "not even json"


def test_start_creates_no_checkpoint_when_there_is_none(kubelet_peer):
    assert not kubelet_peer.checkpoint_path.exists()
    assert sorted(os.listdir(kubelet_peer.plugin_dir)) == ["kubelet.sock"]


def test_the_checkpoint_appears_with_the_first_device_update(kubelet_peer, plugins):
    plugins([dev("a")]).register()
    kubelet_peer.wait_node_status(RES, (1, 1))
    assert kubelet_peer.read_checkpoint()["Data"]["RegisteredDevices"] == {RES: ["a"]}


# --------------------------------------------------------------------------- device-id order

IDS = [f"d{i:02}" for i in range(12)]


def allocate_requests(peer, make, count: int = 3) -> list[list[str]]:
    """Admit ``count`` pods of all 12 devices each (released in between); the id lists Allocate got."""
    plugin = make([dev(i) for i in IDS])
    plugin.register()
    peer.wait_node_status(RES, (12, 12))
    for n in range(count):
        peer.allocate(RES, len(IDS), pod_uid=f"p{n}")
        peer.release(f"p{n}")
    return [list(r.container_requests[0].devices_ids) for r in plugin.called("Allocate")]


@pytest.mark.parametrize("kubelet_peer", [{"seed": 7}], indirect=True)
def test_allocate_requests_carry_the_ids_in_no_fixed_order(kubelet_peer, plugins):
    requests = allocate_requests(kubelet_peer, plugins)
    assert all(sorted(r) == IDS for r in requests)
    assert any(r != IDS for r in requests), "a plugin must not rely on sorted ids"
    assert len({tuple(r) for r in requests}) > 1


@pytest.mark.parametrize("kubelet_peer", [{"seed": 7}], indirect=True)
def test_get_preferred_allocation_offers_the_ids_in_no_fixed_order(kubelet_peer, plugins):
    plugin = plugins([dev(i) for i in IDS], preferred=True)
    plugin.register()
    kubelet_peer.wait_node_status(RES, (12, 12))
    kubelet_peer.allocate(RES, 8, must_include=IDS[:6])
    (req,) = plugin.called("GetPreferredAllocation")
    creq = req.container_requests[0]
    assert sorted(creq.available_deviceIDs) == IDS and sorted(creq.must_include_deviceIDs) == IDS[:6]
    assert list(creq.available_deviceIDs) != IDS or list(creq.must_include_deviceIDs) != IDS[:6]


def test_the_same_seed_gives_the_same_order(kubelet_peer_factory):
    orders = []
    for _ in range(2):
        peer = kubelet_peer_factory(seed=42)
        with plugin_factory(peer.plugin_dir) as make:
            orders.append(allocate_requests(peer, make))
        peer.stop()
    assert orders[0] == orders[1]


def test_shuffle_off_sends_sorted_ids(kubelet_peer_factory):
    peer = kubelet_peer_factory(shuffle=False)
    with plugin_factory(peer.plugin_dir) as make:
        assert allocate_requests(peer, make) == [IDS] * 3


# --------------------------------------------------------------------------- re-registration with the old stream open


def test_the_old_streams_end_disconnects_a_registration_made_while_it_was_open(kubelet_peer, plugins):
    old = plugins([dev("a")], name="old.sock")
    new = plugins([dev("x"), dev("y")], name="new.sock")
    old.register()
    kubelet_peer.wait_node_status(RES, (1, 1))
    new.register()
    kubelet_peer.wait_node_status(RES, (2, 2))
    new.wait_streams(1)
    old.stop()  # the old stream ends
    new.wait_streams(0)  # ... and kubelet closes the new one
    kubelet_peer.wait_node_status(RES, (0, 2))
    assert kubelet_peer.endpoint_stopped(RES) is True
    assert {d.health for d in kubelet_peer.devices(RES)} == {"Unhealthy"}
    assert len(new.called("ListAndWatch")) == 1, "kubelet does not call ListAndWatch again"


def test_registering_once_more_after_that_disconnect_brings_the_resource_back(kubelet_peer, plugins):
    old = plugins([dev("a")], name="old.sock")
    new = plugins([dev("x"), dev("y")], name="new.sock")
    old.register()
    kubelet_peer.wait_node_status(RES, (1, 1))
    new.register()
    kubelet_peer.wait_node_status(RES, (2, 2))
    old.stop()
    kubelet_peer.wait_node_status(RES, (0, 2))
    new.wait_streams(0)
    new.register()
    kubelet_peer.wait_node_status(RES, (2, 2))
    new.wait_streams(1)
    assert kubelet_peer.endpoint_stopped(RES) is False
    assert kubelet_peer.history(RES) == [(1, 1), (2, 2), (0, 2), (2, 2)]


def test_a_registration_after_the_old_stream_ended_is_not_disconnected(kubelet_peer, plugins):
    old = plugins([dev("a")], name="old.sock")
    new = plugins([dev("x"), dev("y")], name="new.sock")
    old.register()
    kubelet_peer.wait_node_status(RES, (1, 1))
    old.stop()
    kubelet_peer.wait_node_status(RES, (0, 1))
    new.register()
    kubelet_peer.wait_node_status(RES, (2, 2))
    new.wait_streams(1)
    kubelet_peer.drop_stream(RES)  # proves the stream was alive and the current one
    kubelet_peer.wait_node_status(RES, (0, 2))
    assert kubelet_peer.history(RES) == [(1, 1), (0, 1), (2, 2), (0, 2)]


def test_a_failed_re_registration_leaves_the_old_streams_end_without_effect(kubelet_peer, plugins):
    old = plugins([dev("a")], name="old.sock")
    broken = plugins([dev("x")], name="broken.sock")
    broken.fail["GetDevicePluginOptions"] = "no options today"
    old.register()
    kubelet_peer.wait_node_status(RES, (1, 1))
    with pytest.raises(Exception, match="no options today"):
        broken.register()  # kubelet remembered, then forgot, this client: none is left
    old.stop()
    old.wait_streams(0)
    kubelet_peer.wait_until(lambda: any("ListAndWatch ended" in e for _, e in kubelet_peer.events))
    assert kubelet_peer.node_status()[RES] == (1, 1)
    assert kubelet_peer.endpoint_stopped(RES) is False


# --------------------------------------------------------------------------- re-admission


def test_re_admitting_a_pod_before_its_plugin_registers_after_a_restart_fails_for_lack_of_healthy_devices(
    kubelet_peer, plugins
):
    plugin = plugins([dev("a"), dev("b")])
    plugin.register()
    kubelet_peer.wait_node_status(RES, (2, 2))
    kubelet_peer.allocate(RES, 1, pod_uid="p")
    kubelet_peer.restart()
    with pytest.raises(AdmissionError, match=f"^no healthy devices present; cannot allocate unhealthy devices {RES}$"):
        kubelet_peer.allocate(RES, 1, pod_uid="p")
    assert len(plugin.called("Allocate")) == 1


def test_re_admitting_a_pod_whose_device_turned_unhealthy_fails(kubelet_peer, plugins):
    plugin = plugins([dev("a"), dev("b")])
    plugin.register()
    kubelet_peer.wait_node_status(RES, (2, 2))
    kubelet_peer.allocate(RES, ["a"], pod_uid="p")
    plugin.set_health("a", "Unhealthy")
    kubelet_peer.wait_node_status(RES, (1, 2))
    with pytest.raises(AdmissionError, match="^previously allocated devices are no longer healthy; "
                                             f"cannot allocate unhealthy devices {RES}$"):
        kubelet_peer.allocate(RES, 1, pod_uid="p")


def test_re_admitting_a_pod_with_healthy_devices_after_a_restart_replays_its_response_without_allocate(
    kubelet_peer, plugins
):
    plugin = plugins([dev("a"), dev("b")])
    plugin.register()
    kubelet_peer.wait_node_status(RES, (2, 2))
    first = kubelet_peer.allocate(RES, 1, pod_uid="p")
    kubelet_peer.restart()
    plugin.stop()
    plugin.start()
    plugin.register()
    kubelet_peer.wait_node_status(RES, (2, 2))
    assert kubelet_peer.allocate(RES, 1, pod_uid="p") == first
    assert len(plugin.called("Allocate")) == 1


def test_re_admitting_a_container_with_a_different_count_fails_with_kubelets_text(kubelet_peer, plugins):
    plugins([dev("a"), dev("b")]).register()
    kubelet_peer.wait_node_status(RES, (2, 2))
    kubelet_peer.allocate(RES, 1, pod_uid="p", container_name="ctr")
    with pytest.raises(AdmissionError, match=f'^pod "p" container "ctr" changed request for resource "{RES}" '
                                             "from 1 to 2$"):
        kubelet_peer.allocate(RES, 2, pod_uid="p", container_name="ctr")


@pytest.mark.parametrize("kubelet_peer", [GRACE], indirect=True)
def test_re_admitting_a_pod_of_a_resource_gone_after_the_grace_fails_as_unregistered(kubelet_peer, plugins):
    plugin = plugins([dev("a")])
    plugin.register()
    kubelet_peer.wait_node_status(RES, (1, 1))
    kubelet_peer.allocate(RES, 1, pod_uid="p")
    plugin.stop()
    kubelet_peer.wait_node_status(RES, (0, 0), timeout=5)
    with pytest.raises(AdmissionError, match=f"^cannot allocate unregistered device {RES}$"):
        kubelet_peer.allocate(RES, 1, pod_uid="p")
