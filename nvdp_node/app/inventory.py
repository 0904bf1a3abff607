"""What NVML found, said in the log once per enumeration (start and reload).

Called by the supervisor; which resources are served from it is
:func:`~nvdp_node.app.resource_plugin.plan_resources`'s decision.
"""

from __future__ import annotations

import logging

from nvdp_node.domain.devices import NodeInventory

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
