"""What NVML found: said in the log once per enumeration, and compared between enumerations.

Called by the supervisor at start, on reload and by its MIG layout check;
which resources are served from an inventory is
:func:`~nvdp_node.app.resource_plugin.plan_resources`'s decision.
"""

from __future__ import annotations

import logging

from nvdp_node.adapters.servicer import DeviceState
from nvdp_node.domain.devices import Health, NodeInventory

log = logging.getLogger(__name__)


def describe_inventory(inventory: NodeInventory) -> None:
    log.info(
        "found %d GPU(s), driver %s: %s",
        len(inventory.gpus),
        inventory.driver_version or "unknown",
        ", ".join(f"{g.index}:{g.name}:{g.uuid}" for g in inventory.gpus) or "none",
    )
    for gpu in inventory.gpus:
        if gpu.error:
            log.warning("GPU %d (%s) is advertised Unhealthy: %s", gpu.index, gpu.uuid, gpu.error)
        # MIG-enabled GPUs advertised whole (strategy none) are the planner's warning.
    # GPUs NVML cannot identify were logged by discovery; they count in STATUS= ("7 of 8").
    if not inventory.gpus:
        log.warning("No devices found. Waiting indefinitely (nothing is registered with kubelet).")


Layout = tuple[tuple[str, bool, tuple[tuple[str, str, int, int], ...]], ...]


def mig_layout(inventory: NodeInventory) -> Layout:
    """Per GPU: its UUID, MIG mode, and MIG devices (uuid, profile, GI, CI) — what a re-layout changes."""
    return tuple(
        (g.uuid, g.mig_enabled,
         tuple(sorted((m.uuid, m.profile, m.gpu_instance, m.compute_instance) for m in g.mig_devices)))
        for g in inventory.gpus
    )


def describe_layout_change(before: Layout, after: Layout) -> str:
    old = {uuid: (mode, devices) for uuid, mode, devices in before}
    changes = []
    for uuid, mode, devices in after:
        if uuid not in old:
            changes.append(f"{uuid} appeared")
        elif old[uuid] != (mode, devices):
            was_mode, was = old[uuid]
            if was_mode != mode:
                changes.append(f"{uuid} MIG mode {'on' if mode else 'off'}")
            else:
                changes.append(f"{uuid} MIG devices {len(was)} → {len(devices)}: "
                               + ", ".join(sorted({p for _, p, _, _ in devices})))
    gone = set(old) - {uuid for uuid, _, _ in after}
    changes.extend(f"{uuid} gone" for uuid in sorted(gone))
    return "; ".join(changes) or "no visible change"


def carry_health(old: DeviceState, new: DeviceState) -> None:
    """Devices present before and after keep their health (a re-layout is not a re-enumeration)."""
    unhealthy = [i for i in new.devices.by_id if i in old.devices.by_id
                 and old.devices.health(i) is Health.UNHEALTHY]
    if unhealthy:
        new.devices.set_health(unhealthy, Health.UNHEALTHY)
