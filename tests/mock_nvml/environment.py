"""Profiles and process environments for the mock NVML, usable without pytest.

The pytest plugin (``plugin.py``) builds its ``mock_nvml`` fixture on these;
the demo script and daemon tests use :func:`subprocess_env` / :func:`prepare`
directly to start processes that see a simulated node.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.mock_nvml import mig
from tests.mock_nvml.build import build  # re-exported: `from tests.mock_nvml.environment import build`
from tests.mock_nvml.control import Control

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
# Not a file: the library itself is absent, so pynvml raises NVMLError_LibraryNotFound.
DRIVER_MISSING = "driver-missing"

ENV_CONFIG = "MOCK_NVML_CONFIG"
ENV_CONTROL = "MOCK_NVML_CONTROL"
ENV_CALL_LOG = "MOCK_NVML_CALL_LOG"

Profile = str | os.PathLike[str]


def profile_names() -> list[str]:
    """Every bundled profile name, plus :data:`DRIVER_MISSING`."""
    return sorted([p.stem for p in PROFILES_DIR.glob("*.json")] + [DRIVER_MISSING])


def is_driver_missing(profile: Profile) -> bool:
    return isinstance(profile, str) and profile == DRIVER_MISSING


def profile_path(profile: Profile) -> Path:
    """The JSON file of a bundled profile name (``"h100-sxm-8"``) or of a path."""
    if is_driver_missing(profile):
        raise ValueError(f"{DRIVER_MISSING!r} has no node description: it means the library is absent")
    if isinstance(profile, str) and os.sep not in profile and not profile.endswith(".json"):
        path = PROFILES_DIR / f"{profile}.json"
        if not path.is_file():
            raise ValueError(f"unknown mock NVML profile {profile!r}; known: {', '.join(profile_names())}")
        return path
    path = Path(profile)
    if not path.is_file():
        raise ValueError(f"mock NVML profile {path} does not exist")
    return path


def load_profile(profile: Profile) -> dict[str, Any]:
    """The parsed node description (``{}`` for :data:`DRIVER_MISSING`)."""
    if is_driver_missing(profile):
        return {}
    data: dict[str, Any] = json.loads(profile_path(profile).read_text())
    return data


def sysfs_bus_id(nvml_bus_id: str) -> str:
    """NVML's ``00000000:18:00.0`` as sysfs names it: ``0000:18:00.0``."""
    domain, _, rest = nvml_bus_id.lower().partition(":")
    return f"{int(domain, 16):04x}:{rest}"


