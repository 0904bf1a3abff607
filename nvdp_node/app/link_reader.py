"""The GPUs' link table for ``nvdp serve``: read on a thread once serving, handed to every resource.

Owned by :class:`~nvdp_node.app.supervisor.Supervisor`, which calls
:meth:`LinkReader.attach` on every inventory it plans from (start, reload,
MIG re-layout) and :meth:`LinkReader.refresh` after start and each reload.
The scan is off the start path because it can take seconds on NVLink nodes
(upstream saw ~0.6 s per GPU, #774): until it is done, GetPreferredAllocation
packs whole GPUs by NUMA node, as without links. MIG re-layouts reuse the
table (they change no physical link), so the periodic layout check never
scans links.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Protocol

from nvdp_node.app.threads import in_thread
from nvdp_node.domain.devices import DeviceSet, NodeInventory
from nvdp_node.domain.topology import LinkTable

log = logging.getLogger(__name__)


class HasDevices(Protocol):
    @property
    def devices(self) -> DeviceSet: ...


class LinkReader:
    """The latest link table, and the one refresh in flight (a newer one replaces it)."""

    def __init__(self, read: Callable[[], LinkTable]) -> None:
        self._read = read
        self.table = LinkTable()
        self._task: asyncio.Task[None] | None = None

    def attach(self, inventory: NodeInventory) -> NodeInventory:
        """``inventory`` with the latest table, unless its discovery read one itself."""
        return inventory if inventory.links else replace(inventory, links=self.table)

    def refresh(self, states: Callable[[], Iterable[HasDevices]]) -> None:
        """Read the table on a thread, then give it to the resources ``states()`` names by then."""
        self.stop()
        self._task = asyncio.create_task(self._refresh(states), name="nvml-links")

    async def _refresh(self, states: Callable[[], Iterable[HasDevices]]) -> None:
        try:
            table = await in_thread(self._read, name="nvml-links")
        except Exception as err:  # noqa: BLE001 - without links the preference is NUMA packing, as before
            log.warning("cannot read the GPUs' links (preferred allocations pack by NUMA node): %s", err)
            return
        self.table = table
        for state in states():
            state.devices.links = table

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
