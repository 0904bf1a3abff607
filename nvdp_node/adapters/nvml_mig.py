"""The MIG devices of one MIG-enabled GPU, read through NVML.

Called by NVML discovery (``nvdp_node.adapters.nvml``) for each GPU whose
current MIG mode is on. Each device's profile string is computed the way
go-nvlib does (``nvdp_node.domain.mig``): from the NVML profiles of its GPU
and compute instance, or, where the driver cannot say which profiles those
are, from the device's own slice counts (right except for ``+me``-style
extras). Capability minors come from /proc (``nvdp_node.adapters.host.mig_caps``).

Failures go into the parent's ``Gpu.error`` through its
:class:`~nvdp_node.adapters.nvml_queries.GpuQueries`: a MIG device that
cannot be fully read is left out, its parent is then advertised Unhealthy
with the reason, and the enumeration goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pynvml

from nvdp_node.adapters.host.mig_caps import read_cap_minors
from nvdp_node.adapters.host.paths import HostRoot
from nvdp_node.adapters.nvml_queries import GpuQueries, text
from nvdp_node.domain import mig as mig_names
from nvdp_node.domain.devices import MigDevice

log = logging.getLogger(__name__)

# What nvmlDeviceGetMigDeviceHandleByIndex answers for a slot with no MIG device in it.
_EMPTY_SLOT = frozenset({pynvml.NVML_ERROR_NOT_FOUND, pynvml.NVML_ERROR_INVALID_ARGUMENT})
# The driver (or an old one) cannot name instance profiles: fall back to the slice counts.
_NO_PROFILE_INFO = frozenset({pynvml.NVML_ERROR_FUNCTION_NOT_FOUND, pynvml.NVML_ERROR_NOT_SUPPORTED})


def read_mig_devices(q: GpuQueries, *, minor: int | None, memory_total: int, host: HostRoot) -> tuple[MigDevice, ...]:
    """Every MIG device of the GPU behind ``q``, in slot order; failures are recorded in ``q``."""
    count = q.required("MIG device count", pynvml.nvmlDeviceGetMaxMigDeviceCount, 0)
    devices = []
    for slot in range(count):
        if q.lost:
            break
        handle = _slot_handle(q, slot)
        if handle is not None:
            device = _read_mig_device(q, slot, handle, minor=minor, memory_total=memory_total, host=host)
            if device is not None:
                devices.append(device)
    return tuple(devices)


def _slot_handle(q: GpuQueries, slot: int) -> object | None:
    try:
        return pynvml.nvmlDeviceGetMigDeviceHandleByIndex(q.handle, slot)
    except pynvml.NVMLError as err:
        if err.value in _EMPTY_SLOT:
            return None
        q.lost = err.value == pynvml.NVML_ERROR_GPU_IS_LOST
        q.problem(f"MIG device {slot}", err)
        return None


def _read_mig_device(
    q: GpuQueries, slot: int, handle: object, *, minor: int | None, memory_total: int, host: HostRoot,
) -> MigDevice | None:
    """One MIG device, or None after its first failing query (recorded in ``q``)."""
    what = f"MIG device {slot}"
    uuid = q.required(f"{what} UUID", lambda _: text(pynvml.nvmlDeviceGetUUID(handle)), None)
    if uuid is None:
        return None
    gi = q.required(f"{what} GPU instance id", lambda _: int(pynvml.nvmlDeviceGetGpuInstanceId(handle)), None)
    if gi is None:
        return None
    ci = q.required(f"{what} compute instance id", lambda _: int(pynvml.nvmlDeviceGetComputeInstanceId(handle)), None)
    if ci is None:
        return None
    attributes = q.required(f"{what} attributes", lambda _: pynvml.nvmlDeviceGetAttributes(handle), None)
    if attributes is None:
        return None
    try:
        profile = q.required(f"{what} profile", lambda parent: _profile(parent, gi, ci, attributes, memory_total), None)
    except ValueError as err:  # NVML's answers name no profile nvdp knows
        q.problem(f"{what} profile", err)
        return None
    if profile is None:
        return None
    return MigDevice(
        index=slot,
        uuid=uuid,
        profile=profile,
        gpu_instance=gi,
        compute_instance=ci,
        memory_total=q.optional(f"{what} memory info", lambda _: int(pynvml.nvmlDeviceGetMemoryInfo(handle).total), 0),
        cap_minors=() if minor is None else read_cap_minors(host, minor, gi, ci),
    )


def _profile(parent: object, gi: int, ci: int, attributes: object, memory_total: int) -> str:
    """The profile string; NVMLError or ValueError when it cannot be had."""
    mig_mb = int(getattr(attributes, "memorySizeMB"))
    try:
        gi_profile, ci_profile = _instance_profiles(parent, gi, ci)
    except pynvml.NVMLError as err:
        if err.value not in _NO_PROFILE_INFO:
            raise
        log.debug("MIG gi%d/ci%d: instance profiles unavailable (%s); naming it from its slice counts", gi, ci, err)
        return mig_names.profile_from_slices(
            int(getattr(attributes, "computeInstanceSliceCount")), int(getattr(attributes, "gpuInstanceSliceCount")),
            mig_memory_mb=mig_mb, device_memory_bytes=memory_total,
        )
    return mig_names.profile_from_ids(gi_profile, ci_profile, mig_memory_mb=mig_mb, device_memory_bytes=memory_total)


def _instance_profiles(parent: object, gi: int, ci: int) -> tuple[int, int]:
    """The NVML profile enums (NVML_GPU/COMPUTE_INSTANCE_PROFILE_*) the instances were created from.

    The instances report driver profile ids; the enum is found, as go-nvlib
    does it, by asking the profile info of each enum value for its id.
    """
    gpu_instance = pynvml.nvmlDeviceGetGpuInstanceById(parent, gi)
    gi_id = pynvml.nvmlGpuInstanceGetInfo(gpu_instance).profileId
    gi_profile = next(
        (p for p in range(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT)
         if _profile_id(lambda: pynvml.nvmlDeviceGetGpuInstanceProfileInfo(parent, p)) == gi_id),
        None,
    )
    compute_instance = pynvml.nvmlGpuInstanceGetComputeInstanceById(gpu_instance, ci)
    ci_id = pynvml.nvmlComputeInstanceGetInfo(compute_instance).profileId
    ci_profile = next(
        (p for p in range(pynvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT)
         for e in range(pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_COUNT)
         if _profile_id(lambda: pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(gpu_instance, p, e)) == ci_id),
        None,
    )
    if gi_profile is None:
        raise ValueError(f"no GPU instance profile has the id {gi_id} of GPU instance {gi}")
    if ci_profile is None:
        raise ValueError(f"no compute instance profile has the id {ci_id} of compute instance {ci}")
    return gi_profile, ci_profile


def _profile_id(info: Callable[[], object]) -> int | None:
    """A profile info's id; None for a profile this GPU does not have (NOT_SUPPORTED, INVALID_ARGUMENT)."""
    try:
        return int(getattr(info(), "id"))
    except pynvml.NVMLError as err:
        if err.value in (pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_INVALID_ARGUMENT):
            return None
        raise
