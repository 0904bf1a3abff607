"""What a container gets for its devices (Allocate), and which devices to prefer.

Pure functions over :class:`~nvdp_node.domain.devices.Device` maps, called by
the gRPC servicer for Allocate and GetPreferredAllocation (whose rules live in
``nvdp_node.domain.preferred`` and are re-exported here). The response shapes
follow NVIDIA's device plugin byte for byte (see docs/architecture.md), so a
node can switch between nvdp and upstream without changing pods. Replicas of
shared devices (``nvdp_node.domain.sharing``) are rendered as their parents.
"""

from __future__ import annotations

import os.path
import posixpath
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from nvdp_node.domain.cdi_spec import qualified_name, rendered_id
from nvdp_node.domain.devices import Device
from nvdp_node.domain.preferred import SharedAllocationPolicy
from nvdp_node.domain.preferred import preferred_allocation as preferred_allocation

VISIBLE_DEVICES = "NVIDIA_VISIBLE_DEVICES"
VOLUME_MOUNT_DIR = "/var/run/nvidia-container-devices"
MPS_PIPE_ENV = "CUDA_MPS_PIPE_DIRECTORY"
MPS_LOG_ENV = "CUDA_MPS_LOG_DIRECTORY"
MPS_CONTAINER_ROOT = "/mps"  # upstream's mps.ContainerRoot
MPS_CONTAINER_SHM = "/dev/shm"
DEFAULT_MPS_ROOT = "/run/nvidia/mps"
CDI_STRATEGIES = ("cdi-annotations", "cdi-cri")
CDI_ANNOTATION_PLUGIN = "nvidia-device-plugin"  # upstream's plugin name in the annotation key


class InvalidAllocationError(ValueError):
    """Allocate asked for something this resource cannot give; the text is upstream's."""


SHOWN_ID_CHARS = 64


def shown_id(device_id: str) -> str:
    """A device id as error texts show it: whole if short, else cut (the id comes from the caller).

    Real ids (GPU UUIDs, MIG UUIDs, indices) are far shorter, so upstream's
    text is kept byte for byte; a 1 MB id would otherwise be logged whole and
    echoed into the gRPC status, whose size limit then turns the answer into
    RESOURCE_EXHAUSTED.
    """
    if len(device_id) <= SHOWN_ID_CHARS:
        return device_id
    size = len(device_id.encode("utf-8", "surrogatepass"))
    return f"{device_id[:SHOWN_ID_CHARS]}… ({size} bytes)"


@dataclass(frozen=True)
class AllocationPolicy:
    """How Allocate renders devices for the container runtime (config ``[plugin]``)."""

    resource_name: str = "nvidia.com/gpu"
    device_list_strategy: tuple[str, ...] = ("envvar",)
    device_id_strategy: str = "uuid"
    pass_device_specs: bool = False
    dev_root: str = "/"
    # Control nodes found on this host (/dev/nvidiactl, /dev/nvidia-uvm, ...):
    # upstream passes each one only if it exists, so the adapter stats them.
    control_device_paths: tuple[str, ...] = ()
    # Set for shared resources only (``[sharing.*]``, ``plugin.shared_devices_allocation_policy``).
    fail_requests_greater_than_one: bool = False
    shared_devices_allocation_policy: SharedAllocationPolicy = "distributed"
    mps: MpsAllocation | None = None
    cdi_annotation_prefix: str = "cdi.k8s.io/"
    # The device names of the CDI spec nvdp last wrote (app/cdi_specs.py); None: no
    # usable spec, so CDI names are refused (``cdi_problem`` says why).
    cdi_names: frozenset[str] | None = None
    cdi_problem: str = "no CDI spec was written"

    @property
    def uses_cdi(self) -> bool:
        return any(s in CDI_STRATEGIES for s in self.device_list_strategy)


@dataclass(frozen=True)
class Mount:
    container_path: str
    host_path: str
    read_only: bool = False


@dataclass(frozen=True)
class MpsAllocation:
    """Where a resource's MPS control daemon lives, and what Allocate adds for it.

    Upstream (``internal/plugin/mps.go``, ``cmd/mps-control-daemon/mps/root.go``)
    keeps each resource's pipe and log directories at
    ``<root>/<resource>/{pipe,log}`` and one shm for all resources at
    ``<root>/shm``; a container gets the pipe directory at
    ``/mps/<resource>/pipe`` (named by ``CUDA_MPS_PIPE_DIRECTORY``) and the
    shm as its ``/dev/shm``. The log directory is the daemon's only.
    """

    root: str = DEFAULT_MPS_ROOT

    def pipe_dir(self, resource_name: str) -> str:
        return _join(self.root, resource_name, "pipe")

    def log_dir(self, resource_name: str) -> str:
        return _join(self.root, resource_name, "log")

    def shm_dir(self) -> str:
        return _join(self.root, "shm")

    def daemon_envs(self, resource_name: str) -> dict[str, str]:
        """The environment ``nvidia-cuda-mps-control`` runs with for ``resource_name`` (host paths)."""
        return {MPS_PIPE_ENV: self.pipe_dir(resource_name), MPS_LOG_ENV: self.log_dir(resource_name)}

    def container_envs(self, resource_name: str) -> dict[str, str]:
        """Upstream sets only the pipe directory for the container."""
        return {MPS_PIPE_ENV: _join(MPS_CONTAINER_ROOT, resource_name, "pipe")}

    def container_mounts(self, resource_name: str) -> tuple[Mount, ...]:
        pipe = _join(MPS_CONTAINER_ROOT, resource_name, "pipe")
        return (
            Mount(container_path=pipe, host_path=self.pipe_dir(resource_name)),
            Mount(container_path=MPS_CONTAINER_SHM, host_path=self.shm_dir()),
        )


