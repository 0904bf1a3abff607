"""The device manager's memory: plugin clients, endpoints, device sets, pod devices.

``DeviceManagerState`` is what a kubelet restart throws away (``KubeletPeer.restart`` builds a
new one); the flows in registration.py, streams.py and admission.py read and change it while
holding the peer's lock. Its methods are pure bookkeeping: no RPCs, no files.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc

from nvdp_node.api import deviceplugin_v1beta1_pb2 as pb
from nvdp_node.api import deviceplugin_v1beta1_pb2_grpc as pb_grpc

from .records import HEALTHY, NO_TOPOLOGY_NUMA, UNHEALTHY, DeviceState


class PluginClient:
    """One dialled plugin connection (kubelet's plugin client plus its ListAndWatch stream)."""

    def __init__(self, resource: str, endpoint: str, socket_path: str, channel: grpc.Channel, generation: int):
        self.resource = resource
        self.endpoint = endpoint
        self.socket_path = socket_path
        self.channel = channel
        self.generation = generation
        self.stub = pb_grpc.DevicePluginStub(channel)
        self.options: pb.DevicePluginOptions | None = None
        self.thread: threading.Thread | None = None
        self.stream: Any = None
        self.messages = 0
        # Set when kubelet itself disconnected this client: its stream's end then changes nothing.
        self.disconnected = False
        self._closed = False
        self._cancelled = False
        self._close_lock = threading.Lock()

    def set_stream(self, stream: Any) -> None:
        with self._close_lock:
            self.stream = stream
            cancelled = self._cancelled
        if cancelled:
            stream.cancel()

    def cancel(self) -> None:
        """The kubelet side goes away: end the stream now; its thread closes the channel.

        (Closing a channel with a live stream blocks for ~200 ms in grpc-python, too slow
        for a restart, so the stream is cancelled and the consumer thread closes.)"""
        with self._close_lock:
            self._cancelled = True
            stream = self.stream
        if stream is not None:
            stream.cancel()
        else:
            self.close()

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.channel.close()
        except Exception:  # pragma: no cover - close is best effort
            pass

    def __repr__(self) -> str:
        return f"{self.socket_path}"


@dataclass
class Endpoint:
    resource: str
    client: PluginClient | None
    options: pb.DevicePluginOptions | None
    stop_time: float | None = None  # monotonic

    @property
    def stopped(self) -> bool:
        return self.stop_time is not None

    def grace_expired(self, now: float, grace: float) -> bool:
        return self.stop_time is not None and now - self.stop_time > grace

    def describe(self) -> str:
        return self.client.socket_path if self.client else f"{self.resource} (from checkpoint)"


@dataclass
class PodDevices:
    device_ids: tuple[str, ...]
    numa: dict[int, list[str]]
    resp: bytes


def device_numa(dev: pb.Device | None) -> list[int]:
    return [n.ID for n in dev.topology.nodes] if dev is not None and dev.HasField("topology") else []


@dataclass
class DeviceManagerState:
    """Kubelet's device-manager memory; a kubelet restart throws it away."""

    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    # kubelet's handler: the last client registered per resource name (kubelet <= 1.35)
    clients: dict[str, PluginClient] = field(default_factory=dict)
    healthy: dict[str, set[str]] = field(default_factory=dict)
    unhealthy: dict[str, set[str]] = field(default_factory=dict)
    all_devices: dict[str, dict[str, pb.Device]] = field(default_factory=dict)
    pod_devices: dict[tuple[str, str, str], PodDevices] = field(default_factory=dict)
    reserved: dict[str, set[str]] = field(default_factory=dict)  # in-flight allocations

    def in_use(self, resource: str) -> set[str]:
        used = set(self.reserved.get(resource, set()))
        for (_, _, res), pd in self.pod_devices.items():
            if res == resource:
                used.update(pd.device_ids)
        return used

    def numa_map(self, resource: str, device_ids: Iterable[str]) -> dict[int, list[str]]:
        """Device ids by NUMA node, the checkpoint's ``DeviceIDs`` (-1: no affinity)."""
        numa: dict[int, list[str]] = {}
        devices = self.all_devices.get(resource, {})
        for dev_id in device_ids:
            for n in device_numa(devices.get(dev_id)) or [NO_TOPOLOGY_NUMA]:
                numa.setdefault(n, []).append(dev_id)
        return numa

    def split_by_affinity(
        self, resource: str, available: set[str], numa_hint: Iterable[int] | None
    ) -> tuple[set[str], set[str], set[str]]:
        """(aligned, unaligned, no affinity) for the Topology Manager's hint (None: no hint)."""
        if numa_hint is None:
            return set(), set(), set(available)
        hint = set(numa_hint)
        aligned, unaligned, no_affinity = set(), set(), set()
        devices = self.all_devices.get(resource, {})
        for dev_id in available:
            nodes = device_numa(devices.get(dev_id))
            if not nodes:
                no_affinity.add(dev_id)
            elif any(n in hint for n in nodes):
                aligned.add(dev_id)
            else:
                unaligned.add(dev_id)
        return aligned, unaligned, no_affinity

    def device_states(self, resource: str) -> list[DeviceState]:
        healthy = self.healthy.get(resource, set())
        out = []
        for dev_id, dev in sorted(self.all_devices.get(resource, {}).items()):
            numa = tuple(device_numa(dev))
            out.append(DeviceState(dev_id, HEALTHY if dev_id in healthy else UNHEALTHY, numa, dev.health))
        return out

    def mark_unhealthy(self, resource: str, now: float | None = None) -> None:
        """``PluginDisconnected``: every device of the resource unhealthy, the endpoint stopped."""
        healthy = self.healthy.get(resource)
        if healthy is not None:
            self.healthy[resource] = set()
        self.unhealthy[resource] = self.unhealthy.get(resource, set()) | (healthy or set())
        ep = self.endpoints.get(resource)
        if ep is not None:
            ep.stop_time = time.monotonic() if now is None else now

    def capacity(self, now: float, grace: float) -> tuple[dict[str, int], dict[str, int], set[str]]:
        """``GetCapacity``: counts, and drops endpoints stopped longer than ``grace``."""
        capacity: dict[str, int] = {}
        allocatable: dict[str, int] = {}
        removed: set[str] = set()
        for sets, counts_allocatable in ((self.healthy, True), (self.unhealthy, False)):
            for res in list(sets):
                ep = self.endpoints.get(res)
                if ep is None or ep.grace_expired(now, grace):
                    self.endpoints.pop(res, None)
                    del sets[res]
                    removed.add(res)
                    continue
                capacity[res] = capacity.get(res, 0) + len(sets[res])
                if counts_allocatable:
                    allocatable[res] = len(sets[res])
        for res in removed:
            self.all_devices.pop(res, None)
        return capacity, allocatable, removed
