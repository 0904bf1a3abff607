"""The shared core of the kubelet stand-in: configuration, the one lock, records and RPC helpers.

``KubeletPeer`` (peer.py) is assembled from role mixins over this base: registration.py
(Register), streams.py (ListAndWatch accounting), admission.py (Allocate and friends),
node_status.py (capacity, history, waiting). They share only what is declared here, always
under ``self._lock``; the device manager's own memory is ``self._state``
(``DeviceManagerState``), which a kubelet restart replaces.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any, TypeVar

import grpc

from .checkpoint import CheckpointFile
from .records import (
    CHECKPOINT_FILE,
    DEFAULT_DIAL_TIMEOUT,
    DEFAULT_GRACE_PERIOD,
    KubeletPeerError,
    Listener,
    Registration,
    RpcCall,
    Allocation,
    go_error,
)
from .state import DeviceManagerState, PluginClient

log = logging.getLogger("kubelet_peer")

T = TypeVar("T")


class PeerCore:
    """State and helpers every role of the stand-in uses; see the module docstring."""

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
        seed: int | None = None,
        shuffle: bool = True,
        stale_stream_disconnects: bool = True,
    ):
        self.plugin_dir = Path(os.path.abspath(os.fspath(plugin_dir)))
        self.grace_period = float(grace_period)
        self.dial_timeout = float(dial_timeout)
        self.options_timeout = options_timeout
        self.allocate_timeout = allocate_timeout
        self.status_file = Path(status_file) if status_file is not None else None
        self.shuffle = shuffle
        self.stale_stream_disconnects = stale_stream_disconnects
        self._max_workers = max_workers
        self._rng = random.Random(seed)

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._state = DeviceManagerState()
        self._generation = 0
        self._server: grpc.Server | None = None
        self._executor: futures.ThreadPoolExecutor | None = None
        self._running = False
        self._clients: set[PluginClient] = set()
        self._pending_channels: set[grpc.Channel] = set()
        self._dialing: set[grpc.Channel] = set()  # channels inside _dial (see _shutdown_serving)
        self._threads: set[threading.Thread] = set()
        self._checkpoint = CheckpointFile(self.plugin_dir / CHECKPOINT_FILE)

        self._registrations: list[Registration] = []
        self._registration_counts: dict[str, int] = {}  # kubelet_device_plugin_registration_total
        self._calls: list[RpcCall] = []
        self._allocations: list[Allocation] = []
        # Pod identities live in kubelet's pod manager, not the device manager: they survive restarts.
        self._pods: dict[str, tuple[str, str]] = {}  # uid -> (namespace, name)
        self._listeners: list[Listener] = []
        # node status (node_status.py); _notify_lock keeps listener calls in publication order
        self._notify_lock = threading.RLock()
        self._node_capacity: dict[str, int] = {}
        self._published: dict[str, tuple[int, int]] = {}
        self._history: dict[str, list[tuple[int, int]]] = {}
        self._events: list[tuple[float, str]] = []
        self.restarts = 0
        self.last_cleanup_removed: list[str] = []

    # Implemented by the role mixins (which come before this base in KubeletPeer's MRO).
    def _refresh(self, event: tuple[str, Any] | None = None, force: bool = False) -> dict[str, tuple[int, int]]:
        """Publish the node status (node_status.py)."""
        raise NotImplementedError

    def _run_client(self, client: PluginClient) -> None:
        """Consume a plugin's ListAndWatch stream (streams.py)."""
        raise NotImplementedError

    def _ordered(self, ids: Sequence[T]) -> list[T]:
        """Ids the way kubelet sends them: in Go map/set order, i.e. shuffled (unless turned off)."""
        out = list(ids)
        if self.shuffle:
            with self._lock:
                self._rng.shuffle(out)
        return out

    def _current_client(self, resource: str) -> PluginClient:
        with self._lock:
            ep = self._state.endpoints.get(resource)
            if ep is None or ep.client is None:
                raise KubeletPeerError(f"no plugin connection for {resource}")
            return ep.client

    def _invoke(
        self, client: PluginClient, method: str, fn: Callable[..., Any], req: Any, timeout: float | None
    ) -> Any:
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

    def _write_checkpoint_locked(self) -> None:
        try:
            self._checkpoint.write(self._state)
        except OSError as e:
            self._log(f"failed to write checkpoint: {e}")
