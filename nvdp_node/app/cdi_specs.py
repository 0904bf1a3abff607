"""Keep the node's CDI spec in step with what nvdp advertises, and tell Allocate which names it holds.

The supervisor calls :meth:`CdiSpecs.apply` each time it applies a plan (at
start, on reload, on a MIG layout change; each enumeration reads the driver
version from NVML afresh, so a new driver gives a new spec): the driver's
files are found and the spec written on a thread, then every resource's
``AllocationPolicy`` gets the device names of the spec actually written. If
writing failed, the policies get no names and the reason, so Allocate refuses
CDI requests with that reason instead of naming devices no spec declares.
Between those, the supervisor's periodic check (``plugin.mig_check_interval``)
calls :meth:`CdiSpecs.refresh`: when the driver's fingerprint (NVML's version,
the ld cache's identity, the kernel module's version) differs from the one
the written spec was made from, or the last write failed, the spec of the
running resources is rewritten and their policies updated in place (no
re-registration: the devices are the same).
Without a ``cdi-*`` strategy nvdp's own spec file is removed (never another
vendor's). ``nvdp cdi generate`` (``app/cdi_cli.py``) uses :func:`build_spec`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from nvdp_node.adapters.cdi_writer import remove_spec, write_spec
from nvdp_node.adapters.host.driver_fingerprint import DriverFingerprint, driver_fingerprint
from nvdp_node.adapters.host.driver_files import DriverRoots, find_driver_files
from nvdp_node.app.threads import in_thread
from nvdp_node.domain.cdi_spec import SPEC_FILE_NAME, DriverFiles, cdi_devices, device_name_problem, \
    rendered_id, render_spec
from nvdp_node.domain.devices import Device, NodeInventory

if TYPE_CHECKING:
    from nvdp_node.adapters.servicer import DeviceState
    from nvdp_node.app.resource_plugin import Planned
    from nvdp_node.app.settings import ServeSettings

log = logging.getLogger("nvdp.cdi")


@dataclass(frozen=True)
class CdiSettings:
    """``plugin.cdi_spec_dir``, ``plugin.nvidia_cdi_hook_path`` and where the driver is."""

    spec_dir: Path = Path("/var/run/cdi")
    hook_path: str = "/usr/bin/nvidia-cdi-hook"
    roots: DriverRoots = DriverRoots()


@dataclass(frozen=True)
class BuiltSpec:
    spec: dict[str, object]
    files: DriverFiles
    problems: tuple[str, ...]  # what the spec lacks and why (no hook, unnamed devices, no ld cache)

    @property
    def names(self) -> frozenset[str]:
        devices = self.spec["devices"]
        assert isinstance(devices, list)
        return frozenset(d["name"] for d in devices)


def build_spec(cdi: CdiSettings, devices: Iterable[Device], id_strategy: str, driver_version: str) -> BuiltSpec:
    """Find the driver's files and render the spec for ``devices`` (blocking: file system reads)."""
    devices = list(devices)
    files = find_driver_files(cdi.roots, driver_version, cdi.hook_path)
    problems = list(files.problems)
    for device in devices:
        problem = device_name_problem(rendered_id(device, id_strategy))
        if problem:
            problems.append(f"{device.id}: {problem}; it cannot be handed over by CDI")
    if not files.libraries:
        problems.append(f"no driver library *.so.{driver_version} found under {cdi.roots.driver_root}")
    spec = render_spec(cdi_devices(devices, id_strategy, cdi.roots.dev_root), files)
    return BuiltSpec(spec, files, tuple(dict.fromkeys(problems)))


class CdiSpecs:
    """The spec nvdp last wrote (its device names) and the driver it was made from, or why there is none."""

    def __init__(self) -> None:
        self.names: frozenset[str] | None = None
        self.problem: str | None = None
        self._made_from: tuple[str, DriverFingerprint] | None = None  # None: nothing written (or it failed)

    async def apply(self, settings: ServeSettings, inventory: NodeInventory, planned: Planned) -> Planned:
        """Write the spec for ``planned`` (or remove ours) and return ``planned`` with CDI-aware policies."""
        cdi = settings.cdi
        if not settings.policy.uses_cdi:
            if await in_thread(lambda: remove_spec(cdi.spec_dir), name="cdi-remove"):
                log.info("no cdi-* strategy any more: removed %s", cdi.spec_dir / SPEC_FILE_NAME)
            self.names, self.problem, self._made_from = None, None, None
            return planned
        states = [state for _name, state in planned.resources.values()]
        await self._write(settings, inventory.driver_version, states, repeat_error=True)
        return planned

    async def refresh(self, settings: ServeSettings, inventory: NodeInventory,
                      states: Iterable[DeviceState]) -> bool:
        """The periodic check: rewrite the spec of the running ``states`` if the driver changed under it
        or the last write failed; True if what Allocate may name changed (the supervisor shows the new STATUS)."""
        if not settings.policy.uses_cdi or (self._made_from is None and self.problem is None):
            return False  # no CDI, or no plan applied yet: the first apply writes the spec
        version = inventory.driver_version
        now = (version, await in_thread(lambda: driver_fingerprint(settings.cdi.roots), name="cdi-check"))
        made_from = self._made_from
        if made_from == now:
            return False
        if made_from is not None:
            changed = ([f"driver {made_from[0]} -> {version}"] if made_from[0] != version else []) \
                + now[1].differences(made_from[1])
            log.info("the driver changed (%s); rewriting the CDI spec", "; ".join(changed))
        before = (self.names, self.problem)
        await self._write(settings, version, list(states), repeat_error=False, fingerprint=now[1])
        return (self.names, self.problem) != before

    async def _write(self, settings: ServeSettings, driver_version: str, states: list[DeviceState], *,
                     repeat_error: bool, fingerprint: DriverFingerprint | None = None) -> None:
        """Build and write the spec of ``states``' devices, then give their policies its names (or the reason)."""
        cdi = settings.cdi
        devices = [d for state in states for d in state.devices.by_id.values()]
        strategy = settings.policy.device_id_strategy
        # Taken before the files are read: a change during the build shows up at the next check.
        fingerprint = fingerprint or await in_thread(lambda: driver_fingerprint(cdi.roots), name="cdi-check")
        try:
            built = await in_thread(lambda: build_spec(cdi, devices, strategy, driver_version), name="cdi-spec")
            path, changed = await in_thread(lambda: write_spec(cdi.spec_dir, built.spec), name="cdi-write")
        except OSError as err:
            problem = f"cannot write the CDI spec in {cdi.spec_dir}: {err.strerror or err}"
            if repeat_error or problem != self.problem:  # a retry that fails the same way says nothing new
                log.error("%s; CDI requests are refused until it can be written", problem)
            self.names, self.problem, self._made_from = None, problem, None
        else:
            for problem in built.problems:
                log.warning("CDI spec: %s", problem)
            self.names, self.problem, self._made_from = built.names, None, (driver_version, fingerprint)
            if changed:
                log.info("wrote CDI spec %s: %d devices, driver %s, %d files", path, len(built.names),
                         driver_version, len(built.files.libraries) + len(built.files.binaries))
        for state in states:
            state.policy = replace(state.policy, cdi_names=self.names,
                                   cdi_problem=self.problem or "the CDI spec does not name it")
