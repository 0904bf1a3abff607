"""MIG profile strings (go-nvlib's MigProfileInfo.String()) and the mixed strategy's resource names."""

from __future__ import annotations

import pytest

from nvdp_node.domain.mig import (
    is_compute_sub_profile,
    mig_memory_gb,
    mixed_resource_name,
    profile_from_ids,
    profile_from_slices,
    profile_string,
)

MIB = 2**20
# Total memory as NVML reports it (nvidia-smi's MiB figure); MIG sizes as `nvidia-smi mig -lgip` lists them.
A100_40GB = 40536 * MIB
H100_80GB = 81559 * MIB
H200_141GB = 143771 * MIB

# NVML_GPU_INSTANCE_PROFILE_* / NVML_COMPUTE_INSTANCE_PROFILE_* values (nvml.h).
GI_1_SLICE, GI_2_SLICE, GI_3_SLICE, GI_7_SLICE = 0x0, 0x1, 0x2, 0x4
GI_1_SLICE_REV1, GI_1_SLICE_GFX, GI_1_SLICE_NO_ME, GI_1_SLICE_ALL_ME = 0x7, 0xA, 0xD, 0xF
CI_1_SLICE, CI_2_SLICE, CI_3_SLICE, CI_7_SLICE = 0x0, 0x1, 0x2, 0x4


@pytest.mark.parametrize(
    "device_memory,mig_mb,gb",
    [
        (A100_40GB, 4864, 5),
        (A100_40GB, 9856, 10),
        (A100_40GB, 19968, 20),
        (A100_40GB, 40192, 40),
        (H100_80GB, 9984, 10),
        (H100_80GB, 20096, 20),
        (H100_80GB, 40448, 40),
        (H100_80GB, 81152, 80),
        (H200_141GB, 17664, 18),
        (H200_141GB, 35840, 35),
        (H200_141GB, 71680, 71),
        (H200_141GB, 143360, 141),
    ],
    ids=[
        "a100-1g.5gb", "a100-2g.10gb", "a100-3g.20gb", "a100-7g.40gb",
        "h100-1g.10gb", "h100-1g.20gb", "h100-3g.40gb", "h100-7g.80gb",
        "h200-1g.18gb", "h200-2g.35gb", "h200-3g.71gb", "h200-7g.141gb",
    ],
)
def test_memory_is_rounded_up_to_an_eighth_of_the_gpu_then_to_whole_gb(device_memory, mig_mb, gb):
    assert mig_memory_gb(device_memory, mig_mb) == gb


def test_a_half_gb_rounds_away_from_zero_as_go_does():
    # 4/8 of an H200's 141 GiB is 70.5: Go's math.Round gives 71 where Python's round() would give 70.
    assert mig_memory_gb(H200_141GB, 71680) == 71


def test_the_gpus_memory_counts_in_whole_gib_rounded_up():
    # 81559 MiB is 79.6 GiB: an eighth of it is named after 80 GiB, i.e. 10 GB.
    assert mig_memory_gb(H100_80GB, 9984) == 10


def test_a_gpu_without_known_memory_cannot_name_a_profile():
    with pytest.raises(ValueError, match="total memory must be positive"):
        mig_memory_gb(0, 4864)


@pytest.mark.parametrize(
    "args,expected",
    [
        ((1, 1, 10), "1g.10gb"),
        ((1, 2, 20), "1c.2g.20gb"),
        ((1, 1, 10, ("me",)), "1g.10gb+me"),
        ((1, 1, 10, ("me.all",)), "1g.10gb+me.all"),
        ((1, 1, 10, ("gfx",)), "1g.10gb+gfx"),
        ((1, 1, 10, (), ("me",)), "1g.10gb-me"),
        ((1, 2, 20, ("me",)), "1c.2g.20gb+me"),
    ],
    ids=["full-instance", "compute-sub-profile", "media-extensions", "all-media-extensions", "graphics",
         "no-media-extensions", "sub-profile-with-attribute"],
)
def test_profile_strings_are_spelt_as_go_nvlib_spells_them(args, expected):
    assert profile_string(*args) == expected


@pytest.mark.parametrize(
    "gi,ci,device_memory,mig_mb,expected",
    [
        (GI_1_SLICE, CI_1_SLICE, A100_40GB, 4864, "1g.5gb"),
        (GI_3_SLICE, CI_3_SLICE, H100_80GB, 40448, "3g.40gb"),
        (GI_7_SLICE, CI_7_SLICE, H200_141GB, 143360, "7g.141gb"),
        (GI_2_SLICE, CI_1_SLICE, H100_80GB, 20096, "1c.2g.20gb"),
        (GI_1_SLICE_REV1, CI_1_SLICE, H100_80GB, 9984, "1g.10gb+me"),
        (GI_1_SLICE_NO_ME, CI_1_SLICE, H100_80GB, 9984, "1g.10gb-me"),
        (GI_1_SLICE_ALL_ME, CI_1_SLICE, H100_80GB, 9984, "1g.10gb+me.all"),
        (GI_1_SLICE_GFX, CI_1_SLICE, H100_80GB, 9984, "1g.10gb+gfx"),
    ],
    ids=["a100-1g.5gb", "h100-3g.40gb", "h200-7g.141gb", "compute-sub-profile", "rev1-has-media-extensions",
         "no-me", "all-me", "gfx"],
)
def test_a_profile_is_named_from_its_nvml_instance_profiles(gi, ci, device_memory, mig_mb, expected):
    assert profile_from_ids(gi, ci, mig_memory_mb=mig_mb, device_memory_bytes=device_memory) == expected


def test_an_unknown_gpu_instance_profile_is_an_error_naming_it():
    with pytest.raises(ValueError, match="unknown GPU instance profile 99"):
        profile_from_ids(99, CI_1_SLICE, mig_memory_mb=4864, device_memory_bytes=A100_40GB)


def test_an_unknown_compute_instance_profile_is_an_error_naming_it():
    with pytest.raises(ValueError, match="unknown compute instance profile 42"):
        profile_from_ids(GI_1_SLICE, 42, mig_memory_mb=4864, device_memory_bytes=A100_40GB)


def test_slice_counts_alone_name_the_profile_without_attributes():
    assert profile_from_slices(1, 2, mig_memory_mb=20096, device_memory_bytes=H100_80GB) == "1c.2g.20gb"


@pytest.mark.parametrize(
    "profile,name",
    [
        ("1g.5gb", "nvidia.com/mig-1g.5gb"),
        ("3g.40gb", "nvidia.com/mig-3g.40gb"),
        ("1g.10gb+me", "nvidia.com/mig-1g.10gb.me"),
        ("1g.10gb+me.all", "nvidia.com/mig-1g.10gb.me.all"),
        ("1g.10gb-me", "nvidia.com/mig-1g.10gb-me"),
    ],
    ids=["plain", "h100", "plus-becomes-dot", "plus-me-all", "minus-stays-literal"],
)
def test_mixed_resource_names_put_mig_before_the_profile_with_plus_as_dot(profile, name):
    assert mixed_resource_name(profile) == name


@pytest.mark.parametrize(
    "profile,sub",
    [("1c.2g.20gb", True), ("2c.3g.40gb+me", True), ("1g.10gb", False), ("7g.141gb", False)],
    ids=["sub", "sub-with-attribute", "full", "h200-full"],
)
def test_compute_sub_profiles_are_told_apart_from_full_instance_profiles(profile, sub):
    assert is_compute_sub_profile(profile) is sub
