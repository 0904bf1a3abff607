"""The mock libnvidia-ml.so.1 behaves like NVML, as seen through the real pynvml.

Expected values come from the profile JSON the test selects, never from copies
in this file, so the profiles and the C library are checked against each other.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pynvml
import pytest

from tests.mock_nvml import EXPORTED_SYMBOLS, Control, load_profile, sysfs_bus_id
from tests.mock_nvml import build as build_module
from tests.mock_nvml.environment import build, subprocess_env
from tests.mock_nvml.plugin import MockNvml

GPU_PROFILES = ["h100-sxm-8", "a100-mig-8", "h100-mig-8", "h200-mig-8", "a100-single-8", "t4-1", "none"]
ALL_EVENTS = (
    pynvml.nvmlEventTypeXidCriticalError
    | pynvml.nvmlEventTypeDoubleBitEccError
    | pynvml.nvmlEventTypeSingleBitEccError
)
NO_INSTANCE = 0xFFFFFFFF


def addr(handle: Any) -> int | None:
    """The pointer value of a pynvml handle, so handles can be compared."""
    return ctypes.cast(handle, ctypes.c_void_p).value


def text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def gpus_of(profile: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return list(enumerate(profile["gpus"]))


@pytest.fixture
def nvml(mock_nvml: MockNvml) -> Iterator[MockNvml]:
    """mock_nvml, for tests that call nvmlInit themselves (the fixture balances it afterwards)."""
    yield mock_nvml


@pytest.fixture(params=GPU_PROFILES)
def node(request: pytest.FixtureRequest, mock_nvml: MockNvml) -> Iterator[dict[str, Any]]:
    """Each bundled GPU profile, initialised; yields the parsed profile."""
    handle = mock_nvml.use(request.param)
    pynvml.nvmlInit()
    yield handle.profile


def event_set_for(*indices: int, mask: int = ALL_EVENTS) -> Any:
    event_set = pynvml.nvmlEventSetCreate()
    for i in indices:
        pynvml.nvmlDeviceRegisterEvents(pynvml.nvmlDeviceGetHandleByIndex(i), mask, event_set)
    return event_set


def call(name: str, *args: Any) -> int:
    """A raw call into the loaded library, for arguments pynvml never passes."""
    return int(getattr(pynvml.nvmlLib, name)(*args))


# --------------------------------------------------------------------------- build


def test_the_library_compiles_with_werror_against_the_real_nvml_header(tmp_path: Path) -> None:
    header = build_module.find_nvml_header()
    assert header.name == "nvml.h" and "nvidia" in header.parts
    assert {"-Werror", "-Wall", "-Wextra", "-Wmissing-prototypes"} <= set(build_module.CFLAGS)
    build_module._compile(header, build_module._sources(), tmp_path / "libnvidia-ml.so.1")
    assert (tmp_path / "libnvidia-ml.so.1").stat().st_size > 0


def test_the_build_is_reused_until_a_source_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    shutil.copytree(build_module.SRC_DIR, src)
    monkeypatch.setattr(build_module, "SRC_DIR", src)
    monkeypatch.setattr(build_module, "BUILD_DIR", tmp_path / "build")
    library = build_module.build() / build_module.SONAME
    first = library.stat().st_ino
    assert build_module.build() / build_module.SONAME == library
    assert library.stat().st_ino == first, "an unchanged tree must not be rebuilt"
    (src / "nvml.c").write_text((src / "nvml.c").read_text() + "\n/* changed */\n")
    build_module.build()
    assert library.stat().st_ino != first, "a changed source must be rebuilt (and renamed into place)"
    assert os.readlink(tmp_path / "build" / "libnvidia-ml.so") == "libnvidia-ml.so.1"


def test_the_library_exports_exactly_the_modelled_nvml_symbols() -> None:
    out = subprocess.run(["nm", "-D", "--defined-only", str(build() / "libnvidia-ml.so.1")],
                         capture_output=True, text=True, check=True).stdout
    exported = {line.split()[-1] for line in out.splitlines() if " T " in line}
    assert exported == EXPORTED_SYMBOLS


def test_the_library_has_the_real_soname() -> None:
    out = subprocess.run(["objdump", "-p", str(build() / "libnvidia-ml.so.1")],
                         capture_output=True, text=True, check=True).stdout
    assert "SONAME               libnvidia-ml.so.1" in out


def test_the_plugin_put_the_mock_on_the_loader_path() -> None:
    assert str(build()) in os.environ["LD_LIBRARY_PATH"].split(":")


# --------------------------------------------------------------------------- enumeration


def test_system_versions_match_the_profile(node: dict[str, Any]) -> None:
    assert text(pynvml.nvmlSystemGetDriverVersion()) == node["driver_version"]
    assert text(pynvml.nvmlSystemGetNVMLVersion()) == node["nvml_version"]
    assert pynvml.nvmlSystemGetCudaDriverVersion() == node["cuda_driver_version"]
    assert pynvml.nvmlSystemGetCudaDriverVersion_v2() == node["cuda_driver_version"]


def test_pynvml_counts_exactly_the_profiles_gpus(node: dict[str, Any]) -> None:
    assert pynvml.nvmlDeviceGetCount() == len(node["gpus"])
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlDeviceGetHandleByIndex(len(node["gpus"]))


def test_each_gpu_reports_the_profiles_identity(node: dict[str, Any]) -> None:
    for i, gpu in gpus_of(node):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        assert text(pynvml.nvmlDeviceGetName(h)) == gpu["name"]
        assert text(pynvml.nvmlDeviceGetUUID(h)) == gpu["uuid"]
        assert pynvml.nvmlDeviceGetIndex(h) == i
        assert pynvml.nvmlDeviceGetMinorNumber(h) == gpu["minor_number"]
        assert pynvml.nvmlDeviceGetBrand(h) == getattr(pynvml, gpu["brand"])
        assert pynvml.nvmlDeviceGetCudaComputeCapability(h) == tuple(gpu["compute_capability"])
        assert pynvml.nvmlDeviceIsMigDeviceHandle(h).value == 0


def test_each_gpu_reports_the_profiles_pci_info(node: dict[str, Any]) -> None:
    for i, gpu in gpus_of(node):
        pci = pynvml.nvmlDeviceGetPciInfo(pynvml.nvmlDeviceGetHandleByIndex(i))
        bus_id = gpu["pci"]["bus_id"]
        domain, bus, rest = bus_id.split(":")
        assert text(pci.busId) == bus_id
        assert text(pci.busIdLegacy) == f"{int(domain, 16):04X}:{bus}:{rest}"
        assert (pci.domain, pci.bus, pci.device) == (int(domain, 16), int(bus, 16), int(rest.split(".")[0], 16))
        assert pci.pciDeviceId == int(gpu["pci"]["device_id"], 16)
        assert pci.pciSubSystemId == int(gpu["pci"]["subsystem_id"], 16)


def test_each_gpu_reports_the_profiles_memory_in_both_struct_versions(node: dict[str, Any]) -> None:
    for i, gpu in gpus_of(node):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        m, v1 = gpu["memory"], pynvml.nvmlDeviceGetMemoryInfo(h)
        assert (v1.total, v1.free, v1.used) == (m["total"], m["free"], m["used"])
        v2 = pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2)
        assert (v2.total, v2.reserved, v2.free, v2.used) == (m["total"], m["reserved"], m["free"],
                                                             m["used"] - m["reserved"])


def test_each_gpu_is_found_by_uuid_and_by_pci_bus_id(node: dict[str, Any]) -> None:
    for i, gpu in gpus_of(node):
        by_index = addr(pynvml.nvmlDeviceGetHandleByIndex(i))
        assert addr(pynvml.nvmlDeviceGetHandleByUUID(gpu["uuid"])) == by_index
        assert addr(pynvml.nvmlDeviceGetHandleByPciBusId(gpu["pci"]["bus_id"])) == by_index
        assert addr(pynvml.nvmlDeviceGetHandleByPciBusId(sysfs_bus_id(gpu["pci"]["bus_id"]))) == by_index


def test_mig_mode_is_reported_where_the_profile_has_it_and_not_supported_elsewhere(node: dict[str, Any]) -> None:
    for i, gpu in gpus_of(node):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        if "mig" in gpu:
            assert pynvml.nvmlDeviceGetMigMode(h) == [gpu["mig"]["current"], gpu["mig"]["pending"]]
        else:
            with pytest.raises(pynvml.NVMLError_NotSupported):
                pynvml.nvmlDeviceGetMigMode(h)
            assert pynvml.nvmlDeviceGetMaxMigDeviceCount(h) == 0


def test_unknown_uuids_and_bus_ids_are_not_found(node: dict[str, Any]) -> None:
    with pytest.raises(pynvml.NVMLError_NotFound):
        pynvml.nvmlDeviceGetHandleByUUID("GPU-00000000-0000-0000-0000-000000000000")
    with pytest.raises(pynvml.NVMLError_NotFound):
        pynvml.nvmlDeviceGetHandleByPciBusId("00000000:FF:1F.0")
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlDeviceGetHandleByPciBusId("not-a-bus-id")


def test_a_too_small_buffer_gets_insufficient_size(mock_nvml: MockNvml) -> None:
    name = mock_nvml.use("t4-1").profile["gpus"][0]["name"]
    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    buf = ctypes.create_string_buffer(len(name))  # one byte short of the terminator
    assert call("nvmlDeviceGetName", h, buf, ctypes.c_uint(len(name))) == pynvml.NVML_ERROR_INSUFFICIENT_SIZE
    assert call("nvmlDeviceGetName", h, None, ctypes.c_uint(96)) == pynvml.NVML_ERROR_INVALID_ARGUMENT


def test_memory_info_v2_rejects_a_wrong_struct_version(mock_nvml: MockNvml) -> None:
    mock_nvml.use("t4-1")
    pynvml.nvmlInit()
    memory = pynvml.c_nvmlMemory_v2_t()
    memory.version = 1
    rc = call("nvmlDeviceGetMemoryInfo_v2", pynvml.nvmlDeviceGetHandleByIndex(0), ctypes.byref(memory))
    assert rc == pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH


# --------------------------------------------------------------------------- MIG


def mig_gpus(profile: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return [(i, g) for i, g in gpus_of(profile) if g.get("mig_devices")]


def test_mig_devices_enumerate_with_their_instance_ids_and_profile(mock_nvml: MockNvml) -> None:
    profile = mock_nvml.use("a100-mig-8").profile
    pynvml.nvmlInit()
    assert mig_gpus(profile), "the a100-mig-8 profile must have MIG devices"
    for i, gpu in mig_gpus(profile):
        parent = pynvml.nvmlDeviceGetHandleByIndex(i)
        by_index = {m["index"]: m for m in gpu["mig_devices"]}
        for index in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(parent)):
            if index not in by_index:
                with pytest.raises(pynvml.NVMLError_NotFound):
                    pynvml.nvmlDeviceGetMigDeviceHandleByIndex(parent, index)
                continue
            mig = by_index[index]
            h = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(parent, index)
            assert pynvml.nvmlDeviceIsMigDeviceHandle(h).value == 1
            assert text(pynvml.nvmlDeviceGetUUID(h)) == mig["uuid"]
            assert text(pynvml.nvmlDeviceGetName(h)) == f"{gpu['name']} MIG {mig['profile']}"
            assert pynvml.nvmlDeviceGetIndex(h) == index
            assert pynvml.nvmlDeviceGetGpuInstanceId(h) == mig["gpu_instance_id"]
            assert pynvml.nvmlDeviceGetComputeInstanceId(h) == mig["compute_instance_id"]
            assert addr(pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(h)) == addr(parent)
            assert pynvml.nvmlDeviceGetMemoryInfo(h).total == mig["memory"]["total"]


def test_mig_device_attributes_match_the_profile(mock_nvml: MockNvml) -> None:
    profile = mock_nvml.use("a100-mig-8").profile
    pynvml.nvmlInit()
    fields = {"multiprocessor_count": "multiprocessorCount", "shared_copy_engine_count": "sharedCopyEngineCount",
              "shared_decoder_count": "sharedDecoderCount", "shared_encoder_count": "sharedEncoderCount",
              "shared_jpeg_count": "sharedJpegCount", "shared_ofa_count": "sharedOfaCount",
              "gpu_instance_slice_count": "gpuInstanceSliceCount",
              "compute_instance_slice_count": "computeInstanceSliceCount", "memory_size_mb": "memorySizeMB"}
    for _, gpu in mig_gpus(profile):
        for mig in gpu["mig_devices"]:
            attrs = pynvml.nvmlDeviceGetAttributes(pynvml.nvmlDeviceGetHandleByUUID(mig["uuid"]))
            assert {k: getattr(attrs, v) for k, v in fields.items()} == mig["attributes"]


def test_mig_only_queries_on_a_full_gpu_are_not_supported(mock_nvml: MockNvml) -> None:
    mock_nvml.use("a100-mig-8")
    pynvml.nvmlInit()
    gpu = pynvml.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetGpuInstanceId(gpu)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetAttributes(gpu)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(gpu)


# --------------------------------------------------------------------------- topology and NVLink


def test_topology_common_ancestor_follows_the_profile(mock_nvml: MockNvml) -> None:
    profile = mock_nvml.use("a100-mig-8").profile
    pynvml.nvmlInit()
    topo = profile["topology"]
    expected = {(a, b): topo["default"] for a in range(8) for b in range(8) if a != b}
    for section in ("groups", "pairs"):
        for entry in topo[section]:
            expected.update({(a, b): entry["level"] for a in entry["gpus"] for b in entry["gpus"] if a != b})
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(8)]
    actual = {(a, b): pynvml.nvmlDeviceGetTopologyCommonAncestor(handles[a], handles[b]) for a, b in expected}
    assert actual == {k: getattr(pynvml, v) for k, v in expected.items()}


def test_h100_gpus_share_a_numa_node_level_only_within_a_socket(mock_nvml: MockNvml) -> None:
    mock_nvml.use("h100-sxm-8")
    pynvml.nvmlInit()
    h = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(8)]
    assert pynvml.nvmlDeviceGetTopologyCommonAncestor(h[0], h[3]) == pynvml.NVML_TOPOLOGY_NODE
    assert pynvml.nvmlDeviceGetTopologyCommonAncestor(h[3], h[4]) == pynvml.NVML_TOPOLOGY_SYSTEM


def test_nvlinks_report_state_and_remote_pci_device_from_the_profile(mock_nvml: MockNvml) -> None:
    profile = mock_nvml.use("h100-sxm-8").profile
    pynvml.nvmlInit()
    for i, gpu in gpus_of(profile):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        assert len(gpu["nvlinks"]) == 18
        for link in gpu["nvlinks"]:
            assert pynvml.nvmlDeviceGetNvLinkState(h, link["link"]) == pynvml.NVML_FEATURE_ENABLED
            remote = pynvml.nvmlDeviceGetNvLinkRemotePciInfo(h, link["link"])
            assert text(remote.busId) == link["remote_bus_id"]
            assert remote.pciDeviceId == int(link["remote_pci_device_id"], 16)
            assert pynvml.nvmlDeviceGetNvLinkCapability(h, link["link"], pynvml.NVML_NVLINK_CAP_P2P_SUPPORTED) == 1
        with pytest.raises(pynvml.NVMLError_InvalidArgument):
            pynvml.nvmlDeviceGetNvLinkState(h, 18)


def test_a_gpu_without_nvlink_reports_not_supported(mock_nvml: MockNvml) -> None:
    mock_nvml.use("t4-1")
    pynvml.nvmlInit()
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetNvLinkState(pynvml.nvmlDeviceGetHandleByIndex(0), 0)


# --------------------------------------------------------------------------- events


def test_an_xid_on_a_gpu_arrives_with_its_handle_and_no_instance_ids(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("h100-sxm-8")
    pynvml.nvmlInit()
    event_set = event_set_for(*range(8))
    node.control.xid(node.profile["gpus"][5]["uuid"], 79)
    event = pynvml.nvmlEventSetWait(event_set, 2000)
    assert addr(event.device) == addr(pynvml.nvmlDeviceGetHandleByIndex(5))
    assert (event.eventType, event.eventData) == (pynvml.nvmlEventTypeXidCriticalError, 79)
    assert (event.gpuInstanceId, event.computeInstanceId) == (NO_INSTANCE, NO_INSTANCE)


@pytest.mark.parametrize("by_mig_uuid", [True, False], ids=["named-by-mig-uuid", "explicit-gi-ci"])
def test_an_xid_on_a_mig_device_arrives_on_its_parent_with_gpu_and_compute_instance_ids(
    mock_nvml: MockNvml, by_mig_uuid: bool
) -> None:
    node = mock_nvml.use("a100-mig-8")
    pynvml.nvmlInit()
    gpu = node.profile["gpus"][5]
    mig = gpu["mig_devices"][2]
    event_set = event_set_for(5)
    if by_mig_uuid:
        node.control.xid(mig["uuid"], 43)
    else:
        node.control.xid(5, 43, gi=mig["gpu_instance_id"], ci=mig["compute_instance_id"])
    event = pynvml.nvmlEventSetWait(event_set, 2000)
    assert addr(event.device) == addr(pynvml.nvmlDeviceGetHandleByUUID(gpu["uuid"]))
    assert event.eventData == 43
    assert (event.gpuInstanceId, event.computeInstanceId) == (mig["gpu_instance_id"], mig["compute_instance_id"])


def test_events_for_unregistered_devices_are_not_delivered(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("h100-sxm-8")
    pynvml.nvmlInit()
    event_set = event_set_for(0)
    node.control.xid(1, 79)
    with pytest.raises(pynvml.NVMLError_Timeout):
        pynvml.nvmlEventSetWait(event_set, 50)
    node.control.xid(0, 48)
    assert pynvml.nvmlEventSetWait(event_set, 2000).eventData == 48


def test_event_types_outside_the_registered_mask_are_not_delivered(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("t4-1")
    pynvml.nvmlInit()
    event_set = event_set_for(0, mask=pynvml.nvmlEventTypeXidCriticalError)
    node.control.ecc(0, double_bit=True)
    with pytest.raises(pynvml.NVMLError_Timeout):
        pynvml.nvmlEventSetWait(event_set, 50)


@pytest.mark.parametrize("double_bit", [True, False], ids=["double-bit", "single-bit"])
def test_an_ecc_event_carries_its_type_and_no_xid(mock_nvml: MockNvml, double_bit: bool) -> None:
    node = mock_nvml.use("t4-1")
    pynvml.nvmlInit()
    event_set = event_set_for(0)
    node.control.ecc(0, double_bit=double_bit)
    event = pynvml.nvmlEventSetWait(event_set, 2000)
    want = pynvml.nvmlEventTypeDoubleBitEccError if double_bit else pynvml.nvmlEventTypeSingleBitEccError
    assert (event.eventType, event.eventData) == (want, 0)


def test_events_injected_before_the_set_was_created_are_not_delivered(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("t4-1")
    pynvml.nvmlInit()
    node.control.xid(0, 79)
    event_set = event_set_for(0)
    with pytest.raises(pynvml.NVMLError_Timeout):
        pynvml.nvmlEventSetWait(event_set, 50)


def test_each_event_is_delivered_once_per_set_in_order(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("h100-sxm-8")
    pynvml.nvmlInit()
    first, second = event_set_for(0, 1), event_set_for(0, 1)
    node.control.xid(0, 31)
    node.control.xid(1, 63)
    for event_set in (first, second):
        assert [pynvml.nvmlEventSetWait(event_set, 2000).eventData for _ in range(2)] == [31, 63]
        with pytest.raises(pynvml.NVMLError_Timeout):
            pynvml.nvmlEventSetWait(event_set, 20)


def test_registering_event_types_the_gpu_does_not_support_fails_with_not_supported(mock_nvml: MockNvml) -> None:
    profile = load_profile("t4-1")
    profile["gpus"][0]["supported_events"] = ["nvmlEventTypeXidCriticalError"]
    mock_nvml.use(profile)
    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    assert pynvml.nvmlDeviceGetSupportedEventTypes(h) == pynvml.nvmlEventTypeXidCriticalError
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceRegisterEvents(h, ALL_EVENTS, pynvml.nvmlEventSetCreate())


def test_a_profiles_register_events_error_is_returned(mock_nvml: MockNvml) -> None:
    profile = load_profile("t4-1")
    profile["gpus"][0]["register_events_error"] = "NVML_ERROR_UNKNOWN"
    mock_nvml.use(profile)
    pynvml.nvmlInit()
    with pytest.raises(pynvml.NVMLError_Unknown):
        event_set_for(0, mask=pynvml.nvmlEventTypeXidCriticalError)


def test_wait_times_out_after_about_the_timeout_without_busy_waiting(mock_nvml: MockNvml) -> None:
    mock_nvml.use("h100-sxm-8")
    pynvml.nvmlInit()
    event_set = event_set_for(*range(8))
    wall, cpu = time.monotonic(), time.process_time()
    with pytest.raises(pynvml.NVMLError_Timeout):
        pynvml.nvmlEventSetWait(event_set, 500)
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    assert 0.49 <= wall < 1.0
    assert cpu < 0.15, f"a 500 ms wait used {cpu * 1000:.0f} ms of CPU: busy loop?"


def test_an_event_wakes_a_blocked_wait_within_a_poll_interval(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("t4-1")
    pynvml.nvmlInit()
    event_set = event_set_for(0)
    injector = threading.Timer(0.1, node.control.xid, args=(0, 79))
    injector.start()
    start = time.monotonic()
    event = pynvml.nvmlEventSetWait(event_set, 5000)
    injector.join()
    assert event.eventData == 79
    assert time.monotonic() - start < 0.5


def test_injected_wait_errors_fail_exactly_the_next_n_waits(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("t4-1")
    pynvml.nvmlInit()
    event_set = event_set_for(0)
    node.control.wait_errors("NVML_ERROR_UNKNOWN", 2)
    for _ in range(2):
        with pytest.raises(pynvml.NVMLError_Unknown):
            pynvml.nvmlEventSetWait(event_set, 1000)
    with pytest.raises(pynvml.NVMLError_Timeout):
        pynvml.nvmlEventSetWait(event_set, 20)


def test_forever_wait_errors_persist_until_cleared(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("t4-1")
    pynvml.nvmlInit()
    event_set = event_set_for(0)
    node.control.wait_errors("NVML_ERROR_GPU_IS_LOST", -1)
    for _ in range(5):
        with pytest.raises(pynvml.NVMLError_GpuIsLost):
            pynvml.nvmlEventSetWait(event_set, 1000)
    node.control.clear()
    with pytest.raises(pynvml.NVMLError_Timeout):
        pynvml.nvmlEventSetWait(event_set, 20)


WAIT_IN_SUBPROCESS = """
import pynvml
pynvml.nvmlInit()
s = pynvml.nvmlEventSetCreate()
try:
    pynvml.nvmlEventSetWait(s, 1000)
