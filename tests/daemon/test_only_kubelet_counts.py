"""Only kubelet's own stream and a real kubelet restart make nvdp register again.

Seen: 500 ListAndWatch streams opened and dropped by another local client
caused 6 needless re-registrations, and a chmod of kubelet.sock (a ctime
change, no restart) caused one. The daemon logs at debug level what it
decided, so each test waits for that decision instead of sleeping.
"""

from __future__ import annotations

import os

import grpc

from nvdp_node.api import deviceplugin_v1beta1_pb2 as pb
from nvdp_node.api import deviceplugin_v1beta1_pb2_grpc as pb_grpc
from tests.daemon.conftest import clean_env

GPU = "nvidia.com/gpu"
DEBUG = '[logging]\nlevel = "debug"\n'


def serve(nvdp_daemon, kubelet_peer, h100, tmp_path):
    daemon = nvdp_daemon(kubelet_peer.plugin_dir, env={**clean_env(), **h100.env()},
                         sysfs_root=tmp_path / "sys", config=DEBUG)
    kubelet_peer.wait_node_status(GPU, (8, 8))
    return daemon


def test_streams_another_local_client_opens_and_drops_do_not_re_register(nvdp_daemon, kubelet_peer, h100, tmp_path):
    daemon = serve(nvdp_daemon, kubelet_peer, h100, tmp_path)
    for _ in range(50):
        with grpc.insecure_channel(f"unix://{daemon.socket}") as channel:
            stream = pb_grpc.DevicePluginStub(channel).ListAndWatch(pb.Empty(), timeout=5)
            assert len(next(stream).devices) == 8
            stream.cancel()
    daemon.wait_log_count("a ListAndWatch stream that is not kubelet's ended", 50)
    assert "kubelet ended the ListAndWatch stream" not in daemon.log()
    assert kubelet_peer.registration_count(GPU) == 1
    assert kubelet_peer.node_status() == {GPU: (8, 8)}


def test_a_chmod_of_kubelet_sock_is_not_a_kubelet_restart(nvdp_daemon, kubelet_peer, h100, tmp_path):
    daemon = serve(nvdp_daemon, kubelet_peer, h100, tmp_path)
    checked = daemon.log().count("nvidia.com/gpu: checked")
    kubelet_peer.socket_path.chmod(0o660)
    # Two inotify events, each waited for: the second pass starts only once the first one,
    # and any Register it decided on, is done.
    (kubelet_peer.plugin_dir / "wake-up").mkdir()
    daemon.wait_log_count("nvidia.com/gpu: checked", checked + 1)
    (kubelet_peer.plugin_dir / "wake-up").rmdir()
    daemon.wait_log_count("nvidia.com/gpu: checked", checked + 2)
    assert kubelet_peer.registration_count(GPU) == 1


def test_the_end_of_kubelets_own_stream_still_re_registers(nvdp_daemon, kubelet_peer, h100, tmp_path):
    serve(nvdp_daemon, kubelet_peer, h100, tmp_path)
    kubelet_peer.drop_stream(GPU)
    kubelet_peer.wait_registered(GPU, count=2)
    kubelet_peer.wait_node_status(GPU, (8, 8))


def test_a_re_registration_ends_the_old_stream_first_so_kubelet_132_has_nothing_to_race(
    nvdp_daemon, kubelet_peer, h100, tmp_path
):
    # A new mtime on kubelet.sock is a new identity: nvdp registers again while kubelet's
    # stream is still open. Kubelet 1.32 would drop the *new* client once that old stream
    # ends (capacity 8, allocatable 0); nvdp ends it before it registers.
    daemon = serve(nvdp_daemon, kubelet_peer, h100, tmp_path)
    os.utime(kubelet_peer.socket_path)
    (kubelet_peer.plugin_dir / "wake-up").mkdir()
    daemon.wait_log("ended 1 open ListAndWatch stream(s) before registering again")
    kubelet_peer.wait_registered(GPU, count=2)
    kubelet_peer.wait_node_status(GPU, (8, 8))
    kubelet_peer.wait_until(lambda: kubelet_peer.endpoint_stopped(GPU) is False, what="the new endpoint live")
