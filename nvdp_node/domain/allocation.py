"""What a container gets for its devices, and which devices to prefer.

Pure functions over :class:`~nvdp_node.domain.devices.Device` maps, called by
the gRPC servicer for Allocate and GetPreferredAllocation. The response shapes
follow NVIDIA's device plugin byte for byte (see docs/architecture.md), so a
node can switch between nvdp and upstream without changing pods.
"""

from __future__ import annotations

import os.path
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from nvdp_node.domain.devices import Device

VISIBLE_DEVICES = "NVIDIA_VISIBLE_DEVICES"
VOLUME_MOUNT_DIR = "/var/run/nvidia-container-devices"


class InvalidAllocationError(ValueError):
    """Allocate asked for something this resource cannot give; the text is upstream's."""


SHOWN_ID_CHARS = 64


def shown_id(device_id: str) -> str:
    """A device id as error texts show it: whole if short, else cut (the id comes from the caller).

    Real ids (GPU UUIDs, MIG UUIDs, indices) are far shorter, so upstream's
    text is kept byte for byte; a 1 MB id would otherwise be logged whole and
    echoed into the gRPC status, whose size limit then turns the answer into
    RESOURCE_EXHAUSTED.
    """
    if len(device_id) <= SHOWN_ID_CHARS:
        return device_id
    size = len(device_id.encode("utf-8", "surrogatepass"))
    return f"{device_id[:SHOWN_ID_CHARS]}… ({size} bytes)"


@dataclass(frozen=True)
class AllocationPolicy:
    """How Allocate renders devices for the container runtime (config ``[plugin]``)."""

    resource_name: str = "nvidia.com/gpu"
    device_list_strategy: tuple[str, ...] = ("envvar",)
    device_id_strategy: str = "uuid"
    pass_device_specs: bool = False
    dev_root: str = "/"
    # Control nodes found on this host (/dev/nvidiactl, /dev/nvidia-uvm, ...):
    # upstream passes each one only if it exists, so the adapter stats them.
    control_device_paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class Mount:
    container_path: str
    host_path: str
    read_only: bool = False


@dataclass(frozen=True)
class DeviceSpec:
    container_path: str
    host_path: str
    permissions: str = "rw"


@dataclass(frozen=True)
class ContainerAllocation:
    envs: dict[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    device_specs: tuple[DeviceSpec, ...] = ()


def allocate_container(
    devices: Mapping[str, Device], requested: Sequence[str], policy: AllocationPolicy
) -> ContainerAllocation:
    """Render one container's allocation; raise :class:`InvalidAllocationError` on unknown ids.

    Ids are de-duplicated keeping request order (upstream since v0.18.0), and
    health is not checked: kubelet never hands out unhealthy devices, and a
    device that failed after admission must still be mountable for the pod that
    owns it.
    """
    ordered: list[Device] = []
    seen: set[str] = set()
    for device_id in requested:
        device = devices.get(device_id)
        if device is None:
            raise InvalidAllocationError(
                f'invalid allocation request for "{policy.resource_name}": '
                f"invalid request: unknown device: {shown_id(device_id)}"
            )
        if device_id not in seen:
            seen.add(device_id)
            ordered.append(device)

    ids = [d.index if policy.device_id_strategy == "index" else d.id for d in ordered]
    envs: dict[str, str] = {}
    mounts: list[Mount] = []
    if "envvar" in policy.device_list_strategy:
        envs[VISIBLE_DEVICES] = ",".join(ids)
    if "volume-mounts" in policy.device_list_strategy:
        # Overrides the envvar value, as upstream does when both are set.
        envs[VISIBLE_DEVICES] = VOLUME_MOUNT_DIR
        mounts = [Mount(container_path=f"{VOLUME_MOUNT_DIR}/{i}", host_path="/dev/null") for i in ids]

    specs: list[DeviceSpec] = []
    if policy.pass_device_specs:
        paths = list(policy.control_device_paths)
        for device in ordered:
            paths.extend(p for p in device.dev_paths if p not in paths)
        specs = [
            DeviceSpec(container_path=p, host_path=os.path.join(policy.dev_root, p.lstrip("/")))
            for p in paths
        ]
    return ContainerAllocation(envs=envs, mounts=tuple(mounts), device_specs=tuple(specs))


def preferred_allocation(
    devices: Mapping[str, Device],
    available: Sequence[str],
    must_include: Sequence[str],
    size: int,
) -> list[str]:
    """Pick ``size`` devices from ``available``, keeping ``must_include``, on as few NUMA nodes as possible.

    Never raises: kubelet fails the pod on any GetPreferredAllocation error and
    fills a short answer itself, so unknown ids are skipped and a best effort
    is always returned.
    """
    if size <= 0:
        return []
    required = _known_unique(devices, must_include)
    if len(required) >= size:
        return required[:size]
    candidates = [i for i in _known_unique(devices, available) if i not in required]
    need = size - len(required)

    groups: dict[int, list[str]] = {}
    for device_id in candidates:
        groups.setdefault(_numa_key(devices[device_id]), []).append(device_id)
    for members in groups.values():
        members.sort(key=lambda i: (_index_key(devices[i]), i))

    required_nodes = {_numa_key(devices[i]) for i in required}
    fitting = [n for n, members in groups.items() if len(members) >= need]
    if fitting:
        # Stay on the required devices' node if possible, else best fit: the
        # smallest node that fits, leaving larger nodes whole for larger pods.
        node = min(fitting, key=lambda n: (n not in required_nodes, len(groups[n]), n))
        return required + groups[node][:need]

    picked: list[str] = []
    for node in sorted(groups, key=lambda n: (n not in required_nodes, -len(groups[n]), n)):
        picked.extend(groups[node][: need - len(picked)])
        if len(picked) == need:
            break
    return required + picked


def _known_unique(devices: Mapping[str, Device], ids: Sequence[str]) -> list[str]:
    out: list[str] = []
    for device_id in ids:
        if device_id in devices and device_id not in out:
            out.append(device_id)
    return out


def _numa_key(device: Device) -> int:
    return device.numa_node if device.numa_node is not None else -1


def _index_key(device: Device) -> tuple[int, str]:
    head = device.index.split(":", 1)[0]
    return (int(head), device.index) if head.isdigit() else (1 << 30, device.index)
