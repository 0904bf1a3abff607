"""KubeletPeer: a stand-in for kubelet's device manager on the legacy ``kubelet.sock`` path.

It serves ``v1beta1.Registration`` on ``<dir>/kubelet.sock`` and, for every accepted
registration, dials the plugin back, asks for its options and consumes its ListAndWatch
stream exactly the way kubelet's device manager does (docs: kubelet-api.md §2.1-§2.6):

* Register validates version and resource name with kubelet's error texts, dials
  ``filepath.Join(dir, endpoint)`` (blocking, 10 s), calls GetDevicePluginOptions with no
  deadline and only then returns ``Empty``; the error of any step is returned to the
  plugin as a gRPC error with status UNKNOWN (what grpc-go makes of a plain error).
* Each ListAndWatch message replaces the resource's device set; a device is healthy only
  if its health is exactly ``"Healthy"``; capacity = healthy + unhealthy, allocatable =
  healthy. When the stream ends every device turns unhealthy and the endpoint's stop time
  is recorded; after the grace period the resource is removed and the node status shows an
  explicit capacity/allocatable of 0. Kubelet never calls ListAndWatch again by itself.
* Endpoints are tracked per registration (resource + socket path): when a plugin registers
  the same resource again, the new endpoint replaces the old one and the old stream ending
  later does not touch the new one (kubelet >= 1.36 behaviour).
* ``allocate`` runs the admission path (devicesToAllocate, GetPreferredAllocation only when
  advertised, Allocate with exactly one container request, PreStartContainer only when
  required), ``restart`` behaves like a kubelet restart (sockets wiped, pre-stopped
  endpoints from the checkpoint, ``kubelet.sock`` recreated).

Only the stdlib, grpc and ``nvdp_node.api`` are imported: the CLI (``python -m
tests.kubelet_peer``) runs inside system-test boxes.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import posixpath
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from nvdp_node.api import deviceplugin_v1beta1_pb2 as pb
from nvdp_node.api import deviceplugin_v1beta1_pb2_grpc as pb_grpc

from . import resource_names as rn

log = logging.getLogger("kubelet_peer")

KUBELET_SOCKET = "kubelet.sock"
CHECKPOINT_FILE = "kubelet_internal_checkpoint"
HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
DEFAULT_GRACE_PERIOD = 300.0  # endpointStopGracePeriod = 5 * time.Minute
DEFAULT_DIAL_TIMEOUT = 10.0
PRE_START_TIMEOUT = 30.0  # KubeletPreStartContainerRPCTimeoutInSecs
NO_TOPOLOGY_NUMA = -1

METHODS = ("GetDevicePluginOptions", "ListAndWatch", "GetPreferredAllocation", "Allocate", "PreStartContainer")

Listener = Callable[[str, Any], None]


# --------------------------------------------------------------------------- errors


class KubeletPeerError(Exception):
    """An error kubelet would report (its text is kubelet's)."""


class AdmissionError(KubeletPeerError):
    """Pod admission failed in the device manager (kubelet: UnexpectedAdmissionError)."""

    reason = "UnexpectedAdmissionError"


class ContainerStartError(KubeletPeerError):
    """Container start failed (PreStartContainer)."""


_GO_CODE_NAMES = {"OK": "OK", "CANCELLED": "Canceled"}


def go_code_name(code: grpc.StatusCode) -> str:
    name = code.name
    return _GO_CODE_NAMES.get(name) or "".join(p.capitalize() for p in name.split("_"))


def go_error(err: BaseException) -> str:
    """Render an exception the way kubelet's ``%v`` of a grpc-go error reads."""
    if isinstance(err, grpc.RpcError) and callable(getattr(err, "code", None)):
        code = err.code()  # type: ignore[attr-defined]
        details = err.details()  # type: ignore[attr-defined]
        if code is not None:
            return f"rpc error: code = {go_code_name(code)} desc = {details or ''}"
    return str(err) or type(err).__name__


def go_join(directory: str | os.PathLike[str], endpoint: str) -> str:
    """``filepath.Join(dir, endpoint)``: an absolute endpoint is still appended under dir."""
    parts = [p for p in (os.fspath(directory), endpoint) if p]
    return posixpath.normpath("/".join(parts)) if parts else ""


def _fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Registration:
    """One Register request as kubelet saw it (accepted or not)."""

    resource: str
    endpoint: str
    version: str
    socket_path: str
    time: float  # time.monotonic()
    ok: bool
    error: str | None = None

    @property
    def result(self) -> str:
        return "ok" if self.ok else (self.error or "")


@dataclass(frozen=True)
class RpcCall:
    """One call kubelet made to a plugin."""

    method: str  # one of METHODS
    resource: str
    socket_path: str
    request: Any
    time: float  # time.monotonic() at the start of the call
    response: Any = None
    error: str | None = None


@dataclass(frozen=True)
class DeviceState:
    id: str
    health: str  # "Healthy" / "Unhealthy" as kubelet counts it (not the raw string)
    numa: tuple[int, ...] = ()
    raw_health: str = ""


@dataclass(frozen=True)
class Allocation:
    pod_uid: str
    container_name: str
    resource: str
    device_ids: tuple[str, ...]
    response: pb.ContainerAllocateResponse


# --------------------------------------------------------------------------- internals


class _Client:
    """One dialled plugin connection (kubelet's plugin client + endpoint)."""

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
class _Endpoint:
    resource: str
    client: _Client | None
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
class _PodDevices:
    device_ids: tuple[str, ...]
    numa: dict[int, list[str]]
    resp: bytes


@dataclass
class _State:
    """Kubelet's device-manager memory; a kubelet restart throws it away."""

    endpoints: dict[str, _Endpoint] = field(default_factory=dict)
    healthy: dict[str, set[str]] = field(default_factory=dict)
    unhealthy: dict[str, set[str]] = field(default_factory=dict)
    all_devices: dict[str, dict[str, pb.Device]] = field(default_factory=dict)
    pod_devices: dict[tuple[str, str, str], _PodDevices] = field(default_factory=dict)
    reserved: dict[str, set[str]] = field(default_factory=dict)  # in-flight allocations


class _RegistrationServicer(pb_grpc.RegistrationServicer):
    def __init__(self, peer: KubeletPeer, generation: int):
        self._peer = peer
        self._generation = generation

    def Register(self, request: pb.RegisterRequest, context: grpc.ServicerContext) -> pb.Empty:  # noqa: N802
        error = self._peer._handle_register(request, self._generation)
        if error is not None:
            context.abort(grpc.StatusCode.UNKNOWN, error)
        return pb.Empty()


# --------------------------------------------------------------------------- the peer


class KubeletPeer:
    """Kubelet's device manager, legacy ``kubelet.sock`` registration path."""

    def __init__(
        self,
        plugin_dir: str | os.PathLike[str],
        *,
        grace_period: float = DEFAULT_GRACE_PERIOD,
        dial_timeout: float = DEFAULT_DIAL_TIMEOUT,
        options_timeout: float | None = None,
        allocate_timeout: float | None = None,
        status_file: str | os.PathLike[str] | None = None,
        max_workers: int = 8,
    ):
        self.plugin_dir = Path(os.path.abspath(os.fspath(plugin_dir)))
        self.grace_period = float(grace_period)
        self.dial_timeout = float(dial_timeout)
        self.options_timeout = options_timeout
        self.allocate_timeout = allocate_timeout
        self.status_file = Path(status_file) if status_file is not None else None
        self._max_workers = max_workers

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._notify_lock = threading.RLock()
        self._state = _State()
        self._generation = 0
        self._server: grpc.Server | None = None
        self._executor: futures.ThreadPoolExecutor | None = None
        self._running = False
        self._stop_event = threading.Event()
        self._ticker: threading.Thread | None = None
        self._clients: set[_Client] = set()
        self._pending_channels: set[grpc.Channel] = set()
        self._threads: set[threading.Thread] = set()

        self._registrations: list[Registration] = []
        self._registration_counts: dict[str, int] = {}  # kubelet_device_plugin_registration_total
        self._calls: list[RpcCall] = []
        self._allocations: list[Allocation] = []
        self._node_capacity: dict[str, int] = {}
        self._node_allocatable: dict[str, int] = {}
        self._published: dict[str, tuple[int, int]] = {}
        self._history: dict[str, list[tuple[int, int]]] = {}
        self._listeners: list[Listener] = []
        self._events: list[tuple[float, str]] = []
        self._last_checkpoint: bytes | None = None
        self.restarts = 0
        self.last_cleanup_removed: list[str] = []

    # ------------------------------------------------------------------ lifecycle

    @property
    def socket_path(self) -> Path:
        return self.plugin_dir / KUBELET_SOCKET

    @property
    def checkpoint_path(self) -> Path:
        return self.plugin_dir / CHECKPOINT_FILE

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> KubeletPeer:
        """Start like kubelet's device manager: mkdir -p, read checkpoint, wipe sockets, serve."""
        if self._running:
            raise RuntimeError("KubeletPeer already started")
        os.makedirs(self.plugin_dir, mode=0o750, exist_ok=True)
        self._stop_event.clear()
        self._start_device_manager()
        self._running = True
        self._ticker = threading.Thread(target=self._tick_loop, name="kubelet-peer-ticker", daemon=True)
        self._ticker.start()
        self._refresh(force=True)
        return self

    def stop(self) -> None:
        """Stop serving and drop every plugin connection (kubelet shutdown)."""
        if not self._running:
            return
        self._running = False
        self._stop_event.set()
        self._shutdown_serving()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
            self._ticker = None
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            if t.ident is not None and t is not threading.current_thread():
                t.join(timeout=5)

    def restart(self) -> float:
        """Behave like a kubelet restart; return how long it took (seconds).

        Kubelet's process dies (every plugin connection and stream ends), then the new device
        manager reads its checkpoint (every registered resource gets an empty, pre-stopped
        endpoint: (0, 0) until the plugin registers again, removed after the grace period),
        deletes every socket in the directory except the checkpoint and serves
        ``kubelet.sock`` again.
        """
        if not self._running:
            raise RuntimeError("KubeletPeer not started")
        t0 = time.monotonic()
        self._shutdown_serving()
        self._start_device_manager()
        elapsed = time.monotonic() - t0
        self.restarts += 1
        self._log(f"restarted in {elapsed * 1000:.1f} ms; removed sockets {self.last_cleanup_removed}")
        self._refresh(event=("restart", elapsed))
        return elapsed

    def __enter__(self) -> KubeletPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start_device_manager(self) -> None:
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._state = _State()
            self._read_checkpoint_locked()
            if not self.checkpoint_path.exists():
                self._write_checkpoint_locked()
        self.last_cleanup_removed = self._cleanup_plugin_dir()
        self._serve(generation)

    def _serve(self, generation: int) -> None:
        sock = self.socket_path
        try:
            os.unlink(sock)  # a stale kubelet.sock
        except FileNotFoundError:
            pass
        executor = futures.ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="kubelet-peer-rpc")
        server = grpc.server(executor)
        pb_grpc.add_RegistrationServicer_to_server(_RegistrationServicer(self, generation), server)
        server.add_insecure_port(f"unix:{sock}")
        server.start()
        with self._lock:
            self._server = server
            self._executor = executor

    def _shutdown_serving(self) -> None:
        with self._lock:
            self._generation += 1
            server, self._server = self._server, None
            executor, self._executor = self._executor, None
            clients = list(self._clients)
            channels = list(self._pending_channels)
        for c in clients:
            c.cancel()
        for ch in channels:
            try:
                ch.close()
            except Exception:  # pragma: no cover
                pass
        if server is not None:
            # grpc unlinks the unix socket when its listener goes away: wait, so the
            # old server cannot remove a kubelet.sock we create afterwards.
            server.stop(None).wait(5)
        if executor is not None:
            executor.shutdown(wait=False)

    def _cleanup_plugin_dir(self) -> list[str]:
        """``CleanupPluginDirectory``: remove every socket except the checkpoint."""
        removed: list[str] = []
        try:
            entries = list(os.scandir(self.plugin_dir))
        except OSError as e:
            self._log(f"cannot read plugin dir: {e}")
            return removed
        for entry in entries:
            if entry.name == CHECKPOINT_FILE:
                continue
            try:
                st = os.stat(entry.path)  # follows symlinks, like Go's os.Stat
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode) or not stat.S_ISSOCK(st.st_mode):
                continue
            try:
                os.unlink(entry.path)
                removed.append(entry.name)
            except OSError as e:
                self._log(f"failed to remove {entry.path}: {e}")
        return sorted(removed)

    def _tick_loop(self) -> None:
        interval = min(0.5, max(0.01, self.grace_period / 20))
        while not self._stop_event.wait(interval):
            try:
                self._refresh()
            except Exception:  # pragma: no cover - never let the ticker die
                log.exception("kubelet peer ticker")

    # ------------------------------------------------------------------ registration

    def _handle_register(self, request: pb.RegisterRequest, generation: int) -> str | None:
        resource, endpoint, version = request.resource_name, request.endpoint, request.version
        socket_path = go_join(self.plugin_dir, endpoint)
        self._log(f"Got registration request from device plugin with resource {resource}")
        with self._lock:
            self._registration_counts[resource] = self._registration_counts.get(resource, 0) + 1
        stream_thread: threading.Thread | None = None
        if not rn.is_version_supported(version):
            error: str | None = rn.unsupported_version_error(version)
        elif not rn.is_extended_resource_name(resource):
            error = rn.invalid_resource_name_error(resource)
        else:
            error, stream_thread = self._connect_client(resource, endpoint, socket_path, generation)
        reg = Registration(resource, endpoint, version, socket_path, time.monotonic(), error is None, error)
        with self._lock:
            self._registrations.append(reg)
        self._log(f"registration of {resource} via {endpoint}: {reg.result}")
        self._refresh(event=("registration", reg))
        if stream_thread is not None:
            # kubelet starts ListAndWatch in a goroutine as Register returns
            stream_thread.start()
        return error

    def _connect_client(
        self, resource: str, endpoint: str, socket_path: str, generation: int
    ) -> tuple[str | None, threading.Thread | None]:
        """Dial, GetDevicePluginOptions, install the endpoint; return (error, unstarted stream thread)."""
        channel = grpc.insecure_channel(f"unix:{socket_path}")
        with self._lock:
            if generation != self._generation:
                channel.close()
                return "kubelet is shutting down", None
            self._pending_channels.add(channel)
        client = _Client(resource, endpoint, socket_path, channel, generation)
        try:
            if not self._dial(channel, generation):
                client.close()
                return "failed to dial device plugin: context deadline exceeded", None
            try:
                options = self._invoke(
                    client, "GetDevicePluginOptions", client.stub.GetDevicePluginOptions, pb.Empty(), self.options_timeout
                )
            except grpc.RpcError as e:
                client.close()
                return f"failed to get device plugin options: {go_error(e)}", None
            except ValueError as e:  # channel closed under us (kubelet stopping)
                client.close()
                return f"failed to get device plugin options: {e}", None
            client.options = options
            with self._lock:
                if generation != self._generation:
                    client.close()
                    return "kubelet is shutting down", None
                self._state.endpoints[resource] = _Endpoint(resource, client, options)
                self._clients.add(client)
                thread = threading.Thread(
                    target=self._run_client, args=(client,), name=f"kubelet-peer-law-{resource}", daemon=True
                )
                client.thread = thread
                self._threads.add(thread)
            return None, thread
        finally:
            with self._lock:
                self._pending_channels.discard(channel)

    def _dial(self, channel: grpc.Channel, generation: int) -> bool:
        """grpc.DialContext(..., WithBlock) with the dial timeout."""
        fut = grpc.channel_ready_future(channel)
        deadline = time.monotonic() + self.dial_timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or generation != self._generation:
                    return False
                try:
                    fut.result(timeout=min(0.05, remaining))
                    return True
                except grpc.FutureTimeoutError:
                    continue
                except Exception:
                    return False
        finally:
            fut.cancel()

    def _run_client(self, client: _Client) -> None:
        """``client.Run``: consume ListAndWatch until it ends, then PluginDisconnected."""
        error = "EOF"
        try:
            call = RpcCall("ListAndWatch", client.resource, client.socket_path, pb.Empty(), time.monotonic())
            self._record(call)
            stream = client.stub.ListAndWatch(pb.Empty())
            client.set_stream(stream)
            for resp in stream:
                self._on_devices(client, resp)
        except grpc.RpcError as e:
            error = go_error(e)
        except Exception as e:  # e.g. "Cannot invoke RPC on closed channel!"
            error = str(e) or type(e).__name__
        finally:
            self._log(f"ListAndWatch ended unexpectedly for device plugin {client.resource} ({client.socket_path}): {error}")
            client.close()
            try:
                self._on_disconnect(client)
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())

    def _is_current(self, client: _Client) -> bool:
        ep = self._state.endpoints.get(client.resource)
        return client.generation == self._generation and ep is not None and ep.client is client

    def _on_devices(self, client: _Client, resp: pb.ListAndWatchResponse) -> None:
        """``genericDeviceUpdateCallback``: the message replaces the whole device set."""
        with self._lock:
            client.messages += 1
            if not self._is_current(client):
                self._log(f"ignoring ListAndWatch update from replaced endpoint {client.socket_path}")
                return
            res = client.resource
            healthy: set[str] = set()
            unhealthy: set[str] = set()
            devices: dict[str, pb.Device] = {}
            for dev in resp.devices:
                copy = pb.Device()
                copy.CopyFrom(dev)
                devices[dev.ID] = copy
                (healthy if dev.health == HEALTHY else unhealthy).add(dev.ID)
            self._state.healthy[res] = healthy
            self._state.unhealthy[res] = unhealthy
            self._state.all_devices[res] = devices
            self._write_checkpoint_locked()
        self._refresh()

    def _on_disconnect(self, client: _Client) -> None:
        """``PluginDisconnected``: all devices unhealthy, stop time recorded."""
        with self._lock:
            self._clients.discard(client)
            if self._is_current(client):
                res = client.resource
                st = self._state
                ep = st.endpoints[res]
                healthy = st.healthy.get(res)
                if healthy is not None:
                    st.healthy[res] = set()
                else:
                    healthy = set()
                st.unhealthy[res] = st.unhealthy.get(res, set()) | healthy
                ep.stop_time = time.monotonic()
                self._write_checkpoint_locked()
            self._cond.notify_all()
        self._refresh()

    # ------------------------------------------------------------------ node status

    def _get_capacity_locked(self) -> tuple[dict[str, int], dict[str, int], set[str]]:
        """``GetCapacity``: counts, and garbage-collects endpoints stopped past the grace."""
        st = self._state
        now = time.monotonic()
        capacity: dict[str, int] = {}
        allocatable: dict[str, int] = {}
        removed: set[str] = set()
        for res in list(st.healthy):
            ep = st.endpoints.get(res)
            if ep is None or ep.grace_expired(now, self.grace_period):
                st.endpoints.pop(res, None)
                del st.healthy[res]
                removed.add(res)
            else:
                capacity[res] = len(st.healthy[res])
                allocatable[res] = len(st.healthy[res])
        for res in list(st.unhealthy):
            ep = st.endpoints.get(res)
            if ep is None or ep.grace_expired(now, self.grace_period):
                st.endpoints.pop(res, None)
                del st.unhealthy[res]
                removed.add(res)
            else:
                capacity[res] = capacity.get(res, 0) + len(st.unhealthy[res])
        if removed:
            for res in removed:
                st.all_devices.pop(res, None)
                self._log(f"resource {res} removed: endpoint stopped longer than the grace period")
            self._write_checkpoint_locked()
        return capacity, allocatable, removed

    def _update_node_locked(self) -> dict[str, tuple[int, int]]:
        """The node-status setter: capacity keys persist, removed resources become 0."""
        capacity, allocatable, removed = self._get_capacity_locked()
        self._node_capacity.update(capacity)
        for res in removed:
            self._node_capacity[res] = 0
        node_alloc = dict(self._node_capacity)
        node_alloc.update(allocatable)
        self._node_allocatable = node_alloc
        return {res: (node_alloc[res], cap) for res, cap in sorted(self._node_capacity.items())}

    def _refresh(self, event: tuple[str, Any] | None = None, force: bool = False) -> dict[str, tuple[int, int]]:
        with self._notify_lock:
            with self._lock:
                status = self._update_node_locked()
                changes = {r: v for r, v in status.items() if self._published.get(r) != v}
                for r, v in changes.items():
                    self._published[r] = v
                    self._history.setdefault(r, []).append(v)
                self._cond.notify_all()
                listeners = list(self._listeners)
                doc = self._status_doc_locked(status) if (changes or event or force) and self.status_file else None
            if event is not None:
                self._emit(listeners, *event)
            if changes:
                for r, v in changes.items():
                    self._log(f"node status {r}: allocatable={v[0]} capacity={v[1]}")
                self._emit(listeners, "status", changes)
            if doc is not None:
                self._write_status_file(doc)
        return status

    @staticmethod
    def _emit(listeners: list[Listener], kind: str, payload: Any) -> None:
        for fn in listeners:
            try:
                fn(kind, payload)
            except Exception:  # a listener must never break kubelet
                log.exception("kubelet peer listener failed")

    def _status_doc_locked(self, status: dict[str, tuple[int, int]]) -> dict[str, Any]:
        resources = {
            res: {
                "allocatable": a,
                "capacity": c,
                "devices": [
                    {"id": d.id, "health": d.health, "numa": list(d.numa)} for d in self._devices_locked(res)
                ],
            }
            for res, (a, c) in status.items()
        }
        return {
            "resources": resources,
            "registrations": sum(1 for r in self._registrations if r.ok),
            "registration_attempts": len(self._registrations),
            "restarts": self.restarts,
            "updated": time.time(),
        }

    def _write_status_file(self, doc: dict[str, Any]) -> None:
        assert self.status_file is not None
        _atomic_write(self.status_file, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())

    # ------------------------------------------------------------------ queries

    def node_status(self) -> dict[str, tuple[int, int]]:
        """resource -> (allocatable, capacity), as the Node object would show it."""
        return self._refresh()

    def history(self, resource: str) -> list[tuple[int, int]]:
        """Every distinct (allocatable, capacity) the resource went through, in order."""
        self._refresh()
        with self._lock:
            return list(self._history.get(resource, []))

    def devices(self, resource: str) -> list[DeviceState]:
        """The resource's devices as kubelet currently counts them."""
        with self._lock:
            return self._devices_locked(resource)

    def _devices_locked(self, resource: str) -> list[DeviceState]:
        st = self._state
        healthy = st.healthy.get(resource, set())
        out = []
        for dev_id, dev in sorted(st.all_devices.get(resource, {}).items()):
            numa = tuple(n.ID for n in dev.topology.nodes) if dev.HasField("topology") else ()
            out.append(DeviceState(dev_id, HEALTHY if dev_id in healthy else UNHEALTHY, numa, dev.health))
        return out

    def topology(self, resource: str) -> dict[str, tuple[int, ...]]:
        return {d.id: d.numa for d in self.devices(resource)}

    def options(self, resource: str) -> pb.DevicePluginOptions | None:
        with self._lock:
            ep = self._state.endpoints.get(resource)
            return ep.options if ep else None

    def endpoint_stopped(self, resource: str) -> bool | None:
        """True/False for a known endpoint, None when kubelet has no endpoint for it."""
        with self._lock:
            ep = self._state.endpoints.get(resource)
            return ep.stopped if ep else None

    def endpoint_socket(self, resource: str) -> str | None:
        with self._lock:
            ep = self._state.endpoints.get(resource)
            return ep.client.socket_path if ep and ep.client else None

    @property
    def registrations(self) -> list[Registration]:
        with self._lock:
            return list(self._registrations)

    def registration_count(self, resource: str) -> int:
        """``kubelet_device_plugin_registration_total{resource_name}`` (counted before validation)."""
        with self._lock:
            return self._registration_counts.get(resource, 0)

    @property
    def calls(self) -> list[RpcCall]:
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str, resource: str | None = None) -> list[RpcCall]:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}")
        return [c for c in self.calls if c.method == method and (resource is None or c.resource == resource)]

    @property
    def allocations(self) -> list[Allocation]:
        with self._lock:
            return list(self._allocations)

    def in_use(self, resource: str) -> set[str]:
        with self._lock:
            return self._in_use_locked(resource)

    @property
    def events(self) -> list[tuple[float, str]]:
        """Kubelet-style log lines: (time.monotonic(), text)."""
        with self._lock:
            return list(self._events)

    def add_listener(self, fn: Listener) -> None:
        """``fn(kind, payload)``: ("status", {res: (a, c)}), ("registration", Registration),
        ("restart", seconds). Called from peer threads; keep it quick."""
        with self._lock:
            self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        with self._lock:
            self._listeners.remove(fn)

    # ------------------------------------------------------------------ waiting

    def wait_until(self, predicate: Callable[[], Any], timeout: float = 10.0, what: str | None = None) -> Any:
        """Wait until ``predicate()`` is truthy (re-checked on every change); return its value."""
        deadline = time.monotonic() + timeout
        while True:
            self._refresh()
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"timed out after {timeout}s waiting for {what or getattr(predicate, '__name__', 'condition')}; "
                    f"node status {self.node_status()}, registrations {[(r.resource, r.result) for r in self.registrations]}"
                )
            with self._cond:
                self._cond.wait(min(remaining, 0.05))

    def wait_registered(self, resource: str, count: int = 1, timeout: float = 10.0) -> Registration:
        """Wait for ``count`` successful registrations of ``resource``; return the latest."""

        def registered() -> Registration | None:
            ok = [r for r in self.registrations if r.resource == resource and r.ok]
            return ok[-1] if len(ok) >= count else None

        return self.wait_until(registered, timeout, f"{count} registration(s) of {resource}")

    def wait_node_status(
        self, resource: str, expected: tuple[int, int] | None, timeout: float = 10.0
    ) -> dict[str, tuple[int, int]]:
        """Wait until the node shows (allocatable, capacity) == expected (None: absent)."""

        def matches() -> dict[str, tuple[int, int]] | None:
            status = self.node_status()
            return status if status.get(resource) == expected else None

        return self.wait_until(matches, timeout, f"{resource} == {expected}")

    # ------------------------------------------------------------------ allocation

    def _in_use_locked(self, resource: str) -> set[str]:
        used = set(self._state.reserved.get(resource, set()))
        for (_, _, res), pd in self._state.pod_devices.items():
            if res == resource:
                used.update(pd.device_ids)
        return used

    def _filter_by_affinity_locked(
        self, resource: str, available: set[str], numa_hint: Iterable[int] | None
    ) -> tuple[set[str], set[str], set[str]]:
        if numa_hint is None:
            return set(), set(), set(available)
        hint = set(numa_hint)
        aligned, unaligned, no_affinity = set(), set(), set()
        devices = self._state.all_devices.get(resource, {})
        for dev_id in available:
            dev = devices.get(dev_id)
            nodes = [n.ID for n in dev.topology.nodes] if dev is not None and dev.HasField("topology") else []
            if not nodes:
                no_affinity.add(dev_id)
            elif any(n in hint for n in nodes):
                aligned.add(dev_id)
            else:
                unaligned.add(dev_id)
        return aligned, unaligned, no_affinity

    def _preferred(
        self, resource: str, available: set[str], must_include: set[str], size: int
    ) -> set[str]:
        """``callGetPreferredAllocationIfAvailable``."""
        with self._lock:
            ep = self._state.endpoints.get(resource)
        if ep is None:
            raise AdmissionError(f"endpoint not found in cache for a registered resource: {resource}")
        if ep.options is None or not ep.options.get_preferred_allocation_available:
            return set()
        if ep.stopped or ep.client is None:
            raise AdmissionError(
                f"device plugin GetPreferredAllocation rpc failed with err: endpoint {ep.describe()} has been stopped"
            )
        req = pb.PreferredAllocationRequest(
            container_requests=[
                pb.ContainerPreferredAllocationRequest(
                    available_deviceIDs=sorted(available),
                    must_include_deviceIDs=sorted(must_include),
                    allocation_size=size,
                )
            ]
        )
        try:
            resp = self._invoke(
                ep.client, "GetPreferredAllocation", ep.client.stub.GetPreferredAllocation, req, self.allocate_timeout
            )
        except (grpc.RpcError, ValueError) as e:
            raise AdmissionError(f"device plugin GetPreferredAllocation rpc failed with err: {go_error(e)}") from e
        if resp.container_responses:
            return set(resp.container_responses[0].deviceIDs)
        return set()

    def allocate(
        self,
        resource: str,
        request: int | Sequence[str],
        *,
        must_include: Iterable[str] = (),
        numa_hint: Iterable[int] | None = None,
        pod_uid: str | None = None,
        container_name: str = "main",
    ) -> pb.ContainerAllocateResponse:
        """Admit one container asking for ``request`` devices of ``resource``.

        ``request`` is a device count, or a list of device ids that are already picked
        (kubelet's "reusable" init-container devices). ``must_include`` devices are already
        picked too and count toward the total. ``numa_hint`` plays the Topology Manager's
        NUMA affinity (None: no hint, every device is "no affinity").

        Follows ``devicesToAllocate``/``allocateContainerResources``: GetPreferredAllocation
        only if advertised (available ∪ picked, must_include = picked, allocation_size = the
        total), its answer intersected with the candidates and the rest filled; then one
        Allocate carrying exactly one ContainerAllocateRequest; then PreStartContainer (30 s
        deadline) if the plugin requires it. Raises AdmissionError / ContainerStartError with
        kubelet's texts. A container that already has devices gets its checkpointed response
        back without any RPC (kubelet does not call Allocate again).
        """
        if isinstance(request, bool):
            raise TypeError("request must be a count or a list of device ids")
        picked_order = list(dict.fromkeys(must_include))
        if isinstance(request, int):
            required = request
        else:
            picked_order = list(dict.fromkeys([*picked_order, *request]))
            required = len(picked_order)
        if required <= 0:
            raise ValueError("nothing to allocate")
        pod_uid = pod_uid or str(uuid.uuid4())
        key = (pod_uid, container_name, resource)

        with self._lock:
            st = self._state
            existing = st.pod_devices.get(key)
            if existing is not None:
                return pb.ContainerAllocateResponse.FromString(existing.resp)
            if resource not in st.healthy:
                raise AdmissionError(f"cannot allocate unregistered device {resource}")
            healthy = st.healthy[resource]
            if not healthy:
                raise AdmissionError(f"no healthy devices present; cannot allocate unhealthy devices {resource}")
            allocated: set[str] = set(picked_order)
            needed = required - len(allocated)
            available: set[str] = set()
            aligned: set[str] = set()
            unaligned: set[str] = set()
            no_affinity: set[str] = set()
            if needed > 0:
                available = healthy - self._in_use_locked(resource) - allocated
                if len(available) < needed:
                    raise AdmissionError(
                        f"requested number of devices unavailable for {resource}. "
                        f"Requested: {needed}, Available: {len(available)}"
                    )
                aligned, unaligned, no_affinity = self._filter_by_affinity_locked(resource, available, numa_hint)

        def take(src: Iterable[str]) -> bool:
            nonlocal needed
            for dev in sorted(src):
                if needed <= 0:
                    break
                if dev not in allocated:
                    allocated.add(dev)
                    needed -= 1
            return needed <= 0

        if needed > 0:
            if needed < len(aligned):
                preferred = self._preferred(resource, aligned | allocated, set(allocated), required)
                take(preferred & aligned) or take(aligned)
            elif not take(aligned):
                preferred = self._preferred(resource, available | allocated, set(allocated), required)
                take(preferred & available) or take(unaligned) or take(no_affinity)
            if needed > 0:
                raise AdmissionError(
                    f"unexpectedly allocated less resources than required. "
                    f"Requested: {required}, Got: {required - needed}"
                )

        with self._lock:
            self._state.reserved.setdefault(resource, set()).update(allocated)
            ep = self._state.endpoints.get(resource)
        try:
            if ep is None:
                raise AdmissionError(f"unknown Device Plugin {resource}")
            if ep.stopped or ep.client is None:
                raise AdmissionError(f"endpoint {ep.describe()} has been stopped")
            device_ids = tuple(sorted(allocated))
            req = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=device_ids)])
            try:
                resp = self._invoke(ep.client, "Allocate", ep.client.stub.Allocate, req, self.allocate_timeout)
            except (grpc.RpcError, ValueError) as e:
                raise AdmissionError(go_error(e)) from e
            if not resp.container_responses:
                raise AdmissionError("no containers return in allocation response")
            container_resp = resp.container_responses[0]
            with self._lock:
                self._state.pod_devices[key] = _PodDevices(
                    device_ids, self._numa_map_locked(resource, device_ids), container_resp.SerializeToString()
                )
                self._allocations.append(Allocation(pod_uid, container_name, resource, device_ids, container_resp))
                self._write_checkpoint_locked()
        finally:
            with self._lock:
                self._state.reserved.get(resource, set()).difference_update(allocated)
        self._refresh()
        self._pre_start_if_needed(resource, ep, device_ids)
        return container_resp

    def _numa_map_locked(self, resource: str, device_ids: Iterable[str]) -> dict[int, list[str]]:
        numa: dict[int, list[str]] = {}
        devices = self._state.all_devices.get(resource, {})
        for dev_id in device_ids:
            dev = devices.get(dev_id)
            nodes = [n.ID for n in dev.topology.nodes] if dev is not None and dev.HasField("topology") else []
            for n in nodes or [NO_TOPOLOGY_NUMA]:
                numa.setdefault(n, []).append(dev_id)
        return numa

    def _pre_start_if_needed(self, resource: str, ep: _Endpoint, device_ids: Sequence[str]) -> None:
        if ep.options is None or not ep.options.pre_start_required:
            return
        if ep.stopped or ep.client is None:
            raise ContainerStartError(
                f"device plugin PreStartContainer rpc failed with err: endpoint {ep.describe()} has been stopped"
            )
        req = pb.PreStartContainerRequest(devices_ids=list(device_ids))
        try:
            self._invoke(ep.client, "PreStartContainer", ep.client.stub.PreStartContainer, req, PRE_START_TIMEOUT)
        except (grpc.RpcError, ValueError) as e:
            raise ContainerStartError(f"device plugin PreStartContainer rpc failed with err: {go_error(e)}") from e

    def start_container(self, pod_uid: str, container_name: str = "main") -> None:
        """A container (re)start: PreStartContainer for each of its resources that needs it."""
        with self._lock:
            entries = [
                (res, pd.device_ids)
                for (pod, ctr, res), pd in self._state.pod_devices.items()
                if pod == pod_uid and ctr == container_name
            ]
        for res, ids in entries:
            with self._lock:
                ep = self._state.endpoints.get(res)
            if ep is None:
                raise ContainerStartError(f"endpoint not found in cache for a registered resource: {res}")
            self._pre_start_if_needed(res, ep, ids)

    def release(self, pod_uid: str) -> int:
        """The pod is gone: its devices are no longer in use. Returns the entries dropped."""
        with self._lock:
            keys = [k for k in self._state.pod_devices if k[0] == pod_uid]
            for k in keys:
                del self._state.pod_devices[k]
            if keys:
                self._write_checkpoint_locked()
        self._refresh()
        return len(keys)

    # raw calls for error tests ------------------------------------------------

    def drop_stream(self, resource: str) -> None:
        """End ``resource``'s ListAndWatch stream from kubelet's side, without a restart.

        Kubelet does this when the stream errors; it never calls ListAndWatch
        again, so only a new Register brings the resource back.
        """
        self._current_client(resource).cancel()

    def _current_client(self, resource: str) -> _Client:
        with self._lock:
            ep = self._state.endpoints.get(resource)
            if ep is None or ep.client is None:
                raise KubeletPeerError(f"no plugin connection for {resource}")
            return ep.client

    def call_allocate(
        self, resource: str, device_ids: Sequence[str], timeout: float | None = None
    ) -> pb.AllocateResponse:
        """Send Allocate with exactly these ids in one container request; grpc errors propagate."""
        client = self._current_client(resource)
        req = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=list(device_ids))])
        return self._invoke(client, "Allocate", client.stub.Allocate, req, timeout)

    def call_get_preferred_allocation(
        self,
        resource: str,
        available: Sequence[str],
        must_include: Sequence[str] = (),
        size: int = 1,
        timeout: float | None = None,
    ) -> pb.PreferredAllocationResponse:
        client = self._current_client(resource)
        req = pb.PreferredAllocationRequest(
            container_requests=[
                pb.ContainerPreferredAllocationRequest(
                    available_deviceIDs=list(available), must_include_deviceIDs=list(must_include), allocation_size=size
                )
            ]
        )
        return self._invoke(client, "GetPreferredAllocation", client.stub.GetPreferredAllocation, req, timeout)

    def call_pre_start_container(
        self, resource: str, device_ids: Sequence[str], timeout: float | None = PRE_START_TIMEOUT
    ) -> pb.PreStartContainerResponse:
        client = self._current_client(resource)
        req = pb.PreStartContainerRequest(devices_ids=list(device_ids))
        return self._invoke(client, "PreStartContainer", client.stub.PreStartContainer, req, timeout)

    def call_get_device_plugin_options(self, resource: str, timeout: float | None = None) -> pb.DevicePluginOptions:
        client = self._current_client(resource)
        return self._invoke(client, "GetDevicePluginOptions", client.stub.GetDevicePluginOptions, pb.Empty(), timeout)

    def _invoke(self, client: _Client, method: str, fn: Callable[..., Any], req: Any, timeout: float | None) -> Any:
        started = time.monotonic()
        try:
            resp = fn(req, timeout=timeout)
        except (grpc.RpcError, ValueError) as e:
            self._record(RpcCall(method, client.resource, client.socket_path, req, started, None, go_error(e)))
            raise
        self._record(RpcCall(method, client.resource, client.socket_path, req, started, resp, None))
        return resp

    def _record(self, call: RpcCall) -> None:
        with self._lock:
            self._calls.append(call)
            self._cond.notify_all()

    def _log(self, msg: str) -> None:
        log.debug("%s", msg)
        with self._lock:
            self._events.append((time.monotonic(), msg))
            if len(self._events) > 2000:
                del self._events[:500]

    # ------------------------------------------------------------------ checkpoint

    def _checkpoint_doc_locked(self) -> dict[str, Any]:
        st = self._state
        entries = [
            {
                "PodUID": pod,
                "ContainerName": ctr,
                "ResourceName": res,
                "DeviceIDs": {str(n): ids for n, ids in sorted(pd.numa.items())},
                "AllocResp": base64.b64encode(pd.resp).decode(),
            }
            for (pod, ctr, res), pd in sorted(st.pod_devices.items())
        ]
        registered = {res: sorted(devs) for res, devs in sorted(st.healthy.items())}
        data = {"PodDeviceEntries": entries, "RegisteredDevices": registered}
        return {"Data": data, "Checksum": _fnv32a(_canonical(data))}

    def _write_checkpoint_locked(self) -> None:
        body = json.dumps(self._checkpoint_doc_locked()).encode()
        try:
            _atomic_write(self.checkpoint_path, body, prefix=".")
            self._last_checkpoint = body
        except OSError as e:
            self._log(f"failed to write checkpoint: {e}")

    def _read_checkpoint_locked(self) -> None:
        """``readCheckpoint``: registered resources come back as empty, pre-stopped endpoints."""
        try:
            raw = self.checkpoint_path.read_bytes()
        except OSError:
            return
        try:
            doc = json.loads(raw)
            data = doc["Data"]
            if int(doc.get("Checksum", -1)) != _fnv32a(_canonical(data)):
                raise ValueError("checkpoint is corrupted")
            registered = data.get("RegisteredDevices") or {}
            entries = data.get("PodDeviceEntries") or []
        except (ValueError, KeyError, TypeError) as e:
            self._log(f"Continue after failing to read checkpoint file: {e}")
            return
        self._last_checkpoint = raw
        st = self._state
        now = time.monotonic()
        for res in registered:
            st.healthy[res] = set()
            st.unhealthy[res] = set()
            st.endpoints[res] = _Endpoint(res, None, None, stop_time=now)
        for e in entries:
            numa = {int(n): list(ids) for n, ids in (e.get("DeviceIDs") or {}).items()}
            ids = tuple(sorted({i for v in numa.values() for i in v}))
            st.pod_devices[(e["PodUID"], e["ContainerName"], e["ResourceName"])] = _PodDevices(
                ids, numa, base64.b64decode(e.get("AllocResp") or "")
            )

    def read_checkpoint(self) -> dict[str, Any]:
        """The checkpoint file as JSON."""
        return json.loads(self.checkpoint_path.read_bytes())

    def checkpoint_intact(self) -> bool:
        """True when the checkpoint file holds exactly what the peer last wrote (nobody touched it)."""
        try:
            return self.checkpoint_path.read_bytes() == self._last_checkpoint
        except OSError:
            return False


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _atomic_write(path: Path, body: bytes, prefix: str = ".tmp-") -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=prefix + path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
