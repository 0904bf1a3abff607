"""Find the driver's files a GPU container needs, under the injectable driver root, for the CDI spec.

``app/cdi_specs.py`` and ``nvdp cdi generate`` call :func:`find_driver_files`
on a thread; the pure renderer (``domain/cdi_spec.py``) turns the result into
the spec. What is looked for follows the toolkit's ``nvcdi`` (``driver-nvml.go``,
``common-nvml.go``, ``internal/discover``): the control nodes that exist, every
library ``*.so.<driver version>`` the loader knows (``<root>/etc/ld.so.cache``;
without a cache, the usual library directories), its soname links, the
driver's binaries, the GSP firmware of this version and the IPC sockets that
exist. Paths in the container are the paths under the driver root; on the
host they carry the root (``/run/nvidia/driver/usr/lib/...`` for a
containerised driver). Where the toolkit reads a library's SONAME from its
ELF header, nvdp takes the host's own soname symlinks, which ldconfig made
from the same header.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

from nvdp_node.adapters.host.ld_cache import LdCacheError, read_ld_cache
from nvdp_node.adapters.host.paths import DEFAULT_BIN_DIRS, HostRoot
from nvdp_node.domain.cdi_spec import DriverFiles, HostFile, host_path

CONTROL_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")
BINARIES = ("nvidia-smi", "nvidia-debugdump", "nvidia-persistenced", "nvidia-cuda-mps-control",
            "nvidia-cuda-mps-server", "nvidia-imex", "nvidia-imex-ctl")
LD_CACHE = "/etc/ld.so.cache"
FALLBACK_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/lib64",
                     "/usr/lib")
# (where to look, what): the first that exists of each group, as the toolkit's IPC discoverer.
IPC_SOCKETS = ((("/run", "/var/run"), "nvidia-persistenced/socket"),
               (("/run", "/var/run"), "nvidia-fabricmanager/socket"),
               (("/tmp",), "nvidia-mps"))
MAX_LINK_HOPS = 40


@dataclass(frozen=True)
class DriverRoots:
    """Where the driver is (``driver_root``, read directly) and what the spec says about /dev.

    ``dev_root`` prefixes the device nodes' host paths (``plugin.nvidia_dev_root``);
    ``host`` is where nvdp itself looks at /dev (``--dev-root``) to see which
    control nodes exist, as Allocate's ``pass_device_specs`` does.
    """

    driver_root: Path = Path("/")
    dev_root: str = "/"
    host: HostRoot = HostRoot()


def find_driver_files(roots: DriverRoots, driver_version: str, hook_path: str) -> DriverFiles:
    """Everything :class:`DriverFiles` holds, for the running ``driver_version``; never raises for a host file."""
    problems: list[str] = []
    libraries, symlinks = _libraries(roots.driver_root, driver_version, problems)
    hook = hook_path if _executable(roots.host.at(hook_path)) else None
    if hook is None:
        problems.append(f"{hook_path} not found: the CDI spec has no create-symlinks/update-ldcache hooks "
                        "(install nvidia-container-toolkit-base, or set plugin.nvidia_cdi_hook_path)")
    return DriverFiles(
        driver_version=driver_version,
        control_nodes=_control_nodes(roots),
        libraries=libraries,
        binaries=_binaries(roots.driver_root),
        firmware=_firmware(roots.driver_root, driver_version),
        ipc_sockets=_ipc_sockets(roots.driver_root),
        symlinks=symlinks,
        hook_path=hook,
        problems=tuple(problems),
    )


def _control_nodes(roots: DriverRoots) -> tuple[HostFile, ...]:
    dev = roots.host.at(roots.host.dev_dir)
    return tuple(HostFile(p, host_path(roots.dev_root, p)) for p in CONTROL_NODES if _exists(dev / Path(p).name))


def _libraries(root: Path, version: str, problems: list[str]) -> tuple[tuple[HostFile, ...], tuple[tuple[str, str], ...]]:
    """The driver's libraries (resolved files) and their soname links, sorted by path."""
    dirs: list[str] = []
    found: set[str] = set()
    try:
        entries = read_ld_cache(_under(root, LD_CACHE))
    except (OSError, LdCacheError) as err:
        problems.append(f"cannot read {_under(root, LD_CACHE)} ({_why(err)}); searching {', '.join(FALLBACK_LIB_DIRS)}")
        entries = []
        dirs = list(FALLBACK_LIB_DIRS)
    for _soname, path in entries:
        resolved = _resolve(root, path)
        if resolved is not None and fnmatch.fnmatch(posixpath.basename(resolved), f"*.so.{version}"):
            found.add(resolved)
            dirs.append(posixpath.dirname(resolved))
    if entries and not found:  # a cache that predates the driver install (ldconfig not run since)
        problems.append(f"{_under(root, LD_CACHE)} names no library of driver {version}; "
                        f"searching {', '.join(FALLBACK_LIB_DIRS)}")
        dirs = list(FALLBACK_LIB_DIRS)
    for d in dict.fromkeys(dirs):
        for sub in (d, posixpath.join(d, "vdpau")):  # upstream's locator also looks in vdpau/
            for name in _listdir(_under(root, sub)):
                if fnmatch.fnmatch(name, f"*.so.{version}") and _is_file(_under(root, sub) / name):
                    found.add(posixpath.join(sub, name))
    libs = tuple(HostFile(p, host_path(str(root), p)) for p in sorted(found))
    return libs, _soname_links(root, sorted(found), version)


