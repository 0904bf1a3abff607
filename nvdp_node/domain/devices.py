"""The node's GPUs and the devices nvdp advertises for them.

Pure data: built by the NVML adapter (``nvdp_node.adapters.nvml``), read by the
gRPC servicer, the allocation functions and the CLI. Nothing here talks to
NVML, gRPC or the filesystem, so every rule about devices is testable on a
machine without a GPU.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from nvdp_node.domain.topology import LinkTable


class Health(enum.StrEnum):
    """The two health strings kubelet understands; anything else counts as unhealthy."""

    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"


@dataclass(frozen=True)
class MigDevice:
    """One MIG device (a compute instance inside a GPU instance) of a MIG-enabled GPU.

    ``index`` is its slot on the parent (``nvmlDeviceGetMigDeviceHandleByIndex``),
    which upstream's ``index`` device-id strategy writes as ``<gpu>:<index>``.
    ``profile`` is the profile string resource patterns match ("1g.10gb",
    "1g.10gb+me", "1c.2g.20gb"; see ``nvdp_node.domain.mig``). ``cap_minors``
    are the minors of the GPU instance's and the compute instance's access
    capabilities (``/dev/nvidia-caps/nvidia-cap<minor>``), empty when unknown.
    """

    index: int
    uuid: str
    profile: str
    gpu_instance: int
    compute_instance: int
    memory_total: int
    cap_minors: tuple[int, ...] = ()


@dataclass(frozen=True)
class Gpu:
    """One physical GPU as NVML reports it.

    ``error`` is set when NVML identified the GPU (it has a UUID) but failed
    a query nvdp needs, or said the GPU is lost: the GPU is still listed, so
    its device can be advertised Unhealthy instead of vanishing. ``minor`` is
    None when that query failed (then there is no ``/dev/nvidia<minor>``).
    ``mig_devices`` are listed only for a GPU whose current MIG mode is on.
    """

    index: int
    uuid: str
    name: str
    minor: int | None
    pci_bus_id: str
    memory_total: int
    numa_node: int | None = None
    compute_capability: str | None = None
    mig_enabled: bool = False
    error: str | None = None
    mig_devices: tuple[MigDevice, ...] = ()


@dataclass(frozen=True)
class Device:
    """One schedulable unit advertised to kubelet: a whole GPU or one MIG device.

    ``id`` is what kubelet sees and hands back in Allocate (a GPU's or MIG
    device's UUID); ``index`` is what the ``index`` device-id strategy uses
    (the NVML index, ``<gpu>:<mig>`` for a MIG device); ``gpu_uuid`` is the
    physical GPU (a MIG device's parent); ``dev_paths`` are the device nodes a
    container needs for this device. ``gpu_instance``/``compute_instance``
    are set for MIG devices only. ``model`` is what resource patterns match:
    the GPU's product name, or the MIG device's profile. ``replica_of`` is
    set on a shared replica only (``nvdp_node.domain.sharing``): the id of
    the device it was made from, whose index, GPU, NUMA node, device nodes
    and MIG instance it keeps; its own id is ``<replica_of>::<n>``.
    """

    id: str
    index: str
    gpu_uuid: str
    numa_node: int | None
    dev_paths: tuple[str, ...] = ()
    gpu_instance: int | None = None
    compute_instance: int | None = None
    model: str = ""
    replica_of: str | None = None


@dataclass(frozen=True)
class NodeInventory:
    """Everything discovery learnt about the node, in NVML index order.

    ``skipped`` are display GPUs left out on purpose (``"2:DGX Display"``);
    ``unidentified`` are GPUs NVML counted but could not identify (no handle
    or no UUID), so they cannot be advertised at all (``"index 3: GPU is
    lost"``). ``expected`` is how many GPUs the node should advertise: NVML's
    count minus the skipped ones; left at -1 it is taken to be
    ``len(gpus) + len(unidentified)``. ``links`` says how the GPUs are
    linked (empty when unknown).
    """

    driver_version: str
    cuda_driver_version: str | None
    gpus: tuple[Gpu, ...]
    skipped: tuple[str, ...] = field(default=())
    unidentified: tuple[str, ...] = field(default=())
    expected: int = -1
    links: LinkTable = field(default_factory=LinkTable)
    nvml_version: str = ""

    def __post_init__(self) -> None:
        found = len(self.gpus) + len(self.unidentified)
        if self.expected < 0:
            object.__setattr__(self, "expected", found)  # frozen: the one place the default is resolved
        elif self.expected < found:
            raise ValueError(f"expected {self.expected} GPU(s) but {found} were found or unidentified")

    def unhealthy_at_start(self, devices: Iterable[Device] | None = None) -> tuple[str, ...]:
        """Ids of ``devices`` (default: :meth:`devices`) whose GPU answered discovery with an error.

        A MIG device counts through its parent, so an error in any MIG query
        of a GPU makes all of that GPU's devices start Unhealthy.
        """
        errored = {g.uuid for g in self.gpus if g.error is not None}
        return tuple(d.id for d in (self.devices() if devices is None else devices) if d.gpu_uuid in errored)

    def devices(self) -> tuple[Device, ...]:
        """Whole-GPU devices (what ``mig_strategy = "none"`` serves), sorted by id."""
        return tuple(sorted((gpu_device(g) for g in self.gpus), key=lambda d: d.id))


def gpu_device(gpu: Gpu) -> Device:
    """The device advertised for a whole GPU."""
    return Device(
        id=gpu.uuid,
        index=str(gpu.index),
        gpu_uuid=gpu.uuid,
        numa_node=gpu.numa_node,
        dev_paths=() if gpu.minor is None else (f"/dev/nvidia{gpu.minor}",),
        model=gpu.name,
    )


def mig_device(gpu: Gpu, mig: MigDevice) -> Device:
    """The device advertised for one MIG device of ``gpu``: the parent's NUMA node and device node.

    Its nodes are the parent's ``/dev/nvidia<minor>``, then the GPU
    instance's and the compute instance's capability nodes, in upstream's order.
    """
    parent = () if gpu.minor is None else (f"/dev/nvidia{gpu.minor}",)
    caps = tuple(f"/dev/nvidia-caps/nvidia-cap{minor}" for minor in mig.cap_minors)
    return Device(
        id=mig.uuid,
        index=f"{gpu.index}:{mig.index}",
        gpu_uuid=gpu.uuid,
        numa_node=gpu.numa_node,
        dev_paths=parent + caps,
        gpu_instance=mig.gpu_instance,
        compute_instance=mig.compute_instance,
        model=mig.profile,
    )


class DeviceSet:
    """Devices of one resource plus their current health.

    The servicer and the health worker share one instance. Health only changes
    through :meth:`set_health`, which reports whether anything changed so the
    caller knows when to push a new ListAndWatch message. ``links`` is the
    node's link table, which the preferred allocation scores GPUs by.
    """

    def __init__(self, devices: Iterable[Device], links: LinkTable | None = None) -> None:
        self.links = LinkTable() if links is None else links
        self._devices: dict[str, Device] = {d.id: d for d in sorted(devices, key=lambda d: d.id)}
        self._health: dict[str, Health] = {d: Health.HEALTHY for d in self._devices}

    def __len__(self) -> int:
        return len(self._devices)

    @property
    def by_id(self) -> Mapping[str, Device]:
        return self._devices

    def health(self, device_id: str) -> Health:
        return self._health[device_id]

    def snapshot(self) -> tuple[tuple[Device, Health], ...]:
        """The full list in id order, as ListAndWatch sends it."""
        return tuple((d, self._health[i]) for i, d in self._devices.items())

    def healthy_count(self) -> int:
        return sum(1 for h in self._health.values() if h is Health.HEALTHY)

    def set_health(self, device_ids: Iterable[str], health: Health) -> list[str]:
        """Set health for known ids; return the ids whose health actually changed."""
        changed = []
        for device_id in device_ids:
            if device_id in self._health and self._health[device_id] is not health:
                self._health[device_id] = health
                changed.append(device_id)
        return changed
