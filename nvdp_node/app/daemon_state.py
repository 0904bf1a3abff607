"""What the daemon knows, gathered on the loop: the metrics snapshot and ``/run/nvdp/state.json``.

The publisher (``nvdp_node.app.publish``) calls :func:`take_snapshot` on the
event loop after every change, hands the snapshot to the
:class:`~nvdp_node.app.metrics.Observer` (gauges) and writes
:func:`state_document` of it to the state file that ``nvdp status``
(``nvdp_node.app.status_cli``) prints. The headline is the supervisor's own
``STATUS=`` line (``nvdp_node.app.status``), so the two never disagree.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from nvdp_node import __version__
from nvdp_node.app.metrics import DeviceFacts, GpuEvents, Observer, ResourceFacts, Snapshot
from nvdp_node.domain.devices import Health

if TYPE_CHECKING:
    from nvdp_node.app.supervisor import Supervisor

STATE_VERSION = 1
Holders = Mapping[tuple[str, str], tuple[str, str, str]]  # (resource, device id) → (namespace, pod, container)


def _at(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def _reason(device_id: str, gpu_uuid: str, held: Mapping[str, str], events: Mapping[str, GpuEvents],
            errors: Mapping[str, str]) -> str:
    if device_id in held:
        return f"held by pods under another resource name ({held[device_id]})"
    e = events.get(gpu_uuid, GpuEvents())
    if e.lost_at is not None:
        return f"GPU lost at {_at(e.lost_at)}"
    if e.last_xid is not None and e.last_xid_at is not None:
        return f"XID {e.last_xid} at {_at(e.last_xid_at)}"
    return errors.get(gpu_uuid) or "unhealthy"


def take_snapshot(supervisor: Supervisor, observer: Observer, holders: Holders, previous: Snapshot,
                  now: float) -> Snapshot:
    """The state now; a resource keeps its ``since`` while its registration state stays the same."""
    before = {r.resource: r for r in previous.resources}
    events = observer.gpu_events()
    inventory = supervisor.inventory
    errors = {g.uuid: f"NVML: {g.error}" for g in inventory.gpus if g.error}
    resources, devices = [], []
    for plugin in supervisor.plugins.values():
        name, state = plugin.resource_name, plugin.state
        reg = "serving-failed" if not plugin.serving else str(plugin.registrar.state.value)
        old = before.get(name)
        since = old.since if old is not None and old.state == reg else now
        resources.append(ResourceFacts(name, len(state.devices), state.healthy_count(), plugin.serving,
                                       plugin.registered, reg, since))
        for device_id, device in state.devices.by_id.items():
            healthy = state.health_of(device_id) is Health.HEALTHY
            reason = "" if healthy else _reason(device_id, device.gpu_uuid, state.held, events, errors)
            devices.append(DeviceFacts(name, device_id, device.gpu_uuid, device.index, device.model, healthy,
                                       reason, holders.get((name, device_id))))
    return Snapshot(
        resources=tuple(resources), devices=tuple(devices),
        gpus=tuple((g.uuid, str(g.index), g.name) for g in inventory.gpus),
        events=tuple(sorted(events.items())),
        kubelet_socket_present=supervisor.settings.kubelet_socket.exists(),
        driver=inventory.driver_version, nvml=inventory.nvml_version, cuda=inventory.cuda_driver_version or "",
    )


def state_document(snapshot: Snapshot, supervisor: Supervisor, notes: Mapping[str, str], now: float,
                   last_reload: Mapping[str, Any] | None) -> dict[str, Any]:
    """The JSON ``nvdp status`` reads (``version`` 1; keys are only ever added)."""
    return {
        "version": STATE_VERSION,
        "nvdp_version": __version__,
        "pid": os.getpid(),
        "updated": now,
        "status": supervisor.status_text(),
        "serving": all(r.serving for r in snapshot.resources),
        "kubelet_socket": str(supervisor.settings.kubelet_socket),
        "kubelet_socket_present": snapshot.kubelet_socket_present,
        "last_reload": dict(last_reload) if last_reload else None,
        "resources": [asdict(r) for r in snapshot.resources],
        "devices": [{**asdict(d), "holder": "/".join(d.holder) if d.holder else None} for d in snapshot.devices],
        "notes": dict(notes),
    }
