"""MPS sharing end to end: nvdp serve starts the resource's nvdp-mps@ unit and serves it only while
the control daemon answers.

``systemctl`` is the fake of tests/mps_control (it runs the shipped unit the
way systemd would, with /run under tmp_path), the control daemon is the
stand-in ``nvidia-cuda-mps-control``; the same unit under a real systemd is
tests/system/test_mps.py.
"""

from __future__ import annotations

import signal
import subprocess

from tests.daemon.conftest import clean_env
from tests.daemon.test_mps_adapter import CONTROL, host  # noqa: F401 - the fake host fixture

GPU = "nvidia.com/gpu"


def start(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket, host):  # noqa: F811
    root = host.run / "nvidia/mps"
    config = (f'[sharing.mps]\nroot = "{root}"\n'
              f'[[sharing.mps.resources]]\nname = "{GPU}"\nreplicas = 4\n')
    env = {**clean_env(), **h100.env(), "NOTIFY_SOCKET": str(notify_socket.path)}
    return nvdp_daemon(
        kubelet_peer.plugin_dir, env=env, sysfs_root=tmp_path / "sys", config=config,
        args=("--systemctl", str(host.systemctl), "--mps-control", str(CONTROL),
              "--mps-env-dir", str(host.run / "nvdp/mps")),
    )


def unit_active(host) -> bool:  # noqa: F811
    out = subprocess.run([str(host.systemctl), "is-active", "nvdp-mps@nvidia.com-gpu.service"],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip() == "active"


def test_the_mps_resource_is_served_once_its_unit_is_active_with_upstreams_allocate_response(
    nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket, host  # noqa: F811
):
    daemon = start(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket, host)
    kubelet_peer.wait_node_status(GPU, (32, 32), timeout=30)
    assert unit_active(host), "nvdp started the resource's nvdp-mps@ unit"
    assert daemon.log().index("nvdp-mps@nvidia.com-gpu.service") < daemon.log().index("registered nvidia.com/gpu")
    gpu = h100.profile["gpus"][0]["uuid"]
    response = kubelet_peer.call_allocate(GPU, [f"{gpu}::1"]).container_responses[0]
    root = host.run / "nvidia/mps"
    assert dict(response.envs) == {"NVIDIA_VISIBLE_DEVICES": gpu, "CUDA_MPS_PIPE_DIRECTORY": "/mps/nvidia.com/gpu/pipe"}
    assert [(m.container_path, m.host_path, m.read_only) for m in response.mounts] == [
        ("/mps/nvidia.com/gpu/pipe", f"{root}/nvidia.com/gpu/pipe", False),
        ("/dev/shm", f"{root}/shm", False),
    ]


def test_the_mps_resource_goes_when_its_daemon_stops_and_comes_back_with_it(
    nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket, host  # noqa: F811
):
    daemon = start(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket, host)
    kubelet_peer.wait_node_status(GPU, (32, 32), timeout=30)
    subprocess.run([str(host.systemctl), "stop", "nvdp-mps@nvidia.com-gpu.service"], check=True, timeout=60)
    kubelet_peer.wait_node_status(GPU, (0, 32), timeout=15)
    notify_socket.wait_for(lambda m: "MPS control daemon not answering" in m.get("STATUS", ""))
    assert not daemon.socket.exists(), "not served while its daemon does not answer"
    subprocess.run([str(host.systemctl), "start", "nvdp-mps@nvidia.com-gpu.service"], check=True, timeout=60)
    kubelet_peer.wait_node_status(GPU, (32, 32), timeout=15)


def test_a_reload_keeps_the_mps_host_given_on_the_command_line(
    nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket, host  # noqa: F811
):
    daemon = start(nvdp_daemon, kubelet_peer, h100, tmp_path, notify_socket, host)
    kubelet_peer.wait_node_status(GPU, (32, 32), timeout=30)
    root = host.run / "nvidia/mps"
    daemon.config_path.write_text(f'[sharing.mps]\nroot = "{root}"\n'
                                  f'[[sharing.mps.resources]]\nname = "{GPU}"\nreplicas = 2\n')
    daemon.signal(signal.SIGHUP)
    kubelet_peer.wait_node_status(GPU, (16, 16), timeout=30)
    env_file = (host.run / "nvdp/mps/nvidia.com-gpu.env").read_text()
    assert "NVDP_MPS_REPLICAS=2" in env_file, "the reload wrote the unit's limits into --mps-env-dir"
    assert unit_active(host), "and restarted the unit through --systemctl"