except pynvml.NVMLError as e:
    print(type(e).__name__)
"""


def test_injected_wait_errors_are_counted_across_processes(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("t4-1")
    node.control.wait_errors("NVML_ERROR_UNKNOWN", 1)
    out = subprocess.run([sys.executable, "-c", WAIT_IN_SUBPROCESS], env=node.env(), capture_output=True,
                         text=True, check=True, timeout=30).stdout
    assert out.strip() == "NVMLError_Unknown"
    pynvml.nvmlInit()
    with pytest.raises(pynvml.NVMLError_Timeout):
        pynvml.nvmlEventSetWait(event_set_for(0), 20)


# --------------------------------------------------------------------------- hung waits


class WaitInThread:
    """One nvmlEventSetWait on a thread; ``outcome`` is the event or the NVMLError it raised."""

    def __init__(self, event_set: Any, timeout_ms: int) -> None:
        self.outcome: Any = None
        self._thread = threading.Thread(target=self._run, args=(event_set, timeout_ms), daemon=True)
        self._thread.start()

    def _run(self, event_set: Any, timeout_ms: int) -> None:
        try:
            self.outcome = pynvml.nvmlEventSetWait_v2(event_set, timeout_ms)
        except pynvml.NVMLError as err:
            self.outcome = err

    def join(self, timeout: float = 10.0) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the wait did not return within {timeout} s"
        return self.outcome


def wait_hang_taken(control: Control, count: int = 1) -> None:
    """Until ``count`` hangs were claimed: the claim is written before the wait blocks."""
    deadline = time.monotonic() + 10
    while control.consumed("wait_hang") < count:
        assert time.monotonic() < deadline, f"no wait took the hang; control file: {control.lines()}"
        time.sleep(0.005)


def test_a_hung_wait_blocks_for_the_hang_whatever_its_timeout_then_times_out(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("t4-1")
    pynvml.nvmlInit()
    event_set = event_set_for(0)
    node.control.wait_hang(ms=400)
    start = time.monotonic()
    with pytest.raises(pynvml.NVMLError_Timeout):
        pynvml.nvmlEventSetWait_v2(event_set, 10)
    assert time.monotonic() - start >= 0.4


def test_clear_ends_a_hung_wait_early(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("t4-1")
    pynvml.nvmlInit()
    node.control.wait_hang(ms=600_000)
    waiter = WaitInThread(event_set_for(0), 10)
    wait_hang_taken(node.control)
    node.control.clear()
    assert isinstance(waiter.join(), pynvml.NVMLError_Timeout)


def test_an_event_injected_during_a_hang_is_delivered_when_it_ends(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("t4-1")
    pynvml.nvmlInit()
    node.control.wait_hang(ms=600_000)
    waiter = WaitInThread(event_set_for(0), 10)
    wait_hang_taken(node.control)
    node.control.xid(0, 79)
    node.control.clear()
    assert waiter.join().eventData == 79


def test_a_hung_wait_leaves_other_nvml_calls_answering(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("t4-1")
    pynvml.nvmlInit()
    node.control.wait_hang(ms=600_000)
    waiter = WaitInThread(event_set_for(0), 10)
    wait_hang_taken(node.control)
    answered: list[str] = []
    query = threading.Thread(
        target=lambda: answered.append(text(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(0)))),
        daemon=True,
    )
    query.start()
    query.join(10)
    node.control.clear()
    waiter.join()
    assert answered == [node.profile["gpus"][0]["uuid"]], "a query waited for the hung wait's lock"


def test_a_counted_hang_hangs_exactly_the_next_n_waits(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("t4-1")
    pynvml.nvmlInit()
    event_set = event_set_for(0)
    node.control.wait_hang(ms=300, count=2)
    for _ in range(2):
        start = time.monotonic()
        with pytest.raises(pynvml.NVMLError_Timeout):
            pynvml.nvmlEventSetWait_v2(event_set, 10)
        assert time.monotonic() - start >= 0.3
    with pytest.raises(pynvml.NVMLError_Timeout):
        pynvml.nvmlEventSetWait_v2(event_set, 10)
    assert node.control.consumed("wait_hang") == 2


def test_a_forever_hang_hangs_every_wait_until_cleared(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("t4-1")
    pynvml.nvmlInit()
    event_set = event_set_for(0)
    node.control.wait_hang(ms=200, count=-1)
    for _ in range(3):
        start = time.monotonic()
        with pytest.raises(pynvml.NVMLError_Timeout):
            pynvml.nvmlEventSetWait_v2(event_set, 10)
        assert time.monotonic() - start >= 0.2
    node.control.clear()
    node.control.xid(0, 79)
    assert pynvml.nvmlEventSetWait_v2(event_set, 5000).eventData == 79


def test_a_hang_with_count_zero_cancels_the_pending_one(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("t4-1")
    pynvml.nvmlInit()
    node.control.wait_hang(ms=600_000)
    node.control.wait_hang(ms=600_000, count=0)
    event_set = event_set_for(0)
    node.control.xid(0, 79)
    assert WaitInThread(event_set, 5000).join().eventData == 79


def test_counted_hangs_are_counted_across_processes(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("t4-1")
    node.control.wait_hang(ms=200, count=1)
    out = subprocess.run([sys.executable, "-c", WAIT_IN_SUBPROCESS], env=node.env(), capture_output=True,
                         text=True, check=True, timeout=30).stdout
    assert out.strip() == "NVMLError_Timeout"
    assert node.control.consumed("wait_hang") == 1
    pynvml.nvmlInit()
    event_set = event_set_for(0)
    node.control.xid(0, 79)
    assert WaitInThread(event_set, 5000).join().eventData == 79, "the one hang was the child's"


def test_a_shutdown_ends_a_hung_wait_with_uninitialized(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("t4-1")
    pynvml.nvmlInit()
    node.control.wait_hang(ms=600_000)
    waiter = WaitInThread(event_set_for(0), 10)
    wait_hang_taken(node.control)
    pynvml.nvmlShutdown()
    assert isinstance(waiter.join(), pynvml.NVMLError_Uninitialized)


def test_the_mock_ignores_a_wait_hang_line_without_a_length_and_says_why(
    mock_nvml: MockNvml, capfd: pytest.CaptureFixture[str]
) -> None:
    node = mock_nvml.use("t4-1")
    with node.control_path.open("a") as f:  # past Control's own check, as a hand-written line would be
        f.write("wait_hang ms=0\n")
    pynvml.nvmlInit()
    with pytest.raises(pynvml.NVMLError_Timeout):
        pynvml.nvmlEventSetWait_v2(event_set_for(0), 10)
    assert node.control.consumed("wait_hang") == 0
    assert "expected ms=<n >= 1> [count=<n or -1>]" in capfd.readouterr().err


@pytest.mark.parametrize(("ms", "count"), [(0, 1), (-5, 1), (100, -2), (True, 1)],
                         ids=["zero-ms", "negative-ms", "count-below-minus-one", "bool-ms"])
def test_control_rejects_a_hang_that_could_never_happen(tmp_path: Path, ms: Any, count: Any) -> None:
    control = Control(tmp_path / "ctl")
    with pytest.raises(ValueError):
        control.wait_hang(ms=ms, count=count)
    assert control.lines() == []


# --------------------------------------------------------------------------- lost GPUs


LOST_QUERIES = {
    "name": pynvml.nvmlDeviceGetName,
    "uuid": pynvml.nvmlDeviceGetUUID,
    "pci-info": pynvml.nvmlDeviceGetPciInfo,
    "memory": pynvml.nvmlDeviceGetMemoryInfo,
    "minor-number": pynvml.nvmlDeviceGetMinorNumber,
    "supported-events": pynvml.nvmlDeviceGetSupportedEventTypes,
}


@pytest.mark.parametrize("query", LOST_QUERIES.values(), ids=LOST_QUERIES.keys())
def test_a_lost_gpu_makes_queries_on_its_handle_raise_gpu_is_lost(mock_nvml: MockNvml, query: Any) -> None:
    node = mock_nvml.use("h100-sxm-8")
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(2)
    node.control.lose(2)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        query(handle)


def test_a_lost_gpu_cannot_be_looked_up_but_its_neighbours_can(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("h100-sxm-8")
    node.control.lose(node.profile["gpus"][2]["uuid"])
    pynvml.nvmlInit()
    assert pynvml.nvmlDeviceGetCount() == 8
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        pynvml.nvmlDeviceGetHandleByIndex(2)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        pynvml.nvmlDeviceGetHandleByUUID(node.profile["gpus"][2]["uuid"])
    assert text(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(3))) == node.profile["gpus"][3]["uuid"]


def test_a_lost_gpu_takes_its_mig_devices_with_it(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("a100-mig-8")
    pynvml.nvmlInit()
    mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(pynvml.nvmlDeviceGetHandleByIndex(4), 0)
    node.control.lose(4)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        pynvml.nvmlDeviceGetUUID(mig)


def test_clear_brings_a_lost_gpu_back(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("t4-1")
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    node.control.lose(0)
    node.control.clear()
    assert text(pynvml.nvmlDeviceGetUUID(handle)) == node.profile["gpus"][0]["uuid"]


# --------------------------------------------------------------------------- call faults


def test_a_call_fault_fails_that_function_on_that_gpu_only(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("h100-sxm-8")
    node.control.fail("nvmlDeviceGetMinorNumber", 3, "NVML_ERROR_GPU_IS_LOST")
    pynvml.nvmlInit()
    lost, neighbour = pynvml.nvmlDeviceGetHandleByIndex(3), pynvml.nvmlDeviceGetHandleByIndex(2)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        pynvml.nvmlDeviceGetMinorNumber(lost)
    assert pynvml.nvmlDeviceGetMinorNumber(neighbour) == node.profile["gpus"][2]["minor_number"]
    assert text(pynvml.nvmlDeviceGetUUID(lost)) == node.profile["gpus"][3]["uuid"]


def test_a_fault_on_a_base_name_covers_its_versioned_variants(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("h100-sxm-8")
    node.control.fail("nvmlDeviceGetHandleByIndex", 3, "NVML_ERROR_GPU_IS_LOST")
    pynvml.nvmlInit()
    with pytest.raises(pynvml.NVMLError_GpuIsLost):  # pynvml calls nvmlDeviceGetHandleByIndex_v2
        pynvml.nvmlDeviceGetHandleByIndex(3)


def test_a_handle_by_index_fault_leaves_the_lookup_by_uuid_working(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("h100-sxm-8")
    node.control.fail("nvmlDeviceGetHandleByIndex", 3, "NVML_ERROR_GPU_IS_LOST")
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByUUID(node.profile["gpus"][3]["uuid"])
    assert pynvml.nvmlDeviceGetIndex(handle) == 3


def test_a_fault_on_a_versioned_name_leaves_the_other_versions_alone(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("t4-1")
    node.control.fail("nvmlDeviceGetPciInfo_v3", 0, "NVML_ERROR_UNKNOWN")
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_Unknown):  # pynvml calls nvmlDeviceGetPciInfo_v3
        pynvml.nvmlDeviceGetPciInfo(handle)
    assert call("nvmlDeviceGetPciInfo_v2", handle, ctypes.byref(pynvml.nvmlPciInfo_t())) == pynvml.NVML_SUCCESS


def test_a_call_fault_reaches_the_gpus_mig_devices(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("a100-mig-8")
    pynvml.nvmlInit()
    mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(pynvml.nvmlDeviceGetHandleByIndex(4), 0)
    node.control.fail("nvmlDeviceGetUUID", 4, "NVML_ERROR_UNKNOWN")
    with pytest.raises(pynvml.NVMLError_Unknown):
        pynvml.nvmlDeviceGetUUID(mig)


def test_a_counted_call_fault_fails_exactly_the_next_n_calls(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("t4-1")
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    node.control.fail("nvmlDeviceGetName", 0, "NVML_ERROR_UNKNOWN", count=2)
    for _ in range(2):
        with pytest.raises(pynvml.NVMLError_Unknown):
            pynvml.nvmlDeviceGetName(handle)
    assert text(pynvml.nvmlDeviceGetName(handle)) == node.profile["gpus"][0]["name"]


MINOR_IN_SUBPROCESS = """
import pynvml
pynvml.nvmlInit()
try:
    pynvml.nvmlDeviceGetMinorNumber(pynvml.nvmlDeviceGetHandleByIndex(0))
