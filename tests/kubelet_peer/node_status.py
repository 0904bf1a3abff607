"""What the Node object would show: capacity/allocatable, their history, listeners, the status file.

``NodeStatusMixin`` is a role of ``KubeletPeer``; every other role calls ``_refresh`` after a
change and tests wait on it (``wait_until``, ``wait_node_status``). It runs ``GetCapacity``
(capacity = healthy + unhealthy, allocatable = healthy; endpoints stopped longer than the
grace period are dropped) and the node-status setter (a capacity key, once seen, stays: a
removed resource shows an explicit 0). kubelet-api.md §2.3-2.4.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from .checkpoint import atomic_write
from .core import PeerCore
from .records import DeviceState, Listener, Registration

log = logging.getLogger("kubelet_peer")


class NodeStatusMixin(PeerCore):
    """The node-status side of kubelet, and the waiting helpers tests use."""

    def _update_node_locked(self) -> dict[str, tuple[int, int]]:
        capacity, allocatable, removed = self._state.capacity(time.monotonic(), self.grace_period)
        if removed:
            for res in sorted(removed):
                self._log(f"resource {res} removed: endpoint stopped longer than the grace period")
            self._write_checkpoint_locked()
        self._node_capacity.update(capacity)
        for res in removed:
            self._node_capacity[res] = 0
        node_alloc = dict(self._node_capacity)
        node_alloc.update(allocatable)
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
                assert self.status_file is not None
                atomic_write(self.status_file, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
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
                    {"id": d.id, "health": d.health, "numa": list(d.numa)} for d in self._state.device_states(res)
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
            return self._state.device_states(resource)

    def topology(self, resource: str) -> dict[str, tuple[int, ...]]:
        return {d.id: d.numa for d in self.devices(resource)}

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
                with self._lock:
                    regs = [(r.resource, r.result) for r in self._registrations]
                raise TimeoutError(
                    f"timed out after {timeout}s waiting for {what or getattr(predicate, '__name__', 'condition')}; "
                    f"node status {self.node_status()}, registrations {regs}"
                )
            with self._cond:
                self._cond.wait(min(remaining, 0.05))

    def wait_registered(self, resource: str, count: int = 1, timeout: float = 10.0) -> Registration:
        """Wait for ``count`` successful registrations of ``resource``; return the latest."""

        def registered() -> Registration | None:
            with self._lock:
                ok = [r for r in self._registrations if r.resource == resource and r.ok]
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
