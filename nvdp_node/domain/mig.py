"""MIG profile strings as NVIDIA's tools spell them, and the resource names made from them.

Pure. The NVML adapter (``nvdp_node.adapters.nvml``) calls
:func:`profile_from_ids` (or :func:`profile_from_slices` when the driver
cannot say which instance profile a MIG device was made from) for every MIG
device it finds; the resource planner (``nvdp_node.domain.resources``) calls
:func:`mixed_resource_name` for the ``mixed`` strategy's default names.

The strings follow go-nvlib's ``MigProfileInfo.String()`` (what upstream's
``resources.mig`` patterns are matched against): ``<G>g.<GB>gb`` when the
compute instance spans the whole GPU instance, else ``<C>c.<G>g.<GB>gb``,
then ``+<attr>[,<attr>]`` for the instance profile's extras (media
extensions ``me``, all media extensions ``me.all``, graphics ``gfx``) or
``-me`` for a profile without media extensions.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

MIB = 2**20
GIB = 2**30
# Memory is handed out to GPU instances in eighths of the GPU.
_MEMORY_FRACTIONS = 8


@dataclass(frozen=True)
class _InstanceProfile:
    slices: int
    attributes: tuple[str, ...] = ()
    negative_attributes: tuple[str, ...] = ()


# NVML_GPU_INSTANCE_PROFILE_* (nvml.h) → GPU slices and attributes, as go-nvlib maps them.
GPU_INSTANCE_PROFILES: dict[int, _InstanceProfile] = {
    0x0: _InstanceProfile(1),  # 1_SLICE
    0x1: _InstanceProfile(2),  # 2_SLICE
    0x2: _InstanceProfile(3),  # 3_SLICE
    0x3: _InstanceProfile(4),  # 4_SLICE
    0x4: _InstanceProfile(7),  # 7_SLICE
    0x5: _InstanceProfile(8),  # 8_SLICE
    0x6: _InstanceProfile(6),  # 6_SLICE
    0x7: _InstanceProfile(1, ("me",)),  # 1_SLICE_REV1
    0x8: _InstanceProfile(2, ("me",)),  # 2_SLICE_REV1
    0x9: _InstanceProfile(1),  # 1_SLICE_REV2
    0xA: _InstanceProfile(1, ("gfx",)),  # 1_SLICE_GFX
    0xB: _InstanceProfile(2, ("gfx",)),  # 2_SLICE_GFX
    0xC: _InstanceProfile(4, ("gfx",)),  # 4_SLICE_GFX
    0xD: _InstanceProfile(1, (), ("me",)),  # 1_SLICE_NO_ME
    0xE: _InstanceProfile(2, (), ("me",)),  # 2_SLICE_NO_ME
    0xF: _InstanceProfile(1, ("me.all",)),  # 1_SLICE_ALL_ME
    0x10: _InstanceProfile(2, ("me.all",)),  # 2_SLICE_ALL_ME
    # Newer than go-nvlib's table; named like its 1/2/4-slice siblings.
    0x11: _InstanceProfile(3, ("gfx",)),  # 3_SLICE_GFX
}

# NVML_COMPUTE_INSTANCE_PROFILE_* (nvml.h) → compute slices.
COMPUTE_INSTANCE_SLICES: dict[int, int] = {
    0x0: 1,  # 1_SLICE
    0x1: 2,  # 2_SLICE
    0x2: 3,  # 3_SLICE
    0x3: 4,  # 4_SLICE
    0x4: 7,  # 7_SLICE
    0x5: 8,  # 8_SLICE
    0x6: 6,  # 6_SLICE
    0x7: 1,  # 1_SLICE_REV1
    0x8: 7,  # 7_SLICE_NVL
}

# A profile whose compute instance is smaller than its GPU instance: "1c.2g.20gb".
_COMPUTE_SUB_PROFILE = re.compile(r"\d+c\.")


def mig_memory_gb(device_memory_bytes: int, mig_memory_mb: int) -> int:
    """The GB figure in a profile name, as go-nvlib's ``getMigMemorySizeGB`` computes it.

    The MIG device's share of the GPU's memory is rounded *up* to the next
    eighth, then scaled by the GPU's memory in whole GiB (rounded up), and the
    result rounded half away from zero (Go's ``math.Round``, not Python's
    ``round``): an H200's 4/8 of 141 GiB is 70.5 and names "3g.71gb".
    """
    if device_memory_bytes <= 0:
        raise ValueError(f"the GPU's total memory must be positive to name a MIG profile, got {device_memory_bytes}")
    fraction = mig_memory_mb * MIB / device_memory_bytes
    fraction = math.ceil(fraction * _MEMORY_FRACTIONS) / _MEMORY_FRACTIONS
    total_gb = -(-device_memory_bytes // GIB)
    return math.floor(fraction * total_gb + 0.5)


def profile_string(
    compute_slices: int, gpu_slices: int, memory_gb: int,
    attributes: tuple[str, ...] = (), negative_attributes: tuple[str, ...] = (),
) -> str:
    """``1g.10gb``, ``1c.2g.20gb``, ``1g.10gb+me``, ``1g.10gb-me`` (a negative attribute wins)."""
    suffix = ""
    if attributes:
        suffix = "+" + ",".join(attributes)
    if negative_attributes:
        suffix = "-" + ",".join(negative_attributes)
    if compute_slices == gpu_slices:
        return f"{gpu_slices}g.{memory_gb}gb{suffix}"
    return f"{compute_slices}c.{gpu_slices}g.{memory_gb}gb{suffix}"


def profile_from_ids(
    gpu_instance_profile: int, compute_instance_profile: int, *, mig_memory_mb: int, device_memory_bytes: int,
) -> str:
    """The profile of a MIG device made from these NVML GPU/compute instance profile enums."""
    gi = GPU_INSTANCE_PROFILES.get(gpu_instance_profile)
    if gi is None:
        raise ValueError(f"unknown GPU instance profile {gpu_instance_profile}")
    ci = COMPUTE_INSTANCE_SLICES.get(compute_instance_profile)
    if ci is None:
        raise ValueError(f"unknown compute instance profile {compute_instance_profile}")
    gb = mig_memory_gb(device_memory_bytes, mig_memory_mb)
    return profile_string(ci, gi.slices, gb, gi.attributes, gi.negative_attributes)


def profile_from_slices(
    compute_slices: int, gpu_slices: int, *, mig_memory_mb: int, device_memory_bytes: int,
) -> str:
    """The profile from a MIG device's own attributes: right but for the ``+me``-style extras it cannot see."""
    if compute_slices <= 0 or gpu_slices <= 0:
        raise ValueError(f"slice counts must be positive, got {compute_slices}c.{gpu_slices}g")
    return profile_string(compute_slices, gpu_slices, mig_memory_gb(device_memory_bytes, mig_memory_mb))


def is_compute_sub_profile(profile: str) -> bool:
    """True for ``1c.2g.20gb``-style profiles, which upstream's mixed defaults give no resource."""
    return _COMPUTE_SUB_PROFILE.match(profile) is not None


def mixed_resource_name(profile: str) -> str:
    """``1g.10gb+me`` → ``nvidia.com/mig-1g.10gb.me``; a ``-me`` suffix stays as it is."""
    return "nvidia.com/mig-" + profile.replace("+", ".")
