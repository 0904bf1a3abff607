"""``python -m tests.kubelet_peer``: run the kubelet stand-in as a process.

Serves ``<dir>/kubelet.sock`` and kubelet's PodResources API (``--pod-resources-socket``,
default ``<dir>/../pod-resources/kubelet.sock`` as kubelet lays it out) until SIGTERM/SIGINT
(exit 0). Behaves like kubelet 1.32 (see peer.py). Prints one line per event:

    serving /var/lib/kubelet/device-plugins/kubelet.sock
    serving pod resources on /var/lib/kubelet/pod-resources/kubelet.sock
    registered nvidia.com/gpu via nvidia-gpu.sock
    registration of nvidia.com/gpu via x.sock failed: <kubelet's error text>
    nvidia.com/gpu: allocatable=8 capacity=8
    allocation nvidia.com/gpu {"device_ids": [...], "envs": {...}, "mounts": [...], ...}
    allocation of 2 nvidia.com/gpu failed: <kubelet's error text>
    restarted in 3 ms; removed: nvidia-gpu.sock
    stopped

SIGHUP restarts the device manager like a kubelet restart (sockets wiped, kubelet.sock
recreated). ``--once`` exits 0 after the first non-empty node status (and the ``--allocate``
allocation), or 1 after ``--timeout`` seconds.

Only the stdlib, grpc and nvdp_node.api are imported (it runs in system-test boxes).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import sys
import threading
import time
from typing import Any

from nvdp_node.api import deviceplugin_v1beta1_pb2 as pb

from .peer import KubeletPeer
from .records import (
    DEFAULT_DIAL_TIMEOUT,
    DEFAULT_GRACE_PERIOD,
    KUBELET_SOCKET,
    POD_RESOURCES_DIR,
    KubeletPeerError,
    Registration,
)


def _parse_allocate(value: str) -> tuple[str, int]:
    resource, sep, count = value.rpartition("=")
    try:
        n = int(count)
    except ValueError:
        n = 0
    if not sep or not resource or n <= 0:
        raise argparse.ArgumentTypeError(f"expected RESOURCE=N with N > 0, got {value!r}")
    return resource, n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.kubelet_peer", description="kubelet device-manager stand-in")
    p.add_argument(
        "--dir",
        default="/var/lib/kubelet/device-plugins",
        help="device-plugins directory; kubelet.sock is served there (default: kubelet's /var/lib/kubelet/device-plugins)",
    )
    p.add_argument("--grace", type=float, default=DEFAULT_GRACE_PERIOD, help="endpoint stop grace period, seconds")
    p.add_argument("--status-file", help="write node status as JSON here on every change")
    p.add_argument("--allocate", type=_parse_allocate, metavar="RESOURCE=N", help="allocate N devices once available")
    p.add_argument("--once", action="store_true", help="exit after the first non-empty status (+ allocation)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds --once / --allocate wait (default 30)")
    p.add_argument("--dial-timeout", type=float, default=DEFAULT_DIAL_TIMEOUT, help="dial timeout on Register")
    p.add_argument(
        "--pod-resources-socket",
        help="serve the PodResources API here (default: pod-resources/kubelet.sock beside --dir, as kubelet)",
    )
    p.add_argument("--seed", type=int, help="seed for the order of device ids in requests (default: random)")
    return p


def allocation_json(resource: str, resp: pb.ContainerAllocateResponse, device_ids: list[str]) -> str:
    doc: dict[str, Any] = {
        "resource": resource,
        "device_ids": device_ids,
        "envs": dict(sorted(resp.envs.items())),
        "mounts": [
            {"container_path": m.container_path, "host_path": m.host_path, "read_only": m.read_only}
            for m in resp.mounts
        ],
        "devices": [
            {"container_path": d.container_path, "host_path": d.host_path, "permissions": d.permissions}
            for d in resp.devices
        ],
        "annotations": dict(sorted(resp.annotations.items())),
        "cdi_devices": [c.name for c in resp.cdi_devices],
    }
    return json.dumps(doc, sort_keys=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print_lock = threading.Lock()

    def say(line: str) -> None:
        with print_lock:
            print(line, flush=True)

    def listener(kind: str, payload: Any) -> None:
        if kind == "status":
            for res, (a, c) in sorted(payload.items()):
                say(f"{res}: allocatable={a} capacity={c}")
        elif kind == "registration":
            reg: Registration = payload
            if reg.ok:
                say(f"registered {reg.resource} via {reg.endpoint}")
            else:
                say(f"registration of {reg.resource} via {reg.endpoint} failed: {reg.error}")
        elif kind == "restart":
            removed = ", ".join(peer.last_cleanup_removed) or "none"
            say(f"restarted in {payload * 1000:.0f} ms; removed: {removed}")

    signals: queue.SimpleQueue[str] = queue.SimpleQueue()
    signal.signal(signal.SIGTERM, lambda *_: signals.put("stop"))
    signal.signal(signal.SIGINT, lambda *_: signals.put("stop"))
    signal.signal(signal.SIGHUP, lambda *_: signals.put("restart"))

    pod_resources = args.pod_resources_socket or os.path.join(
        os.path.dirname(os.path.abspath(args.dir)), POD_RESOURCES_DIR, KUBELET_SOCKET
    )
    peer = KubeletPeer(
        args.dir,
        grace_period=args.grace,
        dial_timeout=args.dial_timeout,
        status_file=args.status_file,
        pod_resources_socket=pod_resources,
        seed=args.seed,
    )
    peer.add_listener(listener)
    peer.start()
    say(f"serving {peer.socket_path}")
    say(f"serving pod resources on {peer.pod_resources_socket}")

    deadline = time.monotonic() + args.timeout
    allocation_pending = args.allocate is not None
    rc = 0
    try:
        while True:
            try:
                ev: str | None = signals.get(timeout=0.1)
            except queue.Empty:
                ev = None
            if ev == "stop":
                break
            if ev == "restart":
                peer.restart()
            status = peer.node_status()
            if allocation_pending:
                resource, n = args.allocate
                if status.get(resource, (0, 0))[0] >= n:
                    allocation_pending = False
                    try:
                        resp = peer.allocate(resource, n)
                        ids = list(peer.allocations[-1].device_ids)
                        say(f"allocation {resource} {allocation_json(resource, resp, ids)}")
                    except KubeletPeerError as e:
                        say(f"allocation of {n} {resource} failed: {e}")
                        if args.once:
                            rc = 1
                            break
                elif time.monotonic() > deadline and not args.once:
                    allocation_pending = False
                    say(f"allocation of {n} {resource} gave up after {args.timeout:g} s: node status {status}")
            if args.once:
                if not allocation_pending and any(c > 0 for _, c in status.values()):
                    break
                if time.monotonic() > deadline:
                    say(f"timed out after {args.timeout:g} s; node status {status}")
                    rc = 1
                    break
    finally:
        peer.stop()
        say("stopped")
    return rc


if __name__ == "__main__":
    sys.exit(main())
