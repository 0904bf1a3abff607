"""The watchdog is pinged only while every part makes progress (issue: a wedged part must stop the pings)."""

from __future__ import annotations

import asyncio
import time

from nvdp_node.app.settings import ServeSettings
from nvdp_node.app.supervisor import Supervisor
from nvdp_node.domain.devices import NodeInventory


class StubWorker:
    """Stands in for the NVML health worker's progress clock (no NVML involved)."""

    def __init__(self, last_progress: float) -> None:
        self.last_progress = last_progress

    def stalled(self, now: float, allowance: float) -> bool:
        return now - self.last_progress > 5.0 + allowance


def supervisor_with(worker: StubWorker | None) -> Supervisor:
    sup = Supervisor(ServeSettings(), discover=lambda s: NodeInventory("", None, ()))
    sup.health = worker  # type: ignore[assignment]
    return sup


def test_a_health_worker_that_makes_progress_allows_the_ping():
    assert asyncio.run(supervisor_with(StubWorker(time.monotonic()))._alive()) is True


def test_a_health_worker_stuck_in_nvml_withholds_the_ping():
    assert asyncio.run(supervisor_with(StubWorker(time.monotonic() - 60))._alive()) is False
