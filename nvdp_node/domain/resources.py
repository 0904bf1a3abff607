"""Which devices each resource advertises: upstream's MIG strategies and resource patterns.

Pure. :func:`plan_devices` turns what discovery found (a
:class:`~nvdp_node.domain.devices.NodeInventory`) and the naming settings (a
:class:`ResourceNaming`, built by the config layer from ``plugin.mig_strategy``,
``plugin.resource_name`` and ``[[resources.gpus]]``/``[[resources.mig]]``)
into a :class:`ResourcePlan`. The supervisor serves one resource per entry of
the plan; ``nvdp devices`` prints it.

Upstream refuses to start on any of the errors below. nvdp reports them
(``ResourcePlan.errors``, with upstream's texts) and serves what stays
unambiguous, so that a re-layout in progress or one odd GPU never takes the
rest of the node away:

* a GPU matching no ``resources.gpus`` pattern, or a MIG device whose
  profile matches no ``resources.mig`` pattern, is left out alone;
* ``single`` with MIG devices of more than one profile advertises none of the
  MIG devices (a pod asking for one could get any size);
* ``single`` with both MIG devices and whole GPUs advertises the MIG devices
  and withholds the whole GPUs: ``single`` says the resource means MIG
  devices, and a GPU whose MIG mode is off is the odd one out (one whose
  mode is unknown because discovery failed on it is withheld with a warning
  instead of an error);
* ``single`` with a MIG-enabled GPU that has no MIG devices: that GPU simply
  contributes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, get_args

from nvdp_node.domain.devices import Device, Gpu, NodeInventory, gpu_device, mig_device
from nvdp_node.domain.mig import is_compute_sub_profile, mixed_resource_name
from nvdp_node.domain.resource_names import validate_extended_resource_name

MigStrategy = Literal["none", "single", "mixed"]
MIG_STRATEGIES: tuple[str, ...] = get_args(MigStrategy)
DEFAULT_DOMAIN = "nvidia.com"

# Upstream's error texts (internal/rm/device_map.go), kept word for word so they can be searched for.
MIXED_MIG_MODES = "all devices on the node must be configured with the same migEnabled value"
MANY_MIG_TYPES = "more than one MIG device type present on node"


def gpu_matches_no_pattern(name: str) -> str:
    return f"GPU name '{name}' does not match any resource patterns"


def profile_matches_no_pattern(profile: str) -> str:
    return f"MIG profile '{profile}' does not match any resource patterns"


def no_mig_devices(index: int) -> str:
    return f"device {index} has no MIG devices configured"


@dataclass(frozen=True)
class NamePattern:
    """One ``[[resources.gpus]]``/``[[resources.mig]]`` entry: a wildcard and the resource it names.

    ``*`` matches any run of characters and everything else matches itself;
    the pattern must match the whole product name or profile (upstream since
    v0.20.0). A ``name`` without a domain gets ``nvidia.com/``.
    """

    pattern: str
    name: str
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if "/" not in self.name:
            object.__setattr__(self, "name", f"{DEFAULT_DOMAIN}/{self.name}")  # frozen: normalised once
        regex = ".*".join(re.escape(literal) for literal in self.pattern.split("*"))
        object.__setattr__(self, "_regex", re.compile(regex))

    def matches(self, value: str) -> bool:
        return self._regex.fullmatch(value) is not None


@dataclass(frozen=True)
class ResourceNaming:
    """How devices are named: the MIG strategy, the default name, and the pattern lists (first match wins)."""

    strategy: MigStrategy
    resource_name: str
    gpu_patterns: tuple[NamePattern, ...] = ()
    mig_patterns: tuple[NamePattern, ...] = ()

    def __post_init__(self) -> None:
        if self.strategy not in MIG_STRATEGIES:
            raise ValueError(f"unknown MIG strategy {self.strategy!r}; expected one of {', '.join(MIG_STRATEGIES)}")


@dataclass(frozen=True)
class ResourcePlan:
    """Resource name → its devices (sorted by id; no empty resources), plus what went wrong.

    ``errors`` are configurations upstream refuses to start with; the
    devices they concern are left out (see the module docstring).
    ``warnings`` are worth an operator's attention but change nothing.
    """

    resources: dict[str, tuple[Device, ...]]
    warnings: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        return {name: len(devices) for name, devices in self.resources.items()}


def plan_devices(inventory: NodeInventory, naming: ResourceNaming) -> ResourcePlan:
    """Sort the node's devices into resources by ``naming``; never raises for what the node looks like."""
    planner = _Planner(naming)
    if naming.strategy == "none":
        planner.whole_gpus(inventory.gpus)
        planner.warn_mig_advertised_whole(g for g in inventory.gpus if g.mig_enabled)
        return planner.plan()
    planner.whole_gpus(g for g in inventory.gpus if not g.mig_enabled)
    mig_gpus = [g for g in inventory.gpus if g.mig_enabled]
    for gpu in mig_gpus:
        if not gpu.mig_devices:
            (planner.errors if naming.strategy == "single" else planner.warnings).append(no_mig_devices(gpu.index))
    planner.mig_devices(mig_gpus)
    if naming.strategy == "single":
        planner.require_uniform(mig_gpus, {g.uuid: g for g in inventory.gpus if g.error is not None})
    return planner.plan()


