"""The ``[resources]`` section (names per GPU model and MIG profile), and the naming rules as the planner takes them.

``schema.py`` puts :class:`ResourcesConfig` into the :class:`~nvdp_node.config.schema.Config`;
the daemon (``nvdp serve``, ``nvdp devices``) calls :func:`naming_from_config`
at start and on every reload and hands the result, with the node's inventory,
to ``nvdp_node.domain.resources.plan_devices``. Names are qualified here
("a100" -> "nvidia.com/a100") and checked with kubelet's rules; the schema
checks their sockets fit under ``kubelet.socket_dir``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator, Field

from nvdp_node.config.values import Section
from nvdp_node.domain.resource_names import validate_extended_resource_name
from nvdp_node.domain.resources import DEFAULT_DOMAIN, NamePattern, ResourceNaming

if TYPE_CHECKING:
    from nvdp_node.config.schema import Config  # schema imports this module

def _pattern(value: str) -> str:
    if not value:
        raise ValueError('expected a non-empty pattern, e.g. "*A100*" ("*" matches any characters)')
    return value


def qualified_resource_name(value: str) -> str:
    """Upstream's rule: a name without a domain gets "nvidia.com/"; then kubelet's rules."""
    name = value if "/" in value else f"{DEFAULT_DOMAIN}/{value}"
    error = validate_extended_resource_name(name)
    if error:
        raise ValueError(error)
    return name


class NamePatternConfig(Section):
    """One entry of resources.gpus or resources.mig: the devices a pattern matches get this name."""

    pattern: Annotated[str, AfterValidator(_pattern)] = Field(
        description="Matched against the whole GPU product name (resources.gpus, e.g. "
        '"NVIDIA A100-SXM4-40GB") or MIG profile (resources.mig, e.g. "1g.10gb"); "*" matches any '
        "characters, everything else only itself."
    )
    name: Annotated[str, AfterValidator(qualified_resource_name)] = Field(
        description='Resource name for the matching devices; a name without "/" gets "nvidia.com/".'
    )


# strict=False lets a TOML array stand for the tuple; its entries stay strict.
NamePatternList = Annotated[tuple[NamePatternConfig, ...], Field(strict=False)]


class ResourcesConfig(Section):
    """Resource names per GPU model and MIG profile; upstream's resources.gpus and resources.mig."""

    gpus: NamePatternList = Field(
        (),
        description='Name patterns for whole GPUs, first match wins, e.g. [{ pattern = "*A100*", name = '
        '"nvidia.com/a100" }] (or [[resources.gpus]] tables). A GPU that matches no pattern is an error. '
        "Empty: every GPU is advertised as resource_name.",
    )
    mig: NamePatternList = Field(
        (),
        description='Name patterns for MIG devices by profile, e.g. [{ pattern = "1g.10gb", name = '
        '"nvidia.com/mig-small" }]; a MIG device that matches no pattern is an error. Empty: with '
        'mig_strategy "single" every MIG device is resource_name, with "mixed" each profile P is '
        'nvidia.com/mig-P ("+" in P written as ".").',
    )


def naming_from_config(config: Config) -> ResourceNaming:
    """``plugin.mig_strategy``, ``resource_name`` and the ``resources`` patterns, in file order."""
    return ResourceNaming(
        strategy=config.plugin.mig_strategy,
        resource_name=config.resource_name,
        gpu_patterns=_patterns(config.resources.gpus),
        mig_patterns=_patterns(config.resources.mig),
    )


def _patterns(entries: tuple[NamePatternConfig, ...]) -> tuple[NamePattern, ...]:
    return tuple(NamePattern(pattern=entry.pattern, name=entry.name) for entry in entries)
