"""When a resource registers with kubelet, and when it waits: the pure state machine.

:class:`~nvdp_node.app.resource_plugin.ResourcePlugin` asks :meth:`Registrar.due`
on every pass and reports what happened (:meth:`started`, :meth:`succeeded`,
:meth:`failed`, :meth:`lost`). Time is passed in (``now``), never read, so the
back-off rules are tested with fake time in milliseconds.

States: ``idle`` (never registered, or the registration was lost) →
``registering`` (a Register is in flight) → ``registered`` (with one identity
of kubelet.sock) or ``backing-off`` (1 s, 2 s, … 30 s; a new kubelet.sock
ends the wait at once and starts again from 1 s).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 30.0


class RegState(enum.StrEnum):
    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    BACKING_OFF = "backing-off"


@dataclass
class Backoff:
    """Capped exponential back-off for one kind of attempt, restarted when ``key`` changes."""

    initial: float = INITIAL_BACKOFF
    cap: float = MAX_BACKOFF
    delay: float = 0.0
    next_at: float = 0.0
    key: object = None

    def ready(self, now: float, key: object = None) -> bool:
        return not self.delay or key != self.key or now >= self.next_at

    def failed(self, now: float, key: object = None, *, at_least: float = 0.0) -> float:
        """Record a failure; returns the delay before the next attempt."""
        if key != self.key or not self.delay:
            delay = self.initial
        else:
            delay = min(self.delay * 2, self.cap)
        self.delay = max(delay, min(at_least, self.cap))
        self.key, self.next_at = key, now + self.delay
        return self.delay

    def reset(self) -> None:
        self.delay, self.next_at, self.key = 0.0, 0.0, None

    def retry_in(self, now: float) -> float | None:
        return max(0.0, self.next_at - now) if self.delay else None


@dataclass
class Registrar:
    """Registration state of one resource against kubelet.sock identities."""

    state: RegState = RegState.IDLE
    registered_with: object = None
    attempt_with: object = None
    last_error: str | None = None
    registrations: int = 0
    failures: int = 0

    def __post_init__(self) -> None:
        self.backoff = Backoff()

    def due(self, now: float, kubelet: object | None, *, serving: bool) -> bool:
        """Whether a Register should start now (kubelet's socket ``kubelet`` None: not there)."""
        if not serving or kubelet is None or self.state is RegState.REGISTERING:
            return False
        if self.state is RegState.REGISTERED:
            return kubelet != self.registered_with
        return self.backoff.ready(now, kubelet)

    def started(self, kubelet: object) -> None:
        self.state, self.attempt_with = RegState.REGISTERING, kubelet

    def succeeded(self) -> None:
        self.state, self.registered_with = RegState.REGISTERED, self.attempt_with
        self.registrations += 1
        self.last_error = None
        self.backoff.reset()

    def failed(self, now: float, error: str, *, at_least: float = 0.0) -> float:
        """A Register failed; returns the back-off delay (at least ``at_least``, the error's own hint)."""
        self.state, self.last_error = RegState.BACKING_OFF, error
        self.failures += 1
        return self.backoff.failed(now, self.attempt_with, at_least=at_least)

    def lost(self) -> None:
        """Kubelet dropped us (stream ended, socket re-served): register again, without waiting."""
        if self.state is RegState.REGISTERED:
            self.state, self.registered_with = RegState.IDLE, None

    @property
    def registered(self) -> bool:
        return self.state is RegState.REGISTERED

    def retry_in(self, now: float) -> float | None:
        """Seconds until a back-off ends, if one is pending."""
        return self.backoff.retry_in(now) if self.state is RegState.BACKING_OFF else None