class _Planner:
    """Collects (resource name, device) pairs, warnings and errors while a plan is made."""

    def __init__(self, naming: ResourceNaming) -> None:
        self.naming = naming
        self.gpu_patterns = naming.gpu_patterns or (NamePattern("*", naming.resource_name),)
        self.whole: list[tuple[str, Device]] = []
        self.migs: list[tuple[str, Device]] = []
        self.warnings: list[str] = []
        self.errors: list[str] = []

    def whole_gpus(self, gpus: Iterable[Gpu]) -> None:
        for gpu in gpus:
            name = _first_match(self.gpu_patterns, gpu.name)
            if name is None:
                _add_once(self.errors, gpu_matches_no_pattern(gpu.name))
            else:
                self.whole.append((name, gpu_device(gpu)))

    def mig_devices(self, gpus: Iterable[Gpu]) -> None:
        for gpu in gpus:
            for mig in gpu.mig_devices:
                name = self._mig_name(mig.profile)
                if name is not None:
                    self.migs.append((name, mig_device(gpu, mig)))

    def _mig_name(self, profile: str) -> str | None:
        if self.naming.mig_patterns:
            name = _first_match(self.naming.mig_patterns, profile)
        elif self.naming.strategy == "single":
            name = self.naming.resource_name
        else:  # mixed: upstream's default, one resource per full-instance profile
            name = None if is_compute_sub_profile(profile) else mixed_resource_name(profile)
        if name is None:
            _add_once(self.errors, profile_matches_no_pattern(profile))
            return None
        if not self.naming.mig_patterns and (problem := validate_extended_resource_name(name)):
            _add_once(self.errors, f"MIG profile '{profile}' gives no usable resource name: {problem}")
            return None
        return name

    def require_uniform(self, mig_gpus: list[Gpu], errored: dict[str, Gpu]) -> None:
        """``single``: one MIG profile on the node, and MIG devices never next to whole GPUs.

        A whole GPU in error may only look MIG-less because its MIG mode
        could not be read (a lost GPU): it is withheld with a warning, not
        counted as a second MIG mode.
        """
        if len({m.profile for g in mig_gpus for m in g.mig_devices}) > 1:
            self.errors.append(MANY_MIG_TYPES)
            self.migs.clear()
        if not (self.migs and self.whole):
            return
        for _, device in self.whole:
            gpu = errored.get(device.gpu_uuid)
            if gpu is not None:
                self.warnings.append(
                    f'GPU {gpu.index} ({gpu.uuid}) is not advertised: it answered discovery with an error '
                    f'({gpu.error}), so its MIG mode is unknown, and mig_strategy "single" serves MIG devices'
                )
        if any(device.gpu_uuid not in errored for _, device in self.whole):
            self.errors.append(MIXED_MIG_MODES)
        self.whole.clear()

    def warn_mig_advertised_whole(self, gpus: Iterable[Gpu]) -> None:
        for gpu in gpus:
            self.warnings.append(
                f'GPU {gpu.index} ({gpu.uuid}) has MIG enabled, but mig_strategy is "none": it is advertised '
                "whole, and containers given it will see no usable CUDA device"
            )

    def plan(self) -> ResourcePlan:
        grouped: dict[str, list[Device]] = {}
        for name, device in self.whole + self.migs:
            grouped.setdefault(name, []).append(device)
        return ResourcePlan(
            resources={name: tuple(sorted(grouped[name], key=lambda d: d.id)) for name in sorted(grouped)},
            warnings=tuple(self.warnings),
            errors=tuple(self.errors),
        )


def _first_match(patterns: Iterable[NamePattern], value: str) -> str | None:
    return next((p.name for p in patterns if p.matches(value)), None)


def _add_once(messages: list[str], message: str) -> None:
    """Many GPUs share a product name and many MIG devices a profile; say each problem once."""
    if message not in messages:
        messages.append(message)
