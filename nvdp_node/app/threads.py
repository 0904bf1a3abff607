"""Run blocking work (config reads, NVML enumeration, host checks) off the event loop.

The supervisor awaits :func:`in_thread` so the loop keeps answering RPCs,
signals and the watchdog meanwhile. A daemon thread per call rather than
asyncio's default executor: ``asyncio.run`` joins that executor at exit, so a
hung call (``kubelet --version``, a wedged NVML) would keep nvdp from stopping
on SIGTERM; a daemon thread is simply abandoned.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def in_thread(fn: Callable[[], T], *, name: str = "nvdp-work") -> T:
    """``fn()`` on a new daemon thread; its result or exception comes back on the loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.cancelled():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the awaiting task
            _call_soon(loop, settle, None, err)
        else:
            _call_soon(loop, settle, result, None)

    threading.Thread(target=work, name=name, daemon=True).start()
    return await future


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: object) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop closed while we worked: nobody waits any more
        pass
