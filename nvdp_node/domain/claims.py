"""Which of a resource's GPUs running pods still hold under another resource name.

Kubelet accounts devices per resource name. After a rename (``nvidia.com/gpu``
→ ``nvidia.com/h100``, by reload or by a restart with a new config) kubelet
would hand the GPUs that running pods got under the old name out again under
the new one. The resource owner therefore asks kubelet's PodResources API who
holds what, and advertises every GPU held under any *other* name as
Unhealthy until the pod is gone. Pure: the PodResources adapter builds the
:class:`PodDeviceAssignment` values, the resource owner applies the result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from nvdp_node.domain.devices import Device

# Sharing (replicas) names devices "<gpu uuid>::<n>"; the GPU is the part before.
REPLICA_SEPARATOR = "::"


@dataclass(frozen=True)
class PodDeviceAssignment:
    """One container's devices of one resource, as PodResources ``List`` reports them."""

    namespace: str
    pod: str
    container: str
    resource_name: str
    device_ids: tuple[str, ...]

    def owner(self) -> str:
        return f"{self.namespace}/{self.pod}/{self.container}"


def gpu_of(device_id: str) -> str:
    """The GPU a device id names: the id itself, or the part before a replica suffix."""
    return device_id.split(REPLICA_SEPARATOR, 1)[0]


def held_elsewhere(
    assignments: Iterable[PodDeviceAssignment],
    resource_name: str,
    devices: Mapping[str, Device],
) -> dict[str, str]:
    """Device id → who holds its GPU under another resource name, for ``devices`` of ``resource_name``."""
    by_gpu: dict[str, list[str]] = {}
    for device_id, device in devices.items():
        by_gpu.setdefault(device.gpu_uuid, []).append(device_id)
    held: dict[str, str] = {}
    for assignment in assignments:
        if assignment.resource_name == resource_name:
            continue
        for foreign_id in assignment.device_ids:
            for device_id in by_gpu.get(gpu_of(foreign_id), ()):
                held.setdefault(device_id, f"{assignment.resource_name} of {assignment.owner()}")
    return held
