"""GPU sharing: each device of a shared resource advertised as N replicas (time-slicing or MPS).

Pure. The config layer builds a :class:`Sharing` from ``[sharing.time_slicing]``
or ``[sharing.mps]`` (``nvdp_node.config.sharing_from_config``); the app
applies it to the planner's resources (``ResourcePlan.resources``) with
:func:`plan_sharing` (or :func:`replicate` when it needs only the devices)
before it serves them, and ``nvdp devices`` prints the result. Allocate
turns replicas back into their devices (``nvdp_node.domain.allocation``).

A replica is its parent device under the id ``<parent id>::<n>``
(``n = 0 … replicas-1``, upstream's ``AnnotatedID``) and with everything
else of the parent: index, GPU UUID, NUMA node, device nodes, MIG instance.
Keeping the GPU UUID is what makes an XID on a GPU mark all of its replicas
unhealthy together (``nvdp_node.domain.health_policy`` matches by GPU UUID).

Upstream refuses to start on the problems below; nvdp reports them
(:attr:`SharingPlan.errors`) and leaves only the concerned resource out:
a renamed resource whose name is already advertised or is no valid
resource name; MPS over MIG devices; more MPS replicas than the GPU
generation allows. A shared name the node does not advertise is a warning,
as one config may serve nodes with different GPUs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal, get_args

from nvdp_node.domain.devices import Device
from nvdp_node.domain.resource_names import validate_extended_resource_name
from nvdp_node.domain.resources import DEFAULT_DOMAIN

SharingKind = Literal["time-slicing", "mps"]
SHARING_KINDS: tuple[str, ...] = get_args(SharingKind)
REPLICA_SEPARATOR = "::"
SHARED_SUFFIX = ".shared"

# MPS serves at most 48 clients per GPU from Volta (compute capability 7.0)
# on and 16 before. Upstream (cmd/mps-control-daemon/mps/device.go) tests
# ">= 7.5" and so gives a Volta V100 only 16; nvdp uses Volta's own 7.0.
MPS_MAX_CLIENTS = 48
MPS_MAX_CLIENTS_BEFORE_VOLTA = 16
VOLTA = (7, 0)

# Upstream's texts (internal/plugin/mps.go, cmd/mps-control-daemon/mps), kept word for word.
MPS_ON_MIG = "sharing using MPS is not supported for MIG devices"


def mps_replicas_exceeded(replicas: int, limit: int) -> str:
    return f"invalid MPS configuration: invalid device maximum allowed replicas exceeded: {replicas} > {limit}"


@dataclass(frozen=True)
class SharedResource:
    """One ``[[sharing.<kind>.resources]]`` entry: a resource and how many replicas each device becomes.

    ``rename`` None follows the sharing's ``rename_by_default``; True
    advertises the replicas as ``<name>.shared``. A ``name`` without a
    domain gets ``nvidia.com/``, as resource patterns do.
    """

    name: str
    replicas: int
    rename: bool | None = None

    def __post_init__(self) -> None:
        if "/" not in self.name:
            object.__setattr__(self, "name", f"{DEFAULT_DOMAIN}/{self.name}")  # frozen: normalised once
        if self.replicas < 2:
            raise ValueError(f"{self.name}: number of replicas must be >= 2, got {self.replicas}")


@dataclass(frozen=True)
class Sharing:
    """How a node shares its GPUs: one kind for every listed resource, as upstream allows."""

    kind: SharingKind
    resources: tuple[SharedResource, ...]
    rename_by_default: bool = False
    fail_requests_greater_than_one: bool = False

    def __post_init__(self) -> None:
        if self.kind not in SHARING_KINDS:
            raise ValueError(f"unknown sharing kind {self.kind!r}; expected one of {', '.join(SHARING_KINDS)}")
        if not self.resources:
            raise ValueError("no resources specified")
        names = [r.name for r in self.resources]
        if twice := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"each resource may be shared once; listed more than once: {', '.join(twice)}")

    def advertised_name(self, resource: SharedResource) -> str:
        """The name the replicas of ``resource`` are advertised under."""
        rename = self.rename_by_default if resource.rename is None else resource.rename
        return resource.name + SHARED_SUFFIX if rename else resource.name


@dataclass(frozen=True)
class SharingPlan:
    """Resource name → its devices after sharing (sorted by id), plus what went wrong.

    ``replicas`` maps each advertised name that carries replicas to the
    replicas per device (MPS limits and thread percentages are computed
    from it). ``errors`` say which resources were left out and why.
    """

    resources: dict[str, tuple[Device, ...]]
    replicas: dict[str, int] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


def replica_id(device_id: str, n: int) -> str:
    return f"{device_id}{REPLICA_SEPARATOR}{n}"


def parent_id(device_id: str) -> str:
    """``GPU-a::3`` → ``GPU-a``; an id without ``::`` is its own parent (upstream's ``GetID``)."""
    return device_id.split(REPLICA_SEPARATOR, 1)[0]


def replicas_of(device: Device, replicas: int) -> tuple[Device, ...]:
    """``device`` as ``replicas`` devices ``<id>::0 …``, each keeping everything but its id."""
    return tuple(replace(device, id=replica_id(device.id, n), replica_of=device.id) for n in range(replicas))


def mps_max_replicas(compute_capability: str | None) -> int | None:
    """How many MPS clients a GPU of ``compute_capability`` ("8.0", "v7.5") serves; None when unknown."""
    match = re.fullmatch(r"v?(\d+)\.(\d+)", compute_capability or "")
    if match is None:
        return None
    major_minor = (int(match.group(1)), int(match.group(2)))
    return MPS_MAX_CLIENTS if major_minor >= VOLTA else MPS_MAX_CLIENTS_BEFORE_VOLTA


def replicate(resources: Mapping[str, tuple[Device, ...]], sharing: Sharing | None) -> dict[str, tuple[Device, ...]]:
    """The devices each resource advertises under ``sharing``; see :func:`plan_sharing`."""
    return plan_sharing(resources, sharing).resources


def plan_sharing(
    resources: Mapping[str, tuple[Device, ...]],
    sharing: Sharing | None,
    *,
    compute_capabilities: Mapping[str, str | None] | None = None,
) -> SharingPlan:
    """Replace each shared resource's devices by their replicas; never raises for what the node looks like.

    ``compute_capabilities`` (GPU UUID → "major.minor") lets MPS replica
    counts be checked against the GPU generation; a GPU missing from it is
    not checked (its discovery failed, and it starts Unhealthy anyway).
    """
    if sharing is None:
        return SharingPlan(resources={name: tuple(resources[name]) for name in sorted(resources)})
    wanted = {r.name: r for r in sharing.resources}
    out: dict[str, tuple[Device, ...]] = {name: tuple(ds) for name, ds in resources.items() if name not in wanted}
    replicas: dict[str, int] = {}
    warnings: list[str] = []
    errors: list[str] = []
    label = "MPS" if sharing.kind == "mps" else "time-slicing"
    for shared in sorted(sharing.resources, key=lambda r: r.name):
        devices = tuple(resources.get(shared.name, ()))
        if not devices:
            warnings.append(f'{label} sharing names "{shared.name}", which this node does not advertise')
            continue
        target = sharing.advertised_name(shared)
        problem = validate_extended_resource_name(target) if target != shared.name else None
        if problem is None and target in out:
            problem = f'"{target}" is advertised already'
        if problem is None and sharing.kind == "mps":
            problem = _mps_problem(devices, shared.replicas, compute_capabilities or {})
        if problem is not None:
            errors.append(f'{label} sharing of "{shared.name}": {problem}; "{shared.name}" is not advertised')
            continue
        out[target] = tuple(r for d in devices for r in replicas_of(d, shared.replicas))
        replicas[target] = shared.replicas
    return SharingPlan(
        resources={name: tuple(sorted(out[name], key=lambda d: d.id)) for name in sorted(out)},
        replicas=replicas,
        warnings=tuple(warnings),
        errors=tuple(errors),
    )


def _mps_problem(devices: tuple[Device, ...], replicas: int, capabilities: Mapping[str, str | None]) -> str | None:
    if any(d.gpu_instance is not None for d in devices):
        return MPS_ON_MIG
    for gpu_uuid in sorted({d.gpu_uuid for d in devices}):
        limit = mps_max_replicas(capabilities.get(gpu_uuid))
        if limit is not None and replicas > limit:
            generation = "from Volta (7.0) on" if limit == MPS_MAX_CLIENTS else "before Volta (7.0)"
            return (
                f"{mps_replicas_exceeded(replicas, limit)} ({gpu_uuid} has compute capability "
                f"{capabilities[gpu_uuid]}; MPS serves at most {limit} clients per GPU {generation})"
            )
    return None