def subprocess_env(
    profile: Profile,
    *,
    control: str | os.PathLike[str] | None = None,
    call_log: str | os.PathLike[str] | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A full environment for a subprocess that should see ``profile``.

    Starts from ``base`` (default: ``os.environ``) and puts the mock library
    first on ``LD_LIBRARY_PATH``. For :data:`DRIVER_MISSING` the mock directory
    is removed from ``LD_LIBRARY_PATH`` instead (the key is always present,
    possibly empty), so ``libnvidia-ml.so.1`` cannot be loaded (on a host with
    a real NVIDIA driver it would still be found through the ld.so cache).
    """
    env = dict(os.environ if base is None else base)
    lib_dir = build().resolve()
    others = [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p and Path(p).resolve() != lib_dir]
    for key in (ENV_CONFIG, ENV_CONTROL, ENV_CALL_LOG):
        env.pop(key, None)
    if is_driver_missing(profile):
        # Set, not removed (glibc ignores an empty value), so that callers who
        # merge this over another environment ({**os.environ, **env}) still drop the mock.
        env["LD_LIBRARY_PATH"] = ":".join(others)
        return env
    env["LD_LIBRARY_PATH"] = ":".join([str(lib_dir), *others])
    env[ENV_CONFIG] = str(profile_path(profile))
    if control is not None:
        env[ENV_CONTROL] = str(control)
    if call_log is not None:
        env[ENV_CALL_LOG] = str(call_log)
    return env


@dataclass(frozen=True)
class MockNode:
    """One simulated node: a profile plus its own control file and call log.

    Made by :func:`prepare` (or the ``mock_nvml`` fixture's ``use``). It owns
    the per-test files so that tests never share fault-injection state.
    """

    name: str
    config_path: Path | None  # None for DRIVER_MISSING
    profile: dict[str, Any]
    control_path: Path
    call_log_path: Path

    @property
    def driver_missing(self) -> bool:
        return self.config_path is None

    @property
    def control(self) -> Control:
        return Control(self.control_path, profile=self.profile or None)

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment for a subprocess (e.g. the daemon) on this node."""
        profile: Profile = DRIVER_MISSING if self.config_path is None else self.config_path
        return subprocess_env(profile, control=self.control_path, call_log=self.call_log_path, base=base)

    def call_records(self) -> list[tuple[int, str]]:
        """``(pid, function)`` for every NVML call so far, in order."""
        try:
            text = self.call_log_path.read_text()
        except FileNotFoundError:
            return []
        records = []
        for line in text.splitlines():
            pid, _, function = line.partition(" ")
            records.append((int(pid), function))
        return records

    def calls(self, pid: int | None = None) -> list[str]:
        """NVML function names called so far (by ``pid`` only, if given)."""
        return [fn for p, fn in self.call_records() if pid is None or p == pid]

    def write_sysfs(self, root: str | os.PathLike[str]) -> Path:
        """``<root>/bus/pci/devices/<bus id>/numa_node`` per GPU (-1 where the profile has none)."""
        root = Path(root)
        for gpu in self.profile.get("gpus", []):
            device = root / "bus" / "pci" / "devices" / sysfs_bus_id(gpu["pci"]["bus_id"])
            device.mkdir(parents=True, exist_ok=True)
            numa = gpu["numa_node"]
            (device / "numa_node").write_text(f"{-1 if numa is None else numa}\n")
        return root

    def current_profile(self) -> dict[str, Any]:
        """:attr:`profile` with the ``mig`` control commands so far applied: the MIG layout NVML reports now."""
        return self.control.current_profile() if self.profile else {}

    def write_devfs(self, root: str | os.PathLike[str]) -> Path:
        """Plain files standing in for ``/dev/nvidiactl``, ``/dev/nvidia-uvm`` and ``/dev/nvidia<minor>``.

        With MIG devices in the current layout, also ``nvidia-caps/nvidia-cap<minor>`` for the MIG
        config/monitor capabilities and each GPU/compute instance (others there are removed).
        """
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        names = ["nvidiactl", "nvidia-uvm"] + [f"nvidia{g['minor_number']}" for g in self.profile.get("gpus", [])]
        for name in names:
            (root / name).touch()
        current = self.current_profile()
        if any(g.get("mig_devices") for g in current.get("gpus", [])):
            mig.sync_tree(root, dict.fromkeys(mig.cap_device_files(current), ""), [mig.CAPS_DEVICE_DIR])
        return root

    def write_procfs(self, root: str | os.PathLike[str]) -> Path:
        """The MIG capability files a driver shows under ``<root>`` (``/proc``) for the current layout.

        ``driver/nvidia/capabilities/gpu<minor>/mig/gi<G>/access`` and
        ``…/gi<G>/ci<C>/access`` (``DeviceFileMinor: <n>``, ``DeviceFileMode:
        292``, ``DeviceFileModify: 1``), ``…/capabilities/mig/{config,monitor}``
        and ``driver/nvidia-caps/mig-minors``, with the driver's minor
        numbering. Call again after a re-layout (or pass ``procfs=`` to
        ``Control.mig``): files of vanished instances are removed, kept ones
        are never absent. Nothing is written for a node without MIG-capable GPUs.
        """
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        mig.sync_tree(root, mig.capability_files(self.current_profile()), mig.PROCFS_DIRS)
        return root


def prepare(profile: Profile | Mapping[str, Any], workdir: str | os.PathLike[str]) -> MockNode:
    """A :class:`MockNode` for ``profile`` with fresh control/call-log files in ``workdir``.

    ``profile`` may also be a node description dict (e.g. a bundled profile
    loaded with :func:`load_profile` and modified); it is written to
    ``workdir/profile.json``.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if isinstance(profile, Mapping):
        config_path: Path | None = workdir / "profile.json"
        config_path.write_text(json.dumps(profile, indent=2) + "\n")
        name, data = "custom", dict(profile)
    elif is_driver_missing(profile):
        config_path, name, data = None, DRIVER_MISSING, {}
    else:
        config_path = profile_path(profile)
        name, data = config_path.stem, load_profile(config_path)
    control_path = workdir / "control"
    control_path.write_bytes(b"")
    return MockNode(name=name, config_path=config_path, profile=data, control_path=control_path,
                    call_log_path=workdir / "calls.log")
