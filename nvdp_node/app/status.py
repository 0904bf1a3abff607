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
) -> str:
    head = f"Reload failed: {reload_error} (keeping previous config); " if reload_error else ""
    if not resources:
        if expected:
            return head + (f"0 of {expected} GPUs could be identified; nothing registered with kubelet "
                           "(see `journalctl -u nvdp` and `nvdp devices`)")
        return head + "No GPUs found; nothing registered with kubelet (see `nvdp check`)"
    return head + "; ".join(_one(r, found, expected, kubelet_socket_present, kubelet_socket) for r in resources)


def _one(r: ResourceView, found: int, expected: int, kubelet_present: bool, kubelet_socket: str) -> str:
    if not r.serving:
        return f"Cannot serve {r.resource_name} on {r.socket_path}: {r.error or 'starting'}"
    what = f"{r.devices} GPU{'s' if r.devices != 1 else ''}"
    if expected > found:
        what = f"{r.devices} of {r.devices + expected - found} GPUs ({expected - found} not identified)"
    notes = []
    if r.held:
        notes.append(f"{r.held} held by pods under another resource name")
    if r.devices - r.healthy - r.held > 0:
        notes.append(f"{r.devices - r.healthy - r.held} unhealthy")
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
