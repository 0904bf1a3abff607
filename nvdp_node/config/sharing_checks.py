"""Checks of ``[sharing]`` against the rest of the configuration, and its no-effect notices.

``schema.Config``'s model check calls :func:`sharing_problems` (each problem
with its key path) and serves the names of :func:`renamed_resources` too, so
their sockets are checked; ``loader.py`` adds :func:`sharing_notices` to a
load's notices.

A config can check that a shared name is one this configuration can advertise
(``resource_name``, a ``resources`` name, or ``nvidia.com/mig-<profile>``
under ``mig_strategy = "mixed"``), that a renamed name is valid and new, that
one sharing mode is used, and upstream's refusal of MPS with ``mixed``.
Whether the node has devices under a name, MPS over MIG devices in general
and the 16 MPS clients before Volta need the hardware:
``nvdp_node.domain.sharing.plan_sharing`` checks those.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from nvdp_node.config.sharing import MpsConfig, TimeSlicingConfig
from nvdp_node.config.values import quote
from nvdp_node.domain.resource_names import validate_extended_resource_name
from nvdp_node.domain.sharing import SHARED_SUFFIX

if TYPE_CHECKING:
    from nvdp_node.config.schema import Config  # schema imports this module

KINDS = ("time_slicing", "mps")

Loc = tuple[str | int, ...]


def shared_name(name: str, rename: bool | None, rename_by_default: bool) -> str:
    """The name a shared resource's replicas are advertised under."""
    return name + SHARED_SUFFIX if (rename_by_default if rename is None else rename) else name


def renamed_resources(config: Config) -> Iterator[tuple[Loc, str]]:
    """(key path of the entry's name, the new name) for each shared resource advertised under a new name."""
    for kind in KINDS:
        section = getattr(config.sharing, kind)
        for index, entry in enumerate(section.resources):
            name = shared_name(entry.name, entry.rename, section.rename_by_default)
            if name != entry.name and validate_extended_resource_name(name) is None:  # else sharing_problems says so
                yield ("sharing", kind, "resources", index, "name"), name


def sharing_problems(config: Config) -> list[tuple[Loc, str]]:
    """Every cross-key problem of ``[sharing]``, each with the key path it concerns."""
    sharing = config.sharing
    problems: list[tuple[Loc, str]] = []
    if sharing.time_slicing.resources and sharing.mps.resources:
        problems.append(
            (
                ("sharing", "mps", "resources"),
                "time-slicing and MPS cannot be combined (sharing.time_slicing.resources is set too): share "
                "the GPUs one way (upstream silently uses MPS alone)",
            )
        )
    if sharing.mps.resources and config.plugin.mig_strategy == "mixed":
        problems.append(
            (
                ("sharing", "mps", "resources"),
                'MPS cannot be used with plugin.mig_strategy = "mixed" (upstream: using '
                "--mig-strategy=mixed is not supported with MPS)",
            )
        )
    whole, mig, mixed_defaults = _advertised_names(config)
    for kind in KINDS:
        section = getattr(sharing, kind)
        seen: dict[str, int] = {}
        for index, entry in enumerate(section.resources):
            loc: Loc = ("sharing", kind, "resources", index, "name")
            problem = _name_problem(entry.name, whole | mig, mixed_defaults)
            if problem is None and entry.name in seen:
                problem = f"{quote(entry.name)} is already shared by sharing.{kind}.resources[{seen[entry.name]}]"
            if problem is None and kind == "mps" and entry.name in mig - whole:
                problem = f"{quote(entry.name)} names only MIG devices here, and MPS does not share MIG devices"
            if problem is None:
                problem = _rename_problem(entry.name, shared_name(entry.name, entry.rename, section.rename_by_default), whole | mig)
            if problem is not None:
                problems.append((loc, problem))
            seen.setdefault(entry.name, index)
    return problems


def _advertised_names(config: Config) -> tuple[frozenset[str], frozenset[str], bool]:
    """(names of whole GPUs, names of MIG devices, whether nvidia.com/mig-<profile> names are made too)."""
    whole = frozenset(p.name for p in config.resources.gpus) or frozenset({config.resource_name})
    strategy = config.plugin.mig_strategy
    if strategy == "none":
        return whole, frozenset(), False
    if config.resources.mig:
        return whole, frozenset(p.name for p in config.resources.mig), False
    if strategy == "single":
        return whole, frozenset({config.resource_name}), False
    return whole, frozenset(), True


def _name_problem(name: str, names: frozenset[str], mixed_defaults: bool) -> str | None:
    if name in names or (mixed_defaults and name.startswith("nvidia.com/mig-")):
        return None
    listed = ", ".join(quote(n) for n in sorted(names))
    if mixed_defaults:
        listed += ' and "nvidia.com/mig-<profile>"'
    close = difflib.get_close_matches(name, sorted(names), n=1)
    hint = f" (did you mean {quote(close[0])}?)" if close else ""
    return f"{quote(name)} is not a resource this configuration advertises{hint}; it advertises {listed}"


def _rename_problem(name: str, new: str, names: frozenset[str]) -> str | None:
    if new == name:
        return None
    invalid = validate_extended_resource_name(new)
    if invalid:
        return f"renamed to {quote(new)}, which kubelet refuses: {invalid}"
    if new in names:
        return f"renamed to {quote(new)}, a name this configuration already advertises: two resources cannot share a name"
    return None


def sharing_notices(config: Config) -> list[str]:
    """Settings that change nothing under this configuration (said at load, not refused)."""
    sharing, notices = config.sharing, []
    defaults = {"time_slicing": TimeSlicingConfig(), "mps": MpsConfig()}
    for kind in KINDS:
        section = getattr(sharing, kind)
        if section.resources:
            continue
        for key in ("rename_by_default", "fail_requests_greater_than_one"):
            if getattr(section, key) != getattr(defaults[kind], key):
                notices.append(f"sharing.{kind}.{key} has no effect: sharing.{kind}.resources is empty")
    if sharing.mps.root != MpsConfig().root and not sharing.mps.resources:
        notices.append("sharing.mps.root has no effect: sharing.mps.resources is empty")
    if config.plugin.shared_devices_allocation_policy != "distributed" and not (
        sharing.time_slicing.resources or sharing.mps.resources
    ):
        notices.append("plugin.shared_devices_allocation_policy has no effect: no resource is shared")
    return notices
