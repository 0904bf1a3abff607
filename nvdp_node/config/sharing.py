"""The ``[sharing.time_slicing]`` and ``[sharing.mps]`` sections, and the planner's form of them.

``schema.py`` puts :class:`SharingConfig` into the
:class:`~nvdp_node.config.schema.Config` (``sharing_checks.py`` holds the
checks over several keys); the daemon (``nvdp serve``, ``nvdp devices``)
calls :func:`sharing_from_config` at start and on every reload and hands the
result to ``nvdp_node.domain.sharing.plan_sharing`` with the planned resources.

Each entry is checked here as upstream parses it (replicas >= 2, at most 48
MPS clients, ``devices`` only "all": a selection is parsed, so that a typo
and a selection are told apart, and refused, as upstream ignores one).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from nvdp_node.config.naming import qualified_resource_name
from nvdp_node.config.values import AbsolutePath, Section, quote
from nvdp_node.domain.allocation import DEFAULT_MPS_ROOT
from nvdp_node.domain.sharing import MPS_MAX_CLIENTS, SHARED_SUFFIX, SharedResource, Sharing, SharingKind

if TYPE_CHECKING:
    from nvdp_node.config.schema import Config  # schema imports this module

# Not upstream's: a typo such as 40000000 would make millions of devices, and
# kubelet reads ListAndWatch with a 4 MiB limit (about 60 000 replica ids).
MAX_REPLICAS = 1024


def _replicas(value: int) -> int:
    if value < 2:
        raise ValueError(
            f"expected at least 2 replicas (upstream: number of replicas must be >= 2; got {value}); "
            "to stop sharing a resource, remove its entry"
        )
    if value > MAX_REPLICAS:
        raise ValueError(f"expected at most {MAX_REPLICAS} replicas per GPU (got {value})")
    return value


def _mps_replicas(value: int) -> int:
    if value > MPS_MAX_CLIENTS:
        raise ValueError(
            f"expected at most {MPS_MAX_CLIENTS} replicas (got {value}): an MPS control daemon serves at most "
            f"{MPS_MAX_CLIENTS} clients per GPU (16 before Volta, which nvdp checks when it sees the GPU)"
        )
    return _replicas(value)


def _rename(value: object) -> object:
    if isinstance(value, str):
        raise ValueError(
            f'expected true (advertise as "<name>{SHARED_SUFFIX}") or false (got {quote(value)}): '
            "a custom name is not supported (upstream ignores one too)"
        )
    return value


def _devices(value: object) -> object:
    """Upstream's ``devices`` grammar, parsed so that a typo and a selection are told apart; only "all" is taken."""
    if value == "all" and isinstance(value, str):
        return value
    raise ValueError(
        f"{describe_device_selection(value)}: selecting devices is not supported (upstream parses a selection too, and "
        'shares every device of the resource); write "all" or leave devices out'
    )


def describe_device_selection(value: object) -> str:
    """What a ``devices`` value other than "all" selects ("a count of 2 devices"); ValueError if it is malformed."""
    if isinstance(value, str) or isinstance(value, bool) or not isinstance(value, (int, list)):
        raise ValueError(
            f'expected "all" (got {quote(value)}); upstream also knows a count of devices or a list of '
            "GPU indices, MIG indices and UUIDs, which nvdp parses and refuses"
        )
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"a count of devices must be > 0 (got {value})")
        return f"a count of {value} devices"
    for index, item in enumerate(value):
        if not _device_ref(item):
            raise ValueError(
                f'entry {index} ({quote(item)}) is not a GPU index (0), a MIG index ("0:1"), a GPU UUID '
                '("GPU-<uuid>") or a MIG UUID ("MIG-<uuid>", "MIG-GPU-<uuid>/<gi>/<ci>")'
            )
    return f"a list of {len(value)} devices"


def _device_ref(item: object) -> bool:
    if isinstance(item, int) and not isinstance(item, bool):
        return item >= 0
    if not isinstance(item, str):
        return False
    if item.isascii() and item.isdigit():
        return True
    index, colon, sub = item.partition(":")
    if colon and index.isascii() and index.isdigit() and sub.isascii() and sub.isdigit():
        return True
    if item.startswith("GPU-"):
        return _is_uuid(item[4:])
    if item.startswith("MIG-"):
        if _is_uuid(item[4:]):
            return True
        parts = item[4:].split("/")  # MIG-GPU-<uuid>/<gi>/<ci>
        return (
            len(parts) == 3
            and parts[0].startswith("GPU-")
            and _is_uuid(parts[0][4:])
            and all(p.isascii() and p.isdigit() for p in parts[1:])
        )
    return False


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


