"""The nvdp-mps@ units of MPS-shared resources, kept in step with the resources the supervisor runs.

Called by the supervisor whenever it applies a plan: an MPS resource gets its
unit started (or restarted with new limits) before its plugin is created, and
a gate that lets the plugin serve only while the daemon answers; a vanished
MPS resource gets its unit stopped. The units are left running when nvdp
itself stops: the MPS servers of running pods must survive an nvdp restart.
Everything that runs ``systemctl`` or the control client does so on a thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from nvdp_node.adapters.mps import MpsControl
from nvdp_node.app.settings import ServeSettings
from nvdp_node.app.threads import in_thread
from nvdp_node.domain.devices import Gpu
from nvdp_node.domain.errors import TemporaryError

log = logging.getLogger(__name__)

RESTART_EVERY = 30.0  # a unit that failed to start is started again at most this often
Gate = Callable[[], Awaitable[str | None]]


class MpsUnits:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._running: dict[str, tuple[MpsControl, int, tuple[str, ...]]] = {}
        self._start_error: dict[str, tuple[float, str]] = {}

    def control(self, settings: ServeSettings) -> MpsControl:
        host = settings.mps_host
        return MpsControl(root=Path(settings.mps_root), systemctl=host.systemctl, env_dir=host.env_dir,
                          control=host.control)

    async def ensure(self, settings: ServeSettings, resource: str, replicas: int, gpus: Sequence[Gpu]) -> Gate:
        """Start (or restart with new limits) ``resource``'s daemon; the gate its plugin serves behind."""
        try:
            control = self.control(settings)
        except ValueError as err:  # e.g. a sharing.mps.root the unit cannot use: never fatal
            log.error("%s: cannot run its MPS control daemon: %s", resource, err)

            async def refused() -> str | None:
                return f"MPS control daemon not started: {err}"

            return refused
        key = (replicas, tuple(g.uuid for g in gpus))
        running = self._running.get(resource)
        if running is None or running[1:] != key or running[0].root != control.root:
            await self._start(control, resource, replicas, gpus)

        async def gate() -> str | None:
            reason = await in_thread(lambda: control.probe(resource), name="mps-probe")
            if reason is None:
                return None
            failed = self._start_error.get(resource)
            if failed is not None and self._clock() - failed[0] >= RESTART_EVERY:
                await self._start(control, resource, replicas, gpus)
                failed = self._start_error.get(resource)
            return f"MPS control daemon not answering: {failed[1] if failed else reason}"

        return gate

    async def _start(self, control: MpsControl, resource: str, replicas: int, gpus: Sequence[Gpu]) -> None:
        try:
            await in_thread(lambda: control.start(resource, replicas, gpus), name="mps-start")
        except (TemporaryError, ValueError, OSError) as err:
            log.error("%s: cannot start its MPS control daemon: %s", resource, err)
            self._start_error[resource] = (self._clock(), str(err))
            self._running.pop(resource, None)
            return
        self._start_error.pop(resource, None)
        self._running[resource] = (control, replicas, tuple(g.uuid for g in gpus))

    async def stop(self, resource: str) -> None:
        """``resource`` is no longer MPS-shared (or gone): stop its daemon."""
        running = self._running.pop(resource, None)
        self._start_error.pop(resource, None)
        if running is None:
            return
        try:
            await in_thread(lambda: running[0].stop(resource), name="mps-stop")
        except (TemporaryError, OSError) as err:
            log.error("%s: cannot stop its MPS control daemon: %s", resource, err)

    def managed(self) -> set[str]:
        return set(self._running) | set(self._start_error)