def _soname_links(root: Path, libraries: list[str], version: str) -> tuple[tuple[str, str], ...]:
    """(target, link in the container) for the host's links to each library, and ``libcuda.so`` as upstream."""
    links: dict[str, str] = {}
    by_dir: dict[str, set[str]] = {}
    for lib in libraries:
        by_dir.setdefault(posixpath.dirname(lib), set()).add(posixpath.basename(lib))
    for d, names in by_dir.items():
        for name in _listdir(_under(root, d)):
            full = _under(root, d) / name
            if not full.is_symlink():
                continue
            target = os.readlink(full)
            chain, hops = target, 0
            while "/" not in chain and chain not in names and (_under(root, d) / chain).is_symlink() and hops < 3:
                chain, hops = os.readlink(_under(root, d) / chain), hops + 1
            if "/" not in target and chain in names:
                links[posixpath.join(d, name)] = target
        if f"libcuda.so.{version}" in names:
            links.setdefault(posixpath.join(d, "libcuda.so"), "libcuda.so.1")
    return tuple((links[link], link) for link in sorted(links))


def _binaries(root: Path) -> tuple[HostFile, ...]:
    out = []
    for name in BINARIES:
        for d in DEFAULT_BIN_DIRS:
            path = posixpath.join(d, name)
            if _executable(_under(root, path)):
                out.append(HostFile(path, host_path(str(root), path)))
                break
    return tuple(out)


def _firmware(root: Path, version: str) -> tuple[HostFile, ...]:
    release = os.uname().release
    search = (f"/lib/firmware/updates/{release}", "/lib/firmware/updates", f"/lib/firmware/{release}", "/lib/firmware")
    found: dict[str, HostFile] = {}
    for base in search:
        d = posixpath.join(base, "nvidia", version)
        for name in sorted(_listdir(_under(root, d))):
            path = posixpath.join(d, name)
            if fnmatch.fnmatch(name, "gsp*.bin") and path not in found:
                found[path] = HostFile(path, host_path(str(root), path))
    return tuple(found.values())


def _ipc_sockets(root: Path) -> tuple[HostFile, ...]:
    out = []
    for bases, name in IPC_SOCKETS:
        for base in bases:
            path = posixpath.join(base, name)
            if _exists(_under(root, path)):
                out.append(HostFile(path, host_path(str(root), path)))
                break
    return tuple(out)


def _resolve(root: Path, path: str) -> str | None:
    """``path``'s final target inside ``root`` (symlinks followed as if ``root`` were /), or None."""
    current = posixpath.normpath(path)
    for _ in range(MAX_LINK_HOPS):
        full = _under(root, current)
        try:
            if not full.is_symlink():
                return current if full.is_file() else None
            target = os.readlink(full)
        except (OSError, ValueError):
            return None
        current = posixpath.normpath(target if target.startswith("/") else posixpath.join(posixpath.dirname(current), target))
    return None


def _under(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except (OSError, ValueError):
        return []


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _executable(path: Path) -> bool:
    return _is_file(path) and os.access(path, os.X_OK)


def _why(err: BaseException) -> str:
    return err.strerror if isinstance(err, OSError) and err.strerror else str(err)
