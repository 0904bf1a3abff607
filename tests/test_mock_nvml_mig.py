"""The mock NVML's MIG model, as seen through the real pynvml: catalogues, instances, run-time re-layouts.

Expected values come from the profile JSON (or the layout Control.mig
planned), so profiles, planner and C library are checked against each other.
Profile strings are derived from NVML answers the way go-nvlib names MIG
profiles (MigProfileInfo.String()), so the catalogues are checked against
upstream's naming too.
"""

from __future__ import annotations

import ctypes
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pynvml
import pytest

from tests.mock_nvml import Control, load_profile
from tests.mock_nvml.mig import MIG_MINORS_FILE, cap_minor
from tests.mock_nvml.plugin import MockNvml

MIG_PROFILES = ["a100-mig-8", "h100-mig-8", "h200-mig-8", "a100-single-8"]
SKIPPED = (pynvml.NVMLError_NotSupported, pynvml.NVMLError_InvalidArgument)

# go-nvlib's NewMigProfile: GPU instance slices and attributes by NVML_GPU_INSTANCE_PROFILE_* position,
# compute instance slices by NVML_COMPUTE_INSTANCE_PROFILE_* position.
GI_SLICES = {0: 1, 1: 2, 2: 3, 3: 4, 4: 7, 5: 8, 6: 6, 7: 1, 8: 2, 9: 1, 10: 1, 11: 2, 12: 4, 13: 1, 14: 2, 15: 1,
             16: 2}
GI_SUFFIX = {7: "+me", 8: "+me", 15: "+me.all", 16: "+me.all", 10: "+gfx", 11: "+gfx", 12: "+gfx", 13: "-me",
             14: "-me"}
CI_SLICES = {0: 1, 1: 2, 2: 3, 3: 4, 4: 7, 5: 8, 6: 6, 7: 1, 8: 7}


def text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def addr(handle: Any) -> int | None:
    return ctypes.cast(handle, ctypes.c_void_p).value


