"""The one-line ``STATUS=`` text systemd shows for nvdp (``systemctl status nvdp``).

Pure: the supervisor passes what it knows (its resources, the inventory, a
failed reload) and sends the result with every notify. The first words say
what an operator must know first: whether GPUs are served and registered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceView:
    """What the status line needs of one resource."""

    resource_name: str
    socket_path: str
    devices: int
    healthy: int
    held: int
    serving: bool
    registered: bool
    error: str | None
    claims_error: str | None


def status_line(
    resources: Sequence[ResourceView],
    *,
    found: int,
    expected: int,
    kubelet_socket_present: bool,
    kubelet_socket: str,
    reload_error: str | None = None,
    plan_errors: Sequence[str] = (),
) -> str:
    head = f"Reload failed: {reload_error} (keeping previous config); " if reload_error else ""
    tail = "".join(f"; {problem}" for problem in plan_errors)
    if not resources:
        if plan_errors:
            return head + "Serving nothing" + tail
        if expected:
            return head + (f"0 of {expected} GPUs could be identified; nothing registered with kubelet "
                           "(see `journalctl -u nvdp` and `nvdp devices`)")
        return head + "No GPUs found; nothing registered with kubelet (see `nvdp check`)"
    if len(resources) == 1:
        return head + _one(resources[0], found, expected, kubelet_socket_present, kubelet_socket) + tail
    return head + _many(resources, kubelet_socket_present, kubelet_socket) + tail


def _many(resources: Sequence[ResourceView], kubelet_present: bool, kubelet_socket: str) -> str:
    """Several resources (MIG mixed, per-model names): counts per resource, then what is not right."""
    counts = []
    for r in resources:
        count = f"{r.devices} {r.resource_name}"
        notes = _notes(r)
        if notes:
            count += f" ({', '.join(notes)})"
        counts.append(count)
    text = "Serving " + ", ".join(counts)
    failing = [r for r in resources if not r.serving]
    waiting = [r for r in resources if r.serving and not r.registered]
    if not failing and not waiting:
        text += ", registered with kubelet"
    elif not kubelet_present:
        text += f"; waiting for kubelet socket {kubelet_socket}"
    for r in failing:
        text += f"; cannot serve {r.resource_name}: {r.error or 'starting'}"
    if kubelet_present:
        for r in waiting:
            text += f"; {r.resource_name}: " + (f"registration failed: {r.error}; retrying" if r.error
                                                else "registering with kubelet")
    claims = next((r.claims_error for r in resources if r.claims_error), None)
    if claims:
        text += f"; PodResources unreachable ({claims})"
    return text


def _one(r: ResourceView, found: int, expected: int, kubelet_present: bool, kubelet_socket: str) -> str:
    if not r.serving:
        return f"Cannot serve {r.resource_name} on {r.socket_path}: {r.error or 'starting'}"
    what = f"{r.devices} GPU{'s' if r.devices != 1 else ''}"
    if expected > found:
        what = f"{r.devices} of {r.devices + expected - found} GPUs ({expected - found} not identified)"
    notes = _notes(r)
    if notes:
        what += f" ({', '.join(notes)})"
    text = f"Serving {what} as {r.resource_name}"
    if r.registered:
        text += ", registered with kubelet"
    elif not kubelet_present:
        text += f"; waiting for kubelet socket {kubelet_socket}"
    elif r.error:
        text += f"; registration failed: {r.error}; retrying"
    else:
        text += "; registering with kubelet"
    if r.claims_error:
        text += f"; PodResources unreachable ({r.claims_error})"
    return text


def _notes(r: ResourceView) -> list[str]:
    """Devices not on offer, and why: held under another name (PodResources) or unhealthy."""
    notes = []
    if r.held:
        notes.append(f"{r.held} held by pods under another resource name")
    if r.devices - r.healthy - r.held > 0:
        notes.append(f"{r.devices - r.healthy - r.held} unhealthy")
    return notes
