"""What the benchmark sections share: percentiles, a NOTIFY_SOCKET recorder, a silent kubelet, an Allocate loop.

Used by ``bench_daemon.py`` and the section modules beside it
(``reload_storm.py``, ``hung_kubelet.py``). Everything here is a real
socket: a datagram socket stands in for systemd, a listening unix socket
for a kubelet that never answers, a grpc channel for a client calling
Allocate. Waits block on condition variables, so the recorded times are
those of the events, not of a polling loop.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import grpc

from nvdp_node.api import deviceplugin_v1beta1_pb2 as pb
from nvdp_node.api import deviceplugin_v1beta1_pb2_grpc as pb_grpc
from tests.kubelet_peer.silent import SilentKubelet  # noqa: F401 - re-exported for the sections

T = TypeVar("T")
Datagram = tuple[float, dict[str, str]]  # (time.monotonic() on receipt, KEY=value fields)


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def ms(x: float) -> str:
    return f"{x * 1000:.2f} ms"


def spread(values: Sequence[float]) -> str:
    """``p50 …, p99 …, max …`` of durations in seconds ("no samples" when empty)."""
    if not values:
        return "no samples"
    return f"p50 {ms(pct(values, 50))}, p99 {ms(pct(values, 99))}, max {ms(max(values))}"


class NotifyLog:
    """A NOTIFY_SOCKET: records every datagram with its arrival time and wakes waiters at once."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "notify"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.settimeout(0.2)  # only bounds how long close() waits for the thread
        self.datagrams: list[Datagram] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._receive, name="notify-log", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed:
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            with self._cond:
                self.datagrams.append((now, fields))
                self._cond.notify_all()

    def wait(self, find: Callable[[list[Datagram]], T | None], timeout: float, what: str) -> T:
        """Block until ``find(datagrams)`` returns something other than None; return it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (found := find(self.datagrams)) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {what} within {timeout} s; got {[f for _, f in self.datagrams]}")
                self._cond.wait(left)
            return found

    def times(self, key: str, *, after: float = float("-inf"), before: float = float("inf")) -> list[float]:
        """Arrival times of the datagrams that carry ``key=1``, within (after, before)."""
        with self._cond:
            return [t for t, f in self.datagrams if f.get(key) == "1" and after < t < before]

    def close(self) -> None:
        self._closed = True
        self._thread.join(1)
        self._sock.close()
        self.path.unlink(missing_ok=True)


def nth(key: str, n: int = 1, *, after: float = float("-inf")) -> Callable[[list[Datagram]], float | None]:
    """A :meth:`NotifyLog.wait` finder: when the ``n``-th ``key=1`` datagram after ``after`` arrived."""

    def find(datagrams: list[Datagram]) -> float | None:
        times = [t for t, f in datagrams if f.get(key) == "1" and t > after]
        return times[n - 1] if len(times) >= n else None

    return find


def ready_after_reload(datagrams: list[Datagram], sent: float) -> float | None:
    """The READY=1 that ends the first reload begun after ``sent`` (a SIGHUP's send time), if any."""
    began = next((t for t, f in datagrams if t > sent and f.get("RELOADING") == "1"), None)
    if began is None:
        return None
    return next((t for t, f in datagrams if t >= began and f.get("READY") == "1"), None)


class AllocateLoop:
    """Calls Allocate back to back over a real socket on a thread, recording every call.

    ``calls`` holds ``(start, latency, error)``: the start as ``time.monotonic()``
    (comparable with :class:`NotifyLog` times), the latency in seconds, the
    gRPC status name or None.
    """

    def __init__(self, socket_path: Path, device_ids: Sequence[str], timeout: float = 5.0) -> None:
        self._target = f"unix://{socket_path}"
        self._request = pb.AllocateRequest(
            container_requests=[pb.ContainerAllocateRequest(devices_ids=list(device_ids))]
        )
        self._timeout = timeout
        self.calls: list[tuple[float, float, str | None]] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="allocate-loop", daemon=True)

    def __enter__(self) -> AllocateLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with grpc.insecure_channel(self._target) as channel:
            allocate = pb_grpc.DevicePluginStub(channel).Allocate
            while not self._stop.is_set():
                start, t = time.monotonic(), time.perf_counter()
                error = None
                try:
                    allocate(self._request, timeout=self._timeout)
                except grpc.RpcError as err:
                    error = err.code().name if err.code() is not None else "UNKNOWN"
                latency = time.perf_counter() - t
                with self._cond:
                    self.calls.append((start, latency, error))
                    self._cond.notify_all()

    def wait_count(self, count: int, timeout: float = 60.0) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.calls) >= count, timeout):
                raise TimeoutError(f"only {len(self.calls)} of {count} Allocate calls within {timeout} s")

    def between(self, start: float, end: float) -> tuple[list[float], list[str]]:
        """Latencies of the calls started in [start, end), and the errors among them."""
        with self._cond:
            window = [(lat, err) for t, lat, err in self.calls if start <= t < end]
        return [lat for lat, _ in window], [err for _, err in window if err is not None]
