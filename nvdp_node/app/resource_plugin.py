"""One advertised resource: its server, its registration, and their repair.

The supervisor owns one :class:`ResourcePlugin` per resource and calls
:meth:`ResourcePlugin.reconcile` whenever something may have changed. The
method is level-triggered: it compares what is (our socket's inode,
kubelet.sock's inode, whether kubelet still streams from us) with what was
registered, and serves and/or registers again when they differ. Missed or
duplicated wake-ups therefore cannot leave the node without capacity.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nvdp_node.adapters.plugin_server import PluginServer
from nvdp_node.adapters.registration import RegistrationError, register
from nvdp_node.adapters.servicer import DevicePluginServicer, DeviceState
from nvdp_node.domain.errors import TemporaryError

log = logging.getLogger(__name__)

_SERVE = "serve"  # back-off key for serve failures; Register failures use kubelet.sock's identity


def socket_name(resource_name: str) -> str:
    """``nvidia.com/gpu`` → ``nvidia-gpu.sock`` (upstream's naming); other domains keep theirs.

    ``example.com/gpu`` → ``nvidia-example.com-gpu.sock``, so two resource names
    never share a socket (a reload from one to the other serves both at once).
    """
    domain, _, name = resource_name.rpartition("/")
    return f"nvidia-{name}.sock" if domain == "nvidia.com" else f"nvidia-{domain}-{name}.sock"


@dataclass
class Backoff:
    """Capped exponential back-off, reset when kubelet's socket changes identity."""

    initial: float = 1.0
    cap: float = 30.0
    delay: float = 0.0
    next_at: float = 0.0
    key: object = None

    def ready(self, now: float, key: object) -> bool:
        return key != self.key or now >= self.next_at

    def failed(self, now: float, key: object) -> float:
        self.delay = self.initial if key != self.key or not self.delay else min(self.delay * 2, self.cap)
        self.key, self.next_at = key, now + self.delay
        return self.delay

    def reset(self) -> None:
        self.delay, self.next_at, self.key = 0.0, 0.0, None


class ResourcePlugin:
    """Serve one resource on ``<socket_dir>/nvidia-<name>.sock`` and keep it registered."""

    def __init__(
        self,
        state: DeviceState,
        *,
        socket_dir: Path,
        wake: Callable[[str], None],
    ) -> None:
        self.state = state
        self.resource_name = state.policy.resource_name
        self.socket_path = socket_dir / socket_name(self.resource_name)
        self._wake = wake
        self._server: PluginServer | None = None
        self._generation = 0
        self._stream_lost = False
        self._stopping = False
        self.registered_with: object = None  # identity of the kubelet.sock we registered with
        self.registrations = 0
        self.backoff = Backoff()
        self.last_error: str | None = None

    @property
    def serving(self) -> bool:
        return self._server is not None and self._server.intact()

    @property
    def registered(self) -> bool:
        return self.registered_with is not None

    async def reconcile(self, kubelet_socket: Path, kubelet_inode: object, now: float) -> None:
        """Bring serving and registration in line with the world; failures back off and retry."""
        if not self.serving:
            if not self.backoff.ready(now, _SERVE):
                return
            if self._server is not None:
                log.warning("%s: socket %s is gone; serving again", self.resource_name, self.socket_path)
                await self._server.stop()
                self._server = None
            self.registered_with = None
            server = PluginServer(
                self.socket_path,
                DevicePluginServicer(
                    self.state, generation=lambda: self._generation, on_stream_lost=self._stream_ended
                ),
            )
            try:
                await server.start()
            except TemporaryError as err:  # e.g. the directory is missing or not writable
                delay = self.backoff.failed(now, _SERVE)
                self.last_error = str(err)
                log.warning("%s; retrying in %.0f s", err, delay)
                return
            self._server = server
            self.backoff.reset()
        if self._stream_lost:
            self._stream_lost = False
            self.registered_with = None
        if kubelet_inode is None or kubelet_inode == self.registered_with:
            return
        if not self.backoff.ready(now, kubelet_inode):
            return
        self._generation += 1
        try:
            await register(kubelet_socket, endpoint=self.socket_path.name, resource_name=self.resource_name)
        except RegistrationError as err:
            delay = self.backoff.failed(now, kubelet_inode)
            self.last_error = str(err)
            log.warning("%s; retrying in %.0f s", err, delay)
            return
        self.registered_with = kubelet_inode
        self.registrations += 1
        self.backoff.reset()
        self.last_error = None
        log.info("registered %s with kubelet (%s)", self.resource_name, self.socket_path.name)

    async def self_check(self) -> bool:
        return self._server is not None and await self._server.answers()

    def retry_in(self, now: float) -> float | None:
        """Seconds until a back-off (of serving or of Register) expires, if one is pending."""
        if (self.serving and self.registered) or not self.backoff.delay:
            return None
        return max(0.0, self.backoff.next_at - now)

    def _stream_ended(self, generation: int) -> None:
        # A stream from an older registration ends when kubelet replaces it: expected.
        if generation == self._generation and not self._stopping:
            self._stream_lost = True
            self._wake(f"{self.resource_name}: ListAndWatch stream ended")

    async def stop(self) -> None:
        self._stopping = True
        if self._server is not None:
            await self._server.stop()
            self._server = None
        self.registered_with = None