except pynvml.NVMLError as e:
    print(type(e).__name__)
"""


def test_counted_call_faults_are_counted_across_processes(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("t4-1")
    node.control.fail("nvmlDeviceGetMinorNumber", 0, "NVML_ERROR_UNKNOWN", count=1)
    out = subprocess.run([sys.executable, "-c", MINOR_IN_SUBPROCESS], env=node.env(), capture_output=True,
                         text=True, check=True, timeout=30).stdout
    assert out.strip() == "NVMLError_Unknown"
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    assert pynvml.nvmlDeviceGetMinorNumber(handle) == node.profile["gpus"][0]["minor_number"]


def test_a_newer_call_fault_replaces_the_older_one(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("t4-1")
    node.control.fail("nvmlDeviceGetMinorNumber", 0, "NVML_ERROR_UNKNOWN")
    node.control.fail("nvmlDeviceGetMinorNumber", 0, "NVML_ERROR_NO_PERMISSION")
    pynvml.nvmlInit()
    with pytest.raises(pynvml.NVMLError_NoPermission):
        pynvml.nvmlDeviceGetMinorNumber(pynvml.nvmlDeviceGetHandleByIndex(0))


def test_a_call_fault_with_count_zero_cancels_it(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("t4-1")
    node.control.fail("nvmlDeviceGetMinorNumber", 0, "NVML_ERROR_UNKNOWN")
    node.control.fail("nvmlDeviceGetMinorNumber", 0, "NVML_ERROR_UNKNOWN", count=0)
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    assert pynvml.nvmlDeviceGetMinorNumber(handle) == node.profile["gpus"][0]["minor_number"]


def test_clear_cancels_call_faults(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("t4-1")
    node.control.fail("nvmlDeviceGetHandleByIndex", 0, "NVML_ERROR_GPU_IS_LOST")
    node.control.clear()
    pynvml.nvmlInit()
    assert text(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(0))) == node.profile["gpus"][0]["uuid"]


def test_the_mock_ignores_a_fail_line_for_a_function_it_does_not_export_and_says_why(
    mock_nvml: MockNvml, capfd: pytest.CaptureFixture[str]
) -> None:
    node = mock_nvml.use("t4-1")
    with node.control_path.open("a") as f:  # past Control's own check, as a hand-written line would be
        f.write("fail fn=nvmlDeviceGetMinorNumbr gpu=0 code=NVML_ERROR_UNKNOWN\n")
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    assert pynvml.nvmlDeviceGetMinorNumber(handle) == node.profile["gpus"][0]["minor_number"]
    assert "fn= must name a per-GPU nvmlDevice* function the mock exports" in capfd.readouterr().err


@pytest.mark.parametrize(
    ("fn", "code"),
    [("nvmlDeviceGetMinorNumbr", "NVML_ERROR_UNKNOWN"), ("nvmlDeviceGetCount", "NVML_ERROR_UNKNOWN"),
     ("nvmlInit", "NVML_ERROR_UNKNOWN"), ("nvmlDeviceGetMinorNumber", "GPU_IS_LOST")],
    ids=["unknown-function", "no-gpu-argument", "not-a-device-function", "bad-error-name"],
)
def test_control_rejects_call_faults_that_could_never_fire(tmp_path: Path, fn: str, code: str) -> None:
    control = Control(tmp_path / "ctl", profile=load_profile("h100-sxm-8"))
    with pytest.raises(ValueError):
        control.fail(fn, 0, code)
    assert control.lines() == []


# --------------------------------------------------------------------------- init, shutdown, failures


def test_the_driver_not_loaded_profile_makes_init_fail_with_driver_not_loaded(mock_nvml: MockNvml) -> None:
    mock_nvml.use("driver-not-loaded")
    with pytest.raises(pynvml.NVMLError_DriverNotLoaded):
        pynvml.nvmlInit()


INIT_IN_SUBPROCESS = """
import pynvml
try:
    pynvml.nvmlInit()