def memory_gb(total_bytes: int, mig_mb: int) -> int:
    """go-nvlib's getMigMemorySizeGB: the MIG fraction rounded up to eighths, times the GPU's whole GB."""
    fraction = math.ceil(mig_mb * 2**20 / total_bytes * 8) / 8
    return math.floor(fraction * -(-total_bytes // 2**30) + 0.5)  # Go's math.Round: halves away from zero


def upstream_profile(mig: Any) -> str:
    """The MIG device's profile string, found from NVML the way go-nvlib's GetProfile does."""
    parent = pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)
    gi = pynvml.nvmlDeviceGetGpuInstanceById(parent, pynvml.nvmlDeviceGetGpuInstanceId(mig))
    ci = pynvml.nvmlGpuInstanceGetComputeInstanceById(gi, pynvml.nvmlDeviceGetComputeInstanceId(mig))
    gi_id, ci_id = pynvml.nvmlGpuInstanceGetInfo(gi).profileId, pynvml.nvmlComputeInstanceGetInfo(ci).profileId
    for i in range(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
        try:
            if pynvml.nvmlDeviceGetGpuInstanceProfileInfo(parent, i).id != gi_id:
                continue
        except SKIPPED:
            continue
        for j in range(pynvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
            try:
                if pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, j, 0).id != ci_id:
                    continue
            except SKIPPED:
                continue
            g, c = GI_SLICES[i], CI_SLICES[j]
            total = pynvml.nvmlDeviceGetMemoryInfo(parent).total
            gb = memory_gb(total, pynvml.nvmlDeviceGetAttributes(mig).memorySizeMB)
            return f"{'' if c == g else f'{c}c.'}{g}g.{gb}gb{GI_SUFFIX.get(i, '')}"
    raise AssertionError("no matching profile ids")


def mig_handles(gpu: int) -> dict[str, Any]:
    """UUID -> handle of GPU ``gpu``'s MIG devices, enumerated as upstream does."""
    parent = pynvml.nvmlDeviceGetHandleByIndex(gpu)
    found = {}
    for i in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(parent)):
        try:
            handle = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(parent, i)
        except pynvml.NVMLError_NotFound:
            continue
        found[text(pynvml.nvmlDeviceGetUUID(handle))] = handle
    return found


def layouts(profile: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return [(i, m) for i, g in enumerate(profile["gpus"]) for m in g.get("mig_devices", [])]


@pytest.fixture(params=MIG_PROFILES)
def mig_node(request: pytest.FixtureRequest, mock_nvml: MockNvml) -> Iterator[dict[str, Any]]:
    """Each bundled MIG profile, initialised; yields the parsed profile."""
    node = mock_nvml.use(request.param)
    pynvml.nvmlInit()
    yield node.profile


# --------------------------------------------------------------------------- bundled profiles


def test_every_mig_device_enumerates_with_the_profile_uuid_and_instance_ids(mig_node: dict[str, Any]) -> None:
    for gpu, entry in enumerate(mig_node["gpus"]):
        if not entry.get("mig", {}).get("current"):
            continue
        expected = {m["uuid"]: (m["gpu_instance_id"], m["compute_instance_id"]) for m in entry.get("mig_devices", [])}
        found = {uuid: (pynvml.nvmlDeviceGetGpuInstanceId(h), pynvml.nvmlDeviceGetComputeInstanceId(h))
                 for uuid, h in mig_handles(gpu).items()}
        assert found == expected


def test_every_mig_devices_profile_is_what_go_nvlib_derives_from_nvml(mig_node: dict[str, Any]) -> None:
    for _, mig in layouts(mig_node):
        assert upstream_profile(pynvml.nvmlDeviceGetHandleByUUID(mig["uuid"])) == mig["profile"]


def test_every_mig_device_is_named_after_its_parent_and_profile(mig_node: dict[str, Any]) -> None:
    for gpu, mig in layouts(mig_node):
        name = text(pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByUUID(mig["uuid"])))
        assert name == f"{mig_node['gpus'][gpu]['name']} MIG {mig['profile']}"


@pytest.mark.parametrize(("profile", "required"), [
    ("h100-mig-8", {"1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"}),
    ("h200-mig-8", {"1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"}),
])
def test_the_h100_and_h200_profiles_mix_every_gpu_instance_profile_with_mig_off_gpus(
    profile: str, required: set[str]
) -> None:
    data = load_profile(profile)
    assert {m["profile"] for _, m in layouts(data)} == required
    assert any(not g["mig"]["current"] for g in data["gpus"])


def test_the_single_profile_has_mig_devices_of_one_profile_on_every_gpu() -> None:
    data = load_profile("a100-single-8")
    assert all(g["mig"]["current"] and g["mig_devices"] for g in data["gpus"])
    assert {m["profile"] for _, m in layouts(data)} == {"1g.5gb"}


def test_the_h100_profile_has_a_gpu_whose_mig_mode_is_pending_but_not_current(mock_nvml: MockNvml) -> None:
    data = mock_nvml.use("h100-mig-8").profile
    pynvml.nvmlInit()
    pending = [i for i, g in enumerate(data["gpus"]) if g["mig"] == {**g["mig"], "current": 0, "pending": 1}]
    assert pending
    assert pynvml.nvmlDeviceGetMigMode(pynvml.nvmlDeviceGetHandleByIndex(pending[0])) == [0, 1]


def test_mig_devices_without_attributes_in_the_profile_get_them_from_the_catalogue(mock_nvml: MockNvml) -> None:
    data = mock_nvml.use("h100-mig-8").profile
    pynvml.nvmlInit()
    catalogue = data["mig_catalogues"]["h100-sxm5-80gb"]["gpu_instance_profiles"]
    seven = next(p for p in catalogue if p["name"] == "7g.80gb")
    mig = next(m for _, m in layouts(data) if m["profile"] == "7g.80gb")
    handle = pynvml.nvmlDeviceGetHandleByUUID(mig["uuid"])
    attrs = pynvml.nvmlDeviceGetAttributes(handle)
    assert (attrs.multiprocessorCount, attrs.sharedCopyEngineCount, attrs.sharedDecoderCount, attrs.sharedJpegCount,
            attrs.sharedOfaCount, attrs.gpuInstanceSliceCount, attrs.computeInstanceSliceCount,
            attrs.memorySizeMB) == (seven["multiprocessors"], seven["copy_engines"], seven["decoders"], seven["jpegs"],
                                    seven["ofas"], 7, 7, seven["memory_mb"])
    assert pynvml.nvmlDeviceGetMemoryInfo(handle).total == seven["memory_mb"] * 2**20


# --------------------------------------------------------------------------- instance queries


def test_gpu_instance_profile_info_reports_the_catalogue_in_both_struct_versions(mock_nvml: MockNvml) -> None:
    data = mock_nvml.use("h200-mig-8").profile
    pynvml.nvmlInit()
    parent = pynvml.nvmlDeviceGetHandleByIndex(1)
    for entry in data["mig_catalogues"]["h200-sxm5-141gb"]["gpu_instance_profiles"]:
        position = getattr(pynvml, entry["profile"])
        for version in (1, 2):
            info = pynvml.nvmlDeviceGetGpuInstanceProfileInfo(parent, position, version)
            assert (info.id, info.sliceCount, info.instanceCount, info.multiprocessorCount, info.memorySizeMB) == (
                entry["id"], entry["slices"], entry["instances"], entry["multiprocessors"], entry["memory_mb"])
        assert text(pynvml.nvmlDeviceGetGpuInstanceProfileInfo(parent, position).name) == f"MIG {entry['name']}"


def test_gpu_instance_profiles_outside_the_catalogue_are_not_supported(mock_nvml: MockNvml) -> None:
    mock_nvml.use("h100-mig-8")
    pynvml.nvmlInit()
    parent = pynvml.nvmlDeviceGetHandleByIndex(3)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetGpuInstanceProfileInfo(parent, pynvml.NVML_GPU_INSTANCE_PROFILE_8_SLICE)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlDeviceGetGpuInstanceProfileInfo(parent, pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT)


def test_instance_queries_on_a_gpu_with_mig_disabled_are_not_supported(mock_nvml: MockNvml) -> None:
    mock_nvml.use("h100-mig-8")
    pynvml.nvmlInit()
    parent = pynvml.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetGpuInstanceProfileInfo(parent, pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetGpuInstanceById(parent, 0)


def test_a_versioned_profile_info_with_a_wrong_version_is_an_invalid_argument(mock_nvml: MockNvml) -> None:
    mock_nvml.use("h100-mig-8")
    pynvml.nvmlInit()
    info = pynvml.c_nvmlGpuInstanceProfileInfo_v2_t()
    info.version = 7
    fn = pynvml.nvmlLib.nvmlDeviceGetGpuInstanceProfileInfoV
    assert fn(pynvml.nvmlDeviceGetHandleByIndex(3), 0, ctypes.byref(info)) == pynvml.NVML_ERROR_INVALID_ARGUMENT


def test_gpu_instance_info_gives_the_profile_id_and_the_memory_slices_of_its_id(mock_nvml: MockNvml) -> None:
    data = mock_nvml.use("h100-mig-8").profile
    pynvml.nvmlInit()
    parent = pynvml.nvmlDeviceGetHandleByIndex(6)  # 4g.40gb + 3g.40gb
    ids = {p["name"]: p["id"] for p in data["mig_catalogues"]["h100-sxm5-80gb"]["gpu_instance_profiles"]}
    placements = {}
    for mig in data["gpus"][6]["mig_devices"]:
        info = pynvml.nvmlGpuInstanceGetInfo(pynvml.nvmlDeviceGetGpuInstanceById(parent, mig["gpu_instance_id"]))
        assert (info.id, info.profileId, addr(info.device)) == (mig["gpu_instance_id"], ids[mig["profile"]],
                                                                 addr(parent))
        placements[mig["profile"]] = (info.placement.start, info.placement.size)
    assert placements == {"4g.40gb": (0, 4), "3g.40gb": (4, 4)}


def test_compute_instances_sharing_a_gpu_instance_each_get_their_slices(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("h100-mig-8")
    planned = node.control.mig(5, devices=[("1c.3g.40gb", "2c.3g.40gb"), "3g.40gb"])
    pynvml.nvmlInit()
    gi = pynvml.nvmlDeviceGetGpuInstanceById(pynvml.nvmlDeviceGetHandleByIndex(5), planned[0]["gpu_instance_id"])
    infos = [pynvml.nvmlComputeInstanceGetInfo(pynvml.nvmlGpuInstanceGetComputeInstanceById(gi, ci)) for ci in (0, 1)]
    assert [(i.id, i.placement.start, i.placement.size) for i in infos] == [(0, 0, 1), (1, 1, 2)]
    assert [addr(i.gpuInstance) for i in infos] == [addr(gi)] * 2
    assert [upstream_profile(mig_handles(5)[m["uuid"]]) for m in planned] == ["1c.3g.40gb", "2c.3g.40gb", "3g.40gb"]


def test_get_gpu_instances_lists_the_instances_of_one_profile_in_id_order(mock_nvml: MockNvml) -> None:
    data = mock_nvml.use("h100-mig-8").profile
    pynvml.nvmlInit()
    parent = pynvml.nvmlDeviceGetHandleByIndex(3)  # 7x 1g.10gb
    handles = (pynvml.c_nvmlGpuInstance_t * 7)()
    count = ctypes.c_uint()
    pynvml.nvmlDeviceGetGpuInstances(parent, 19, handles, ctypes.byref(count))
    ids = [pynvml.nvmlGpuInstanceGetInfo(handles[i]).id for i in range(count.value)]
    assert ids == sorted(m["gpu_instance_id"] for m in data["gpus"][3]["mig_devices"])


def test_unknown_instance_ids_are_not_found(mock_nvml: MockNvml) -> None:
    mock_nvml.use("h100-mig-8")
    pynvml.nvmlInit()
    parent = pynvml.nvmlDeviceGetHandleByIndex(7)  # 7g.80gb: GI 0, CI 0
    with pytest.raises(pynvml.NVMLError_NotFound):
        pynvml.nvmlDeviceGetGpuInstanceById(parent, 1)
    with pytest.raises(pynvml.NVMLError_NotFound):
        pynvml.nvmlGpuInstanceGetComputeInstanceById(pynvml.nvmlDeviceGetGpuInstanceById(parent, 0), 1)


def test_possible_placements_come_from_the_catalogue_whatever_the_mig_mode(mock_nvml: MockNvml) -> None:
    mock_nvml.use("h100-mig-8")
    pynvml.nvmlInit()
    placements = (pynvml.c_nvmlGpuInstancePlacement_t * 8)()
    count = ctypes.c_uint()
    pynvml.nvmlDeviceGetGpuInstancePossiblePlacements(pynvml.nvmlDeviceGetHandleByIndex(0), 9, placements,
                                                      ctypes.byref(count))
    assert [(placements[i].start, placements[i].size) for i in range(count.value)] == [(0, 4), (4, 4)]


def test_a_call_fault_can_target_a_gpu_instance_query(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("h100-mig-8")
    node.control.fail("nvmlGpuInstanceGetInfo", 7, "NVML_ERROR_UNKNOWN")
    pynvml.nvmlInit()
    with pytest.raises(pynvml.NVMLError_Unknown):
        pynvml.nvmlGpuInstanceGetInfo(pynvml.nvmlDeviceGetGpuInstanceById(pynvml.nvmlDeviceGetHandleByIndex(7), 0))


# --------------------------------------------------------------------------- profile validation


def _broken(change: Any) -> dict[str, Any]:
    profile = load_profile("h100-mig-8")
    change(profile)
    return profile


BROKEN_MIG = {
    "unknown-profile": (lambda p: p["gpus"][7]["mig_devices"][0].update(profile="5g.60gb"),
                        "no such GPU instance profile"),
    "misplaced-instance": (lambda p: p["gpus"][7]["mig_devices"][0].update(gpu_instance_id=1),
                           "does not span the 8 memory slices of 7g.80gb"),
    "overlapping-instances": (lambda p: p["gpus"][5]["mig_devices"][1].update(gpu_instance_id=1, compute_instance_id=1),
                              "more than its 3 slices"),
    "contradicting-attributes": (lambda p: p["gpus"][7]["mig_devices"][0].update(attributes={
        "multiprocessor_count": 1, "shared_copy_engine_count": 8, "shared_decoder_count": 7,
        "shared_encoder_count": 0, "shared_jpeg_count": 7, "shared_ofa_count": 1, "gpu_instance_slice_count": 7,
        "compute_instance_slice_count": 7, "memory_size_mb": 81152}), "attributes: differ from what the catalogue"),
    "unknown-catalogue": (lambda p: p["gpus"][0]["mig"].update(catalogue="h100-pcie"), 'not a key of "mig_catalogues"'),
}


@pytest.mark.parametrize(("change", "problem"), BROKEN_MIG.values(), ids=BROKEN_MIG.keys())
def test_a_mig_layout_the_catalogue_cannot_hold_fails_init_and_says_why(
    mock_nvml: MockNvml, capfd: pytest.CaptureFixture[str], change: Any, problem: str
) -> None:
    mock_nvml.use(_broken(change))
    with pytest.raises(pynvml.NVMLError_Unknown):
        pynvml.nvmlInit()
    assert problem in capfd.readouterr().err


# --------------------------------------------------------------------------- run-time re-layouts


def test_a_mig_command_replaces_the_gpus_mig_devices_for_the_next_call(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("h100-mig-8")
    pynvml.nvmlInit()
    planned = node.control.mig(7, devices=["4g.40gb", "2g.20gb", "1g.10gb"])
    assert {u: upstream_profile(h) for u, h in mig_handles(7).items()} == {m["uuid"]: m["profile"] for m in planned}


RELAYOUT_SEEN_IN_SUBPROCESS = """
import pynvml
pynvml.nvmlInit()
parent = pynvml.nvmlDeviceGetHandleByIndex(7)
print(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetMigDeviceHandleByIndex(parent, 0)))
"""


def test_a_mig_command_is_seen_by_another_process(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("h100-mig-8")
    planned = node.control.mig(7, devices=["3g.40gb"])
    out = subprocess.run([sys.executable, "-c", RELAYOUT_SEEN_IN_SUBPROCESS], env=node.env(), capture_output=True,
                         text=True, check=True, timeout=30).stdout
    assert out.strip() == planned[0]["uuid"]


def test_mig_device_and_instance_handles_from_before_a_relayout_are_invalid_afterwards(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("h100-mig-8")
    pynvml.nvmlInit()
    parent = pynvml.nvmlDeviceGetHandleByIndex(7)
    old_mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(parent, 0)
    old_gi = pynvml.nvmlDeviceGetGpuInstanceById(parent, 0)
    node.control.mig(7, devices=["7g.80gb"])  # even the same profile: a new instance
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlDeviceGetUUID(old_mig)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlGpuInstanceGetInfo(old_gi)


def test_a_relayout_leaves_other_gpus_mig_devices_and_handles_alone(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("h100-mig-8")
    pynvml.nvmlInit()
    before = mig_handles(5)
    node.control.mig(7, devices=["3g.40gb"])
    assert {u: text(pynvml.nvmlDeviceGetUUID(h)) for u, h in before.items()} == {u: u for u in before}
    assert set(mig_handles(5)) == {m["uuid"] for m in node.profile["gpus"][5]["mig_devices"]}


def test_the_same_commands_give_the_same_uuids_and_a_new_layout_new_ones(mock_nvml: MockNvml, tmp_path: Path) -> None:
    node = mock_nvml.use("h100-mig-8")
    twin = Control(tmp_path / "twin", profile=node.profile)
    first, again = node.control.mig(7, devices=["7g.80gb"]), twin.mig(7, devices=["7g.80gb"])
    assert first == again
    assert node.control.mig(7, devices=["7g.80gb"])[0]["uuid"] != first[0]["uuid"]


def test_a_pending_mode_change_leaves_the_current_mode_and_devices(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("h100-mig-8")
    pynvml.nvmlInit()
    node.control.mig(3, mode=1, devices=["1g.10gb"] * 7, pending=0)
    assert pynvml.nvmlDeviceGetMigMode(pynvml.nvmlDeviceGetHandleByIndex(3)) == [1, 0]
    assert len(mig_handles(3)) == 7


def test_disabling_mig_removes_the_mig_devices_and_the_max_count(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("h100-mig-8")
    pynvml.nvmlInit()
    node.control.mig(3, mode=0)
    parent = pynvml.nvmlDeviceGetHandleByIndex(3)
    assert pynvml.nvmlDeviceGetMigMode(parent) == [0, 0]
    assert pynvml.nvmlDeviceGetMaxMigDeviceCount(parent) == 0
    with pytest.raises(pynvml.NVMLError_NotFound):
        pynvml.nvmlDeviceGetHandleByUUID(node.profile["gpus"][3]["mig_devices"][0]["uuid"])


def test_enabling_mig_without_devices_gives_a_mig_gpu_with_no_mig_devices(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("h100-sxm-8")
    pynvml.nvmlInit()
    node.control.mig(0, mode=1)
    parent = pynvml.nvmlDeviceGetHandleByIndex(0)
    assert pynvml.nvmlDeviceGetMigMode(parent) == [1, 1]
    assert pynvml.nvmlDeviceGetMaxMigDeviceCount(parent) == 7
    assert mig_handles(0) == {}


def test_an_xid_naming_a_mig_device_of_a_new_layout_carries_its_instance_ids(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("h100-mig-8")
    pynvml.nvmlInit()
    planned = node.control.mig(6, devices=["3g.40gb", "3g.40gb"])
    events = pynvml.nvmlEventSetCreate()
    pynvml.nvmlDeviceRegisterEvents(pynvml.nvmlDeviceGetHandleByIndex(6), pynvml.nvmlEventTypeXidCriticalError, events)
    node.control.xid(planned[1]["uuid"], 79)
    event = pynvml.nvmlEventSetWait_v2(events, 5000)
    assert (event.gpuInstanceId, event.computeInstanceId) == (planned[1]["gpu_instance_id"], 0)


def test_a_relayout_sends_a_mig_config_change_event_to_sets_registered_for_it(mock_nvml: MockNvml) -> None:
    profile = load_profile("h100-mig-8")
    profile["gpus"][7]["supported_events"] = ["nvmlEventTypeXidCriticalError", "nvmlEventMigConfigChange"]
    node = mock_nvml.use(profile)
    pynvml.nvmlInit()
    events = pynvml.nvmlEventSetCreate()
    pynvml.nvmlDeviceRegisterEvents(pynvml.nvmlDeviceGetHandleByIndex(7), pynvml.nvmlEventMigConfigChange, events)
    node.control.mig(7, devices=["4g.40gb"])
    assert pynvml.nvmlEventSetWait_v2(events, 5000).eventType == pynvml.nvmlEventMigConfigChange


REFUSED = {
    "unknown-profile": ("h100-mig-8", 7, 1, ["5g.50gb"]),
    "too-many-slices": ("h100-mig-8", 7, 1, ["7g.80gb", "1g.10gb"]),
    "no-placement-left": ("h100-mig-8", 7, 1, ["1g.20gb"] * 4 + ["1g.10gb"]),
    "full-size-compute-prefix": ("h100-mig-8", 7, 1, ["3c.3g.40gb"]),
    "devices-with-mig-off": ("h100-mig-8", 7, 0, ["1g.10gb"]),
    "gpu-without-mig": ("t4-1", 0, 1, []),
}


@pytest.mark.parametrize(("profile", "gpu", "mode", "devices"), REFUSED.values(), ids=REFUSED.keys())
def test_control_refuses_a_layout_the_gpu_cannot_hold_and_writes_nothing(
    tmp_path: Path, profile: str, gpu: int, mode: int, devices: list[str]
) -> None:
    control = Control(tmp_path / "ctl", profile=load_profile(profile))
    with pytest.raises(ValueError):
        control.mig(gpu, mode, devices)
    assert control.lines() == [] and list(tmp_path.iterdir()) == []


def test_the_mock_ignores_a_mig_line_with_an_impossible_layout_and_says_why(
    mock_nvml: MockNvml, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    node = mock_nvml.use("h100-mig-8")
    layout = tmp_path / "layout.json"  # two 7g.80gb instances: past Control's own planning, as if hand-written
    layout.write_text(json.dumps([{"index": i, "uuid": f"MIG-0000000{i}-0000-0000-0000-000000000000",
                                   "profile": "7g.80gb", "gpu_instance_id": 0, "compute_instance_id": i}
                                  for i in (0, 1)]))
    with node.control_path.open("a") as f:
        f.write(f"mig gpu=7 mode=1 layout={layout}\n")
    pynvml.nvmlInit()
    assert set(mig_handles(7)) == {m["uuid"] for m in node.profile["gpus"][7]["mig_devices"]}
    assert "compute instances of GPU instance 0 need more than its 7 slices" in capfd.readouterr().err


# --------------------------------------------------------------------------- capability files


def test_write_procfs_writes_each_instances_access_file_as_the_driver_does(mock_nvml: MockNvml, tmp_path: Path) -> None:
    node = mock_nvml.use("a100-mig-8")
    root = node.write_procfs(tmp_path / "proc")
    caps = root / "driver/nvidia/capabilities"
    for gpu, mig in layouts(node.profile):
        minor, gi, ci = node.profile["gpus"][gpu]["minor_number"], mig["gpu_instance_id"], mig["compute_instance_id"]
        assert (caps / f"gpu{minor}/mig/gi{gi}/access").read_text() == (
            f"DeviceFileMinor: {cap_minor(minor, gi)}\nDeviceFileMode: 292\nDeviceFileModify: 1\n")
        assert (caps / f"gpu{minor}/mig/gi{gi}/ci{ci}/access").read_text().startswith(
            f"DeviceFileMinor: {cap_minor(minor, gi, ci)}\n")


def test_capability_minors_match_the_drivers_mig_minors_table_and_are_unique(
    mock_nvml: MockNvml, tmp_path: Path
) -> None:
    node = mock_nvml.use("a100-mig-8")
    root = node.write_procfs(tmp_path / "proc")
    table = dict(line.rsplit(" ", 1) for line in (root / MIG_MINORS_FILE).read_text().splitlines())
    assert (table["gpu0/gi0/access"], table["gpu3/gi3/ci3/access"], table["gpu6/gi11/ci7/access"]) == (
        "3", "439", "920")  # as a real driver numbers them
    files = [p for p in (root / "driver/nvidia/capabilities").rglob("access")]
    minors = [int(p.read_text().split()[1]) for p in files]
    assert len(set(minors)) == len(minors) == 2 * len(layouts(node.profile))


def test_write_procfs_after_a_relayout_removes_the_vanished_instances(mock_nvml: MockNvml, tmp_path: Path) -> None:
    node = mock_nvml.use("h100-mig-8")
    root = node.write_procfs(tmp_path / "proc")
    node.control.mig(3, devices=["7g.80gb"])
    node.write_procfs(root)
    gpu3 = root / "driver/nvidia/capabilities/gpu3/mig"
    assert sorted(str(p.relative_to(gpu3)) for p in gpu3.rglob("access")) == ["gi0/access", "gi0/ci0/access"]


def test_control_mig_with_procfs_shows_both_layouts_while_the_command_lands(
    mock_nvml: MockNvml, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = mock_nvml.use("h100-mig-8")
    root = node.write_procfs(tmp_path / "proc")
    control = node.control
    seen: list[set[str]] = []
    append = control._append
    monkeypatch.setattr(control, "_append", lambda line: (seen.append(
        {str(p.relative_to(root)) for p in root.rglob("access")}), append(line)))
    control.mig(7, devices=["3g.40gb"], procfs=root)
    old, new = "driver/nvidia/capabilities/gpu7/mig/gi0/access", "driver/nvidia/capabilities/gpu7/mig/gi1/access"
    assert {old, new} <= seen[0]
    assert (root / new).exists() and not (root / old).exists()


def test_write_devfs_creates_a_caps_node_per_capability_of_the_layout(mock_nvml: MockNvml, tmp_path: Path) -> None:
    node = mock_nvml.use("a100-mig-8")
    root = node.write_devfs(tmp_path / "dev")
    expected = {1, 2} | {cap_minor(node.profile["gpus"][g]["minor_number"], m["gpu_instance_id"], ci)
                         for g, m in layouts(node.profile) for ci in (None, m["compute_instance_id"])}
    assert {p.name for p in (root / "nvidia-caps").iterdir()} == {f"nvidia-cap{m}" for m in expected}


def test_write_procfs_writes_nothing_for_a_node_without_mig(mock_nvml: MockNvml, tmp_path: Path) -> None:
    root = mock_nvml.use("t4-1").write_procfs(tmp_path / "proc")
    assert list(root.iterdir()) == []
