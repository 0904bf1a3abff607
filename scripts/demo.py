"""Run `nvdp serve` against the mock NVML and the kubelet test peer, and show the result.

Started by scripts/demo (after scripts/bootstrap). Everything lives in a
temporary directory: the kubelet device-plugin dir, a sysfs tree for NUMA
affinity, and the mock NVML's control files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.kubelet_peer import KubeletPeer  # noqa: E402
from tests.mock_nvml.environment import prepare  # noqa: E402

GPU = "nvidia.com/gpu"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="h100-sxm-8", help="mock node profile (default: h100-sxm-8)")
    parser.add_argument("--keep", action="store_true", help="keep nvdp and the kubelet stand-in running until Ctrl-C")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nvdp-demo-", dir="/tmp"))
    plugin_dir = work / "device-plugins"
    peer = KubeletPeer(plugin_dir)
    node = prepare(args.profile, work / "nvml")
    node.write_sysfs(work / "sys")
    print(f"mock node: {args.profile}, {len(node.profile['gpus'])} GPUs; work dir {work}")
    peer.start()
    print(f"kubelet stand-in serving {peer.socket_path}")

    env = {**os.environ, **node.env(), "PYTHONUNBUFFERED": "1"}
    cmd = [
        str(ROOT / ".venv/bin/nvdp"), "--config", str(work / "config.toml"), "serve",
        "--socket-dir", str(plugin_dir), "--kubelet-socket", str(peer.socket_path), "--sysfs-root", str(work / "sys"),
        "--pod-resources-socket", str(peer.pod_resources_socket),
    ]
    print("$", " ".join(cmd))
    daemon = subprocess.Popen(cmd, env=env)
    try:
        peer.wait_registered(GPU, timeout=15)
        peer.wait_node_status(GPU, (len(node.profile["gpus"]), len(node.profile["gpus"])), timeout=15)
        allocatable, capacity = peer.node_status()[GPU]
        print(f"\nnode status: {GPU}: allocatable={allocatable} capacity={capacity}")
        response = peer.allocate(GPU, 2)
        print("sample Allocate of 2 GPUs ->")
        for key, value in sorted(response.envs.items()):
            print(f"  env {key}={value}")
        if args.keep:
            print("\nrunning; try `kill -HUP`/`-TERM` on nvdp, or delete its socket. Ctrl-C to stop.")
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(15)
        print(f"\nnvdp stopped (exit {code}); plugin socket removed: {not (plugin_dir / 'nvidia-gpu.sock').exists()}")
        peer.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
