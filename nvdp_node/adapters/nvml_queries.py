"""One GPU's NVML queries, with every failure collected instead of raised.

Used by NVML discovery (``nvdp_node.adapters.nvml``) for a GPU's own
attributes and by ``nvdp_node.adapters.nvml_mig`` for its MIG devices, so
that a failing query marks that GPU (``Gpu.error``) and never ends the
enumeration of the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import pynvml

log = logging.getLogger(__name__)
T = TypeVar("T")


class GpuQueries:
    """One GPU's attribute queries, collecting failures into ``error`` instead of raising.

    A required query's failure, or any query answering GPU_IS_LOST, is an
    error; once the GPU is lost the remaining queries are not even tried. An
    optional query's other failures (NOT_SUPPORTED and the like) only mean
    the attribute is unknown, as upstream treats them.
    """

    def __init__(self, handle: object) -> None:
        self.handle = handle
        self.problems: list[str] = []
        self.lost = False

    @property
    def error(self) -> str | None:
        return "; ".join(self.problems) or None

    def problem(self, what: str, why: object) -> None:
        """Record a failure found outside an NVML call (a MIG profile NVML's answers cannot name)."""
        self.problems.append(f"{what}: {why}")

    def required(self, what: str, query: Callable[[object], T], default: T) -> T:
        return self._run(what, query, default, required=True)

    def optional(self, what: str, query: Callable[[object], T], default: T) -> T:
        return self._run(what, query, default, required=False)

    def _run(self, what: str, query: Callable[[object], T], default: T, *, required: bool) -> T:
        if self.lost:
            return default
        try:
            return query(self.handle)
        except pynvml.NVMLError as err:
            self.lost = err.value == pynvml.NVML_ERROR_GPU_IS_LOST
            if required or self.lost:
                self.problems.append(f"{what}: {err}")
            else:
                log.debug("optional NVML query (%s) failed: %s", what, err)
            return default


def text(value: str | bytes) -> str:
    """pynvml returns str in recent versions and bytes in older ones."""
    return value.decode() if isinstance(value, bytes) else value
