"""From what NVML found to the resources nvdp serves.

Called by the supervisor after every enumeration (start and reload):
:func:`describe_inventory` logs what was found, :func:`plan_resources` says
which resources to run with which devices. Today a node has one resource
(``resource_name``, whole GPUs); per-model names and MIG add entries here.
"""

from __future__ import annotations

import logging

from nvdp_node.adapters.servicer import DeviceState
from nvdp_node.app.settings import ServeSettings
from nvdp_node.domain.devices import DeviceSet, Health, NodeInventory

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
        if gpu.mig_enabled:
            log.warning(
                "GPU %d (%s) has MIG enabled, but nvdp advertises whole GPUs only (MIG strategies are "
                "not supported yet): containers given this GPU will see no usable CUDA device",
                gpu.index, gpu.uuid,
            )
    # GPUs NVML cannot identify were logged by discovery; they count in STATUS= ("7 of 8").
    if not inventory.gpus:
        log.warning("No devices found. Waiting indefinitely (nothing is registered with kubelet).")


def plan_resources(settings: ServeSettings, inventory: NodeInventory) -> dict[object, tuple[str, DeviceState]]:
    """Resource key → (resource name, its fresh device state); empty when there is nothing to serve."""
    devices = inventory.devices()
    if not devices:
        return {}
    state = DeviceState(DeviceSet(devices), settings.policy)
    unhealthy = inventory.unhealthy_at_start()
    if unhealthy:
        state.devices.set_health(unhealthy, Health.UNHEALTHY)
    return {settings.registration_key(): (settings.resource_name, state)}