except pynvml.NVMLError as e:
    print(type(e).__name__)
"""


def test_a_missing_driver_makes_init_raise_library_not_found_in_a_subprocess(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("driver-missing")
    env = {**os.environ, **node.env()}  # merging over the parent's environment must still drop the mock
    assert str(build()) not in env["LD_LIBRARY_PATH"].split(":")
    out = subprocess.run([sys.executable, "-c", INIT_IN_SUBPROCESS], env=env, capture_output=True, text=True,
                         check=True, timeout=30).stdout
    assert out.strip() == "NVMLError_LibraryNotFound"


BROKEN_CONFIGS = {
    "missing-file": (None, "cannot open"),
    "invalid-json": ('{"gpus": [', "invalid JSON: line 1"),
    "unknown-key": ('{"driver_version": "1", "nvml_version": "1", "cuda_driver_version": 12040, "gpus": [],'
                    ' "gpu": []}', 'unknown key "gpu"'),
    "missing-key": ('{"nvml_version": "1", "cuda_driver_version": 12040, "gpus": []}',
                    'missing required key "driver_version"'),
}


@pytest.mark.parametrize(("content", "problem"), BROKEN_CONFIGS.values(), ids=BROKEN_CONFIGS.keys())
def test_a_broken_node_description_fails_init_with_unknown_and_says_why(
    mock_nvml: MockNvml, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capfd: pytest.CaptureFixture[str],
    content: str | None, problem: str,
) -> None:
    mock_nvml.use("t4-1")
    config = tmp_path / "broken.json"
    if content is not None:
        config.write_text(content)
    monkeypatch.setenv("MOCK_NVML_CONFIG", str(config))
    with pytest.raises(pynvml.NVMLError_Unknown):
        pynvml.nvmlInit()
    err = capfd.readouterr().err
    assert str(config) in err and problem in err


def test_a_profile_with_inconsistent_memory_is_rejected(mock_nvml: MockNvml, capfd: pytest.CaptureFixture[str]) -> None:
    profile = load_profile("t4-1")
    profile["gpus"][0]["memory"]["free"] += 1
    mock_nvml.use(profile)
    with pytest.raises(pynvml.NVMLError_Unknown):
        pynvml.nvmlInit()
    assert "gpus[0].memory: free" in capfd.readouterr().err


def test_shutdown_without_init_reports_uninitialized(mock_nvml: MockNvml) -> None:
    mock_nvml.use("t4-1")
    pynvml.nvmlInit()  # pynvml needs the library loaded to reach it at all
    pynvml.nvmlShutdown()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        pynvml.nvmlShutdown()


def test_init_is_reference_counted(mock_nvml: MockNvml) -> None:
    mock_nvml.use("t4-1")
    pynvml.nvmlInit()
    pynvml.nvmlInit()
    pynvml.nvmlShutdown()
    assert pynvml.nvmlDeviceGetCount() == 1, "one shutdown after two inits must leave NVML initialised"
    pynvml.nvmlShutdown()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        pynvml.nvmlDeviceGetCount()


def test_the_node_description_is_reread_on_each_init_from_zero(mock_nvml: MockNvml) -> None:
    mock_nvml.use("t4-1")
    pynvml.nvmlInit()
    assert pynvml.nvmlDeviceGetCount() == 1
    pynvml.nvmlShutdown()
    mock_nvml.use("h100-sxm-8")
    pynvml.nvmlInit()
    assert pynvml.nvmlDeviceGetCount() == 8


def test_the_legacy_nvml_init_fails_when_any_gpu_is_lost(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("h100-sxm-8")
    node.control.lose(7)
    pynvml.nvmlInit()  # the current nvmlInit_v2 semantics: lost GPUs fail only their own calls
    assert call("nvmlInit") == pynvml.NVML_SUCCESS  # already initialised: just counted
    pynvml.nvmlShutdown()
    pynvml.nvmlShutdown()
    assert call("nvmlInit") == pynvml.NVML_ERROR_GPU_IS_LOST


def test_an_unimplemented_function_raises_function_not_found(mock_nvml: MockNvml) -> None:
    mock_nvml.use("h100-sxm-8")
    pynvml.nvmlInit()
    with pytest.raises(pynvml.NVMLError_FunctionNotFound):
        pynvml.nvmlDeviceGetTemperature(pynvml.nvmlDeviceGetHandleByIndex(0), pynvml.NVML_TEMPERATURE_GPU)


def test_error_strings_are_nvmls(mock_nvml: MockNvml) -> None:
    mock_nvml.use("t4-1")
    pynvml.nvmlInit()
    assert pynvml.nvmlErrorString(pynvml.NVML_ERROR_GPU_IS_LOST) == "GPU is lost"
    assert pynvml.nvmlErrorString(12345) == "Unknown Error"


# --------------------------------------------------------------------------- helpers


def test_the_call_log_records_every_nvml_call_with_the_pid(mock_nvml: MockNvml) -> None:
    node = mock_nvml.use("t4-1")
    pynvml.nvmlInit()
    pynvml.nvmlDeviceGetCount()
    pynvml.nvmlShutdown()
    assert node.call_records() == [(os.getpid(), "nvmlInitWithFlags"), (os.getpid(), "nvmlDeviceGetCount_v2"),
                                   (os.getpid(), "nvmlShutdown")]
    assert "nvmlEventSetCreate" not in node.calls()


def test_write_sysfs_creates_a_numa_node_file_per_gpu_under_its_sysfs_bus_id(
    mock_nvml: MockNvml, tmp_path: Path
) -> None:
    node = mock_nvml.use("h100-sxm-8")
    root = node.write_sysfs(tmp_path / "sys")
    for gpu in node.profile["gpus"]:
        domain, rest = gpu["pci"]["bus_id"].lower().split(":", 1)
        path = root / "bus/pci/devices" / f"{domain[4:]}:{rest}" / "numa_node"
        assert path.read_text().strip() == str(gpu["numa_node"])


def test_write_sysfs_marks_gpus_without_numa_affinity_with_minus_one(mock_nvml: MockNvml, tmp_path: Path) -> None:
    node = mock_nvml.use("t4-1")
    root = node.write_sysfs(tmp_path / "sys")
    assert (root / "bus/pci/devices/0000:00:1e.0/numa_node").read_text() == "-1\n"


def test_write_devfs_creates_the_control_nodes_and_one_per_minor(mock_nvml: MockNvml, tmp_path: Path) -> None:
    node = mock_nvml.use("h100-sxm-8")
    root = node.write_devfs(tmp_path / "dev")
    minors = [g["minor_number"] for g in node.profile["gpus"]]
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["nvidiactl", "nvidia-uvm", *(f"nvidia{m}" for m in minors)])


def test_subprocess_env_points_a_child_at_the_profile(tmp_path: Path) -> None:
    env = subprocess_env("t4-1", control=tmp_path / "ctl", call_log=tmp_path / "calls")
    assert env["LD_LIBRARY_PATH"].split(":")[0] == str(build())
    assert json.loads(Path(env["MOCK_NVML_CONFIG"]).read_text())["gpus"][0]["name"] == "Tesla T4"
    assert (env["MOCK_NVML_CONTROL"], env["MOCK_NVML_CALL_LOG"]) == (str(tmp_path / "ctl"), str(tmp_path / "calls"))


@pytest.mark.parametrize(
    "gpu", [8, "GPU-00000000-0000-0000-0000-000000000000", "0", "GPU-1 xid=3"],
    ids=["index-out-of-range", "unknown-uuid", "index-as-string", "injection"],
)
def test_control_rejects_gpu_references_the_profile_does_not_have(tmp_path: Path, gpu: Any) -> None:
    control = Control(tmp_path / "ctl", profile=load_profile("h100-sxm-8"))
    with pytest.raises(ValueError):
        control.xid(gpu, 79)
    assert control.lines() == []