_NAME = Field(
    description='The resource to share, as nvdp advertises it ("gpu" means "nvidia.com/gpu"); every device '
    "of it is shared."
)
_RENAME = Field(
    None,
    description=f'true: advertise the replicas as "<name>{SHARED_SUFFIX}"; false: under the name itself; '
    "unset: as rename_by_default says.",
)
_DEVICES = Field(
    "all",
    description='Which devices of the resource to share: only "all" (upstream ignores a selection too).',
)


class SharedResourceConfig(Section):
    """One ``[[sharing.time_slicing.resources]]`` entry: a resource and how many replicas each device makes."""

    name: Annotated[str, AfterValidator(qualified_resource_name)] = _NAME
    replicas: Annotated[int, AfterValidator(_replicas)] = Field(
        description=f"Devices advertised per GPU or MIG device, at least 2 (at most {MAX_REPLICAS})."
    )
    rename: Annotated[bool | None, BeforeValidator(_rename)] = _RENAME
    devices: Annotated[Literal["all"], BeforeValidator(_devices)] = _DEVICES


class MpsResourceConfig(Section):
    """One ``[[sharing.mps.resources]]`` entry: a resource and how many MPS clients each GPU takes."""

    name: Annotated[str, AfterValidator(qualified_resource_name)] = _NAME
    replicas: Annotated[int, AfterValidator(_mps_replicas)] = Field(
        description=f"MPS clients per GPU, from 2 to {MPS_MAX_CLIENTS} (16 before Volta); each gets "
        "1/replicas of the GPU's threads and memory."
    )
    rename: Annotated[bool | None, BeforeValidator(_rename)] = _RENAME
    devices: Annotated[Literal["all"], BeforeValidator(_devices)] = _DEVICES


_RENAME_BY_DEFAULT = Field(
    False, description=f'Advertise each shared resource as "<name>{SHARED_SUFFIX}" unless its entry sets rename.'
)
_RESOURCES_DESCRIPTION = (
    'The resources to share, e.g. [{{ name = "nvidia.com/gpu", replicas = 4 }}] (or [[sharing.{kind}.resources]] '
    "tables). Empty: no {what}."
)


class TimeSlicingConfig(Section):
    """Time-slicing: each GPU of a listed resource is advertised as several devices that take turns on it
    (upstream's sharing.timeSlicing)."""

    rename_by_default: bool = _RENAME_BY_DEFAULT
    fail_requests_greater_than_one: bool = Field(
        False,
        description="Refuse a container that asks for more than one replica (upstream's error text): "
        "two replicas of one GPU give it no more of that GPU.",
    )
    # strict=False lets a TOML array stand for the tuple; its entries stay strict.
    resources: Annotated[tuple[SharedResourceConfig, ...], Field(strict=False)] = Field(
        (), description=_RESOURCES_DESCRIPTION.format(kind="time_slicing", what="time-slicing")
    )


class MpsConfig(Section):
    """MPS: each GPU of a listed resource is shared by several containers through one MPS control daemon per
    resource, run by systemd as nvdp-mps@.service (upstream's sharing.mps)."""

    rename_by_default: bool = _RENAME_BY_DEFAULT
    fail_requests_greater_than_one: bool = Field(
        True,
        description="Refuse a container that asks for more than one replica (upstream's error text and, for "
        "MPS, its default). false: such a request gets the GPU once.",
    )
    resources: Annotated[tuple[MpsResourceConfig, ...], Field(strict=False)] = Field(
        (), description=_RESOURCES_DESCRIPTION.format(kind="mps", what="MPS")
    )
    root: AbsolutePath = Field(
        Path(DEFAULT_MPS_ROOT),
        description="Host directory of the MPS daemons: <root>/<resource>/pipe and <root>/<resource>/log per "
        "resource, <root>/shm shared; upstream's flags.mpsRoot (helm: /run/nvidia/mps).",
    )


class SharingConfig(Section):
    """GPU sharing: time-slicing or MPS (one of them), upstream's sharing table."""

    time_slicing: TimeSlicingConfig = Field(default_factory=TimeSlicingConfig)
    mps: MpsConfig = Field(default_factory=MpsConfig)


def sharing_from_config(config: Config) -> Sharing | None:
    """The active sharing mode for ``replicate``, or None when no resource is shared."""
    modes: tuple[tuple[SharingKind, TimeSlicingConfig | MpsConfig], ...] = (
        ("mps", config.sharing.mps),
        ("time-slicing", config.sharing.time_slicing),
    )
    for kind, section in modes:
        if section.resources:
            return Sharing(
                kind=kind,
                resources=tuple(
                    SharedResource(name=entry.name, replicas=entry.replicas, rename=entry.rename)
                    for entry in section.resources
                ),
                rename_by_default=section.rename_by_default,
                fail_requests_greater_than_one=section.fail_requests_greater_than_one,
            )
    return None