def _join(*parts: str) -> str:
    """Go's ``filepath.Join``: the non-empty parts joined and cleaned (``//`` collapsed too)."""
    joined = posixpath.normpath("/".join(p for p in parts if p))
    return "/" + joined.lstrip("/") if joined.startswith("/") else joined


@dataclass(frozen=True)
class DeviceSpec:
    container_path: str
    host_path: str
    permissions: str = "rw"


@dataclass(frozen=True)
class ContainerAllocation:
    envs: dict[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    device_specs: tuple[DeviceSpec, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict)
    cdi_devices: tuple[str, ...] = ()


def _random_key() -> str:
    return str(uuid.uuid4())


def allocate_container(
    devices: Mapping[str, Device], requested: Sequence[str], policy: AllocationPolicy,
    annotation_id: Callable[[], str] = _random_key,
) -> ContainerAllocation:
    """Render one container's allocation; raise :class:`InvalidAllocationError` for a request upstream refuses.

    Upstream's order: unknown ids, then more than one replica when
    ``fail_requests_greater_than_one`` (counted as requested, duplicates
    included). A replica is rendered as its parent, and the rendered ids are
    de-duplicated keeping request order (upstream since v0.18.0), so two
    replicas of one GPU give its UUID (or index) once. Health is not checked:
    kubelet never hands out unhealthy devices, and a device that failed after
    admission must still be mountable for the pod that owns it.

    CDI strategies come first, as upstream: ``cdi-annotations`` puts the
    comma-joined CDI names under ``<prefix>nvidia-device-plugin_<uuid4>`` (a
    fresh ``annotation_id()`` per response), ``cdi-cri`` into ``cdi_devices``;
    a name the written spec lacks fails the request. When every strategy is
    CDI there is no ``NVIDIA_VISIBLE_DEVICES`` and no DeviceSpec.
    """
    ordered: list[Device] = []
    seen: set[str] = set()
    for device_id in requested:
        device = devices.get(device_id)
        if device is None:
            raise InvalidAllocationError(
                f'invalid allocation request for "{policy.resource_name}": '
                f"invalid request: unknown device: {shown_id(device_id)}"
            )
        if device_id not in seen:
            seen.add(device_id)
            ordered.append(device)
    shared = any(d.replica_of is not None for d in ordered)
    if shared and policy.fail_requests_greater_than_one and len(requested) > 1:
        raise InvalidAllocationError(
            f'invalid allocation request for "{policy.resource_name}": '
            f"invalid request: maximum request size for shared resources is 1; found {len(requested)}"
        )

    ids = list(dict.fromkeys(rendered_id(d, policy.device_id_strategy) for d in ordered))
    envs: dict[str, str] = {}
    mounts: list[Mount] = []
    annotations: dict[str, str] = {}
    cdi_names: tuple[str, ...] = ()
    if policy.uses_cdi:
        cdi_names = _cdi_names(ids, policy)
        if "cdi-annotations" in policy.device_list_strategy:
            key = f"{policy.cdi_annotation_prefix}{CDI_ANNOTATION_PLUGIN}_{annotation_id()}"
            annotations[key] = ",".join(cdi_names)
    if policy.mps is not None:
        envs.update(policy.mps.container_envs(policy.resource_name))
        mounts.extend(policy.mps.container_mounts(policy.resource_name))
    cri = cdi_names if "cdi-cri" in policy.device_list_strategy else ()
    if all(s in CDI_STRATEGIES for s in policy.device_list_strategy):
        return ContainerAllocation(envs=envs, mounts=tuple(mounts), annotations=annotations, cdi_devices=cri)
    if "envvar" in policy.device_list_strategy:
        envs[VISIBLE_DEVICES] = ",".join(ids)
    if "volume-mounts" in policy.device_list_strategy:
        # Overrides the envvar value, as upstream does when both are set.
        envs[VISIBLE_DEVICES] = VOLUME_MOUNT_DIR
        mounts.extend(Mount(container_path=f"{VOLUME_MOUNT_DIR}/{i}", host_path="/dev/null") for i in ids)

    specs: list[DeviceSpec] = []
    if policy.pass_device_specs:
        # Upstream repeats a node once per replica; one spec per node is enough.
        paths = list(policy.control_device_paths)
        for device in ordered:
            paths.extend(p for p in device.dev_paths if p not in paths)
        specs = [
            DeviceSpec(container_path=p, host_path=os.path.join(policy.dev_root, p.lstrip("/")))
            for p in paths
        ]
    return ContainerAllocation(envs=envs, mounts=tuple(mounts), device_specs=tuple(specs),
                               annotations=annotations, cdi_devices=cri)


def _cdi_names(ids: Sequence[str], policy: AllocationPolicy) -> tuple[str, ...]:
    """The CDI names of ``ids``; every one must be in the spec written, or the runtime could not inject it."""
    missing = [i for i in ids if policy.cdi_names is None or i not in policy.cdi_names]
    if missing:
        why = policy.cdi_problem if policy.cdi_names is None else "the CDI spec written does not name it"
        raise InvalidAllocationError(
            f'invalid allocation request for "{policy.resource_name}": cannot hand over '
            f"{qualified_name(shown_id(missing[0]))} by CDI: {why}"
        )
    return tuple(qualified_name(i) for i in ids)
