"""The node's CDI spec: which devices it names and what each one injects, as a plain dict.

Container engines that speak the Container Device Interface (containerd ≥ 1.7,
CRI-O, podman) inject a device from a spec file instead of through the nvidia
runtime. Upstream writes its spec with the toolkit's ``nvcdi``; nvdp renders it
here from plain data: the advertised devices (:func:`cdi_devices`) and the
driver's files that the host adapter found (:class:`DriverFiles`,
``adapters/host/driver_files.py``). ``app/cdi_specs.py`` and ``nvdp cdi
generate`` call :func:`render_spec`; Allocate (``domain/allocation.py``) names
devices with :func:`qualified_name`. Nothing here touches the filesystem.

The JSON is deterministic (devices sorted by name, every list in a fixed
order) so an unchanged host gives a byte-identical file, and ``cdiVersion`` is
the lowest that the features used need, by the CDI library's rules
(``specs-go/version.go``): ``hostPath`` on a device node or a device name
starting with a digit (the ``index`` strategy) need 0.5.0, everything else
0.3.0. So older engines (podman 4.3 reads up to 0.5.x) accept the spec.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from nvdp_node.domain.devices import Device

VENDOR = "k8s.device-plugin.nvidia.com"
CLASS = "gpu"
KIND = f"{VENDOR}/{CLASS}"
# The CDI library's GenerateNameForSpec: "<vendor>-<class>", so upstream and nvdp
# write the same file and switching between them never leaves two specs naming
# one device (an engine refuses a device that two specs of one priority declare).
SPEC_FILE_NAME = f"{VENDOR}-{CLASS}.json"
OWN_SPEC_PREFIX = f"{VENDOR}-"
EARLIEST_VERSION = "0.3.0"
HOST_PATH_VERSION = "0.5.0"  # hostPath on device nodes, device names starting with a digit

# The toolkit's mount options (internal/discover/mounts.go, ipc.go).
FILE_MOUNT_OPTIONS = ("ro", "nosuid", "nodev", "rbind", "rprivate")
IPC_MOUNT_OPTIONS = ("nosuid", "nodev", "rbind", "rprivate", "noexec")
# Keeps the nvidia runtime's legacy hook, if installed, from injecting GPUs a second time.
VOID_VISIBLE_DEVICES = "NVIDIA_VISIBLE_DEVICES=void"
HOOK_DEBUG_ENV = "NVIDIA_CTK_DEBUG=false"
CREATE_CONTAINER = "createContainer"

_DEVICE_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.:-]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class HostFile:
    """A file the container gets: where it appears in the container, and where it is on the host."""

    container_path: str
    host_path: str


@dataclass(frozen=True)
class DriverFiles:
    """What every GPU container needs from the driver, as found on this host.

    ``symlinks`` are (target, link) pairs the ``create-symlinks`` hook makes
    in the container (the host's soname links, ``libcuda.so``), ``ldcache_dirs``
    the library directories ``update-ldcache`` adds. ``hook_path`` is the
    toolkit's ``nvidia-cdi-hook`` (or ``nvidia-ctk``) when it exists, else
    None: the spec then has no hooks, and the libraries are still mounted.
    """

    driver_version: str
    control_nodes: tuple[HostFile, ...] = ()
    libraries: tuple[HostFile, ...] = ()
    binaries: tuple[HostFile, ...] = ()
    firmware: tuple[HostFile, ...] = ()
    ipc_sockets: tuple[HostFile, ...] = ()
    symlinks: tuple[tuple[str, str], ...] = ()
    hook_path: str | None = None
    problems: tuple[str, ...] = field(default=(), compare=False)  # logged, never fatal

    @property
    def ldcache_dirs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(posixpath.dirname(f.container_path) for f in self.libraries))


@dataclass(frozen=True)
class CdiDevice:
    """One device the spec names, with its device nodes (a MIG device: its parent's node and cap nodes)."""

    name: str
    nodes: tuple[HostFile, ...]


def device_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid CDI device name (the CDI parser's rule), or None."""
    if _DEVICE_NAME.match(name):
        return None
    return (f"{name!r} is not a valid CDI device name (letters, digits, '_', '.', ':', '-'; "
            "first and last a letter or digit)")


def qualified_name(device_name: str) -> str:
    """``k8s.device-plugin.nvidia.com/gpu=<device_name>``: what Allocate hands the runtime."""
    return f"{KIND}={device_name}"


def rendered_id(device: Device, strategy: str) -> str:
    """The id a container runtime sees for ``device``: a replica counts as its parent."""
    if strategy == "index":
        return device.index
    return device.replica_of if device.replica_of is not None else device.id


def host_path(root: str, path: str) -> str:
    """``path`` (absolute, as the container sees it) under ``root`` on the host."""
    return posixpath.normpath(posixpath.join(root, path.lstrip("/")))


def cdi_devices(devices: Iterable[Device], id_strategy: str, dev_root: str) -> tuple[CdiDevice, ...]:
    """The spec's devices for every advertised device, one per rendered id, sorted by name.

    Replicas of one GPU share their parent's entry, as Allocate names them.
    Devices whose id is not a valid CDI name are left out (callers report them
    with :func:`device_name_problem`): Allocate then refuses them clearly
    instead of handing the runtime a name it cannot resolve.
    """
    by_name: dict[str, CdiDevice] = {}
    for device in devices:
        name = rendered_id(device, id_strategy)
        if name in by_name or not device.dev_paths or device_name_problem(name) is not None:
            continue  # a device without nodes would be an empty (invalid) CDI device
        nodes = tuple(HostFile(p, host_path(dev_root, p)) for p in device.dev_paths)
        by_name[name] = CdiDevice(name, nodes)
    return tuple(by_name[n] for n in sorted(by_name))


def render_spec(devices: Sequence[CdiDevice], files: DriverFiles) -> dict[str, object]:
    """The CDI spec (a JSON-ready dict) for ``devices`` with the driver's ``files`` as common edits."""
    edits: dict[str, object] = {"env": [VOID_VISIBLE_DEVICES]}
    if files.control_nodes:
        edits["deviceNodes"] = [_node(f) for f in files.control_nodes]
    mounts = [_mount(f, FILE_MOUNT_OPTIONS) for f in (*files.libraries, *files.binaries, *files.firmware)]
    mounts += [_mount(f, IPC_MOUNT_OPTIONS) for f in files.ipc_sockets]
    if mounts:
        edits["mounts"] = mounts
    hooks = _hooks(files)
    if hooks:
        edits["hooks"] = hooks
    spec: dict[str, object] = {
        "cdiVersion": EARLIEST_VERSION,
        "kind": KIND,
        "devices": [
            {"name": d.name, "containerEdits": {"deviceNodes": [_node(n) for n in d.nodes]}} for d in devices
        ],
        "containerEdits": edits,
    }
    spec["cdiVersion"] = minimum_version(spec)
    return spec


def minimum_version(spec: dict[str, object]) -> str:
    """The lowest ``cdiVersion`` the features of ``spec`` need (only those nvdp renders can occur)."""
    devices = spec.get("devices") or []
    assert isinstance(devices, list)
    edits = [spec.get("containerEdits") or {}] + [d.get("containerEdits") or {} for d in devices]
    if any(str(d.get("name", "x"))[:1].isdigit() for d in devices):
        return HOST_PATH_VERSION
    if any(n.get("hostPath") for e in edits for n in e.get("deviceNodes", [])):
        return HOST_PATH_VERSION
    return EARLIEST_VERSION


def spec_device_names(spec: object) -> frozenset[str] | None:
    """The device names a parsed spec of nvdp's kind declares; None if it is not such a spec."""
    if not isinstance(spec, dict) or spec.get("kind") != KIND or not isinstance(spec.get("devices"), list):
        return None
    return frozenset(d["name"] for d in spec["devices"] if isinstance(d, dict) and isinstance(d.get("name"), str))


def _node(f: HostFile) -> dict[str, str]:
    node = {"path": f.container_path}
    if f.host_path != f.container_path:
        node["hostPath"] = f.host_path
    return node


def _mount(f: HostFile, options: tuple[str, ...]) -> dict[str, object]:
    return {"hostPath": f.host_path, "containerPath": f.container_path, "options": list(options)}


def _hooks(files: DriverFiles) -> list[dict[str, object]]:
    """The toolkit's hooks (internal/discover/hooks.go): ``nvidia-ctk`` needs its ``hook`` subcommand."""
    if files.hook_path is None:
        return []
    base = posixpath.basename(files.hook_path)
    fixed = [base, "hook"] if base == "nvidia-ctk" else [base]
    hooks: list[dict[str, object]] = []
    if files.symlinks:
        links = [arg for target, link in files.symlinks for arg in ("--link", f"{target}::{link}")]
        hooks.append(_hook(files.hook_path, [*fixed, "create-symlinks", *links]))
    if files.ldcache_dirs:
        folders = [arg for d in files.ldcache_dirs for arg in ("--folder", d)]
        hooks.append(_hook(files.hook_path, [*fixed, "update-ldcache", *folders]))
    return hooks


def _hook(path: str, args: list[str]) -> dict[str, object]:
    return {"hookName": CREATE_CONTAINER, "path": path, "args": args, "env": [HOOK_DEBUG_ENV]}
