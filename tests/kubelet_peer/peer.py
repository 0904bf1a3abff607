"""KubeletPeer: a stand-in for kubelet 1.32's device manager on the legacy ``kubelet.sock`` path.

Tests start it through the fixtures in plugin.py, system tests as a process through
``python -m tests.kubelet_peer``. It serves ``v1beta1.Registration`` on ``<dir>/kubelet.sock``
and ``v1.PodResourcesLister`` on ``pod_resources_socket``, and drives every registered plugin
the way kubelet does (kubelet-api.md §2). This module holds the lifecycle and the queries; the
roles live beside it:

* registration.py: Register (validation, dial-back, GetDevicePluginOptions);
* streams.py: ListAndWatch accounting, and what a stream's end does, including kubelet 1.32's
  "a replaced registration's stream ending disconnects the new one" (``stale_stream_disconnects``);
* admission.py: ``allocate`` / ``release`` (GetPreferredAllocation, Allocate, PreStartContainer,
  re-admission checked against current health), device ids shuffled (``seed``, ``shuffle``);
* node_status.py: capacity, allocatable, history, the status file, ``wait_*``;
* checkpoint.py: ``kubelet_internal_checkpoint``;
* pod_resources.py: the PodResources server.

Like kubelet 1.32 at start it removes every non-directory entry of the device-plugin directory
(sockets, regular files, symlinks) except the checkpoint, and creates no checkpoint
when none exists. ``restart`` behaves like a kubelet restart: every plugin connection ends,
the checkpoint's resources come back as pre-stopped endpoints, the directory is cleaned and
``kubelet.sock`` served again.

Only the stdlib, grpc and ``nvdp_node.api`` are imported: the CLI runs inside system-test boxes.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from nvdp_node.api import deviceplugin_v1beta1_pb2 as pb
from nvdp_node.api import deviceplugin_v1beta1_pb2_grpc as pb_grpc

from .admission import AdmissionMixin
from .core import log
from .node_status import NodeStatusMixin
from .pod_resources import PodResourcesMixin
from .records import (
    CHECKPOINT_FILE,
    KUBELET_SOCKET,
    METHODS,
    POD_RESOURCES_DIR,
    Allocation,
    Registration,
    RpcCall,
    check_unix_path,
)
from .registration import RegistrationMixin
from .state import Endpoint
from .streams import StreamsMixin


class KubeletPeer(RegistrationMixin, StreamsMixin, AdmissionMixin, PodResourcesMixin, NodeStatusMixin):
    """Kubelet's device manager, legacy ``kubelet.sock`` registration path, plus PodResources.

    Keyword arguments: ``grace_period`` (endpoint stop grace, s), ``dial_timeout``,
    ``options_timeout`` / ``allocate_timeout`` (None: no deadline, as kubelet), ``status_file``,
    ``seed`` / ``shuffle`` (device-id order in requests), ``stale_stream_disconnects`` (kubelet
    <= 1.35 behaviour, see streams.py), ``pod_resources_socket`` (default: ``pod-resources/
    kubelet.sock`` in a temp dir beside ``plugin_dir``, removed by ``stop``).
    """

    def __init__(
        self,
        plugin_dir: str | os.PathLike[str],
        *,
        pod_resources_socket: str | os.PathLike[str] | None = None,
        **kw: Any,
    ):
        super().__init__(plugin_dir, **kw)
        check_unix_path(self.socket_path, "kubelet socket")
        self._owned_dir: Path | None = None
        if pod_resources_socket is None:
            parent = self.plugin_dir.parent if self.plugin_dir.parent.is_dir() else None
            self._owned_dir = Path(tempfile.mkdtemp(prefix="kpr-", dir=parent))
            pod_resources_socket = self._owned_dir / POD_RESOURCES_DIR / KUBELET_SOCKET
        self.pod_resources_socket = Path(os.path.abspath(os.fspath(pod_resources_socket)))
        check_unix_path(self.pod_resources_socket, "pod-resources socket")
        self._stop_event = threading.Event()
        self._ticker: threading.Thread | None = None
        self.served_at = 0.0  # time.monotonic() when kubelet.sock last started accepting (benchmarks)

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
        """Start like kubelet: mkdir -p, clean the directory, read the checkpoint, serve both sockets."""
        if self._running:
            raise RuntimeError("KubeletPeer already started")
        os.makedirs(self.plugin_dir, mode=0o750, exist_ok=True)
        self._stop_event.clear()
        self._start_device_manager()
        self.pod_resources_up()
        self._running = True
        self._ticker = threading.Thread(target=self._tick_loop, name="kubelet-peer-ticker", daemon=True)
        self._ticker.start()
        self._refresh(force=True)
        return self

    def stop(self) -> None:
        """Stop serving and drop every plugin connection (kubelet shutdown); plugin sockets stay."""
        if not self._running:
            return
        self._running = False
        self._stop_event.set()
        self._shutdown_serving()
        self.pod_resources_down()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
            self._ticker = None
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            if t.ident is not None and t is not threading.current_thread():
                t.join(timeout=5)
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)

    def restart(self) -> float:
        """Behave like a kubelet restart; return how long it took (seconds).

        Kubelet's process dies (every plugin connection and stream ends, the PodResources
        socket goes), then the new device manager reads its checkpoint (every registered
        resource gets an empty, pre-stopped endpoint: (0, 0) until the plugin registers
        again, removed after the grace period), cleans the directory and serves again.
        """
        if not self._running:
            raise RuntimeError("KubeletPeer not started")
        t0 = time.monotonic()
        pod_resources = self.pod_resources_serving
        self._shutdown_serving()
        self.pod_resources_down()
        self._start_device_manager()
        if pod_resources:
            self.pod_resources_up()
        elapsed = time.monotonic() - t0
        self.restarts += 1
        self._log(f"restarted in {elapsed * 1000:.1f} ms; removed {self.last_cleanup_removed}")
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
            self._state = type(self._state)()
            self._read_checkpoint_locked()
        self.last_cleanup_removed = self._cleanup_plugin_dir()
        self._serve(generation)

    def _read_checkpoint_locked(self) -> None:
        """``readCheckpoint``: registered resources come back as empty, pre-stopped endpoints."""
        try:
            data = self._checkpoint.load()
        except ValueError as e:
            self._log(f"Continue after failing to read checkpoint file: {e}")
            return
        if data is None:
            return
        st = self._state
        now = time.monotonic()
        for res in data.registered:
            st.healthy[res] = set()
            st.unhealthy[res] = set()
            st.endpoints[res] = Endpoint(res, None, None, stop_time=now)
        st.pod_devices.update(data.pod_devices)

    def _serve(self, generation: int) -> None:
        sock = self.socket_path
        try:
            os.unlink(sock)  # a stale kubelet.sock
        except FileNotFoundError:
            pass
        executor = futures.ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="kubelet-peer-rpc")
        server = grpc.server(executor)
        pb_grpc.add_RegistrationServicer_to_server(self._registration_servicer(generation), server)
        server.add_insecure_port(f"unix:{sock}")
        server.start()
        self.served_at = time.monotonic()
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
        # Dials notice the new generation within 50 ms and cancel their ready-futures.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            with self._lock:
                if not self._dialing & set(channels):
                    break
            time.sleep(0.005)
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
        """``CleanupPluginDirectory`` (1.32): remove every entry but directories and the checkpoint.

        Entries are looked at with ``lstat``, so every symlink goes, whatever it points to.
        """
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
                st = os.lstat(entry.path)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
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

    # ------------------------------------------------------------------ queries

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
            return self._state.in_use(resource)

    @property
    def events(self) -> list[tuple[float, str]]:
        """Kubelet-style log lines: (time.monotonic(), text)."""
        with self._lock:
            return list(self._events)

    def read_checkpoint(self) -> dict[str, Any]:
        """The checkpoint file as JSON."""
        return self._checkpoint.read_json()

    def checkpoint_intact(self) -> bool:
        """True when the checkpoint file holds exactly what the peer last wrote (nobody touched it)."""
        return self._checkpoint.intact()
