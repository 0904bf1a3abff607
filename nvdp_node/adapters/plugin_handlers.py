"""The DevicePlugin service's method handlers, built so hostile requests stay cheap.

Called by :class:`~nvdp_node.adapters.plugin_server.PluginServer`, in place of
the generated ``add_DevicePluginServicer_to_server``. Anyone who can reach the
socket can send bytes that are not a protobuf message. With the generated
handlers each such request costs a traceback at ERROR from grpc's own logger
and an UNKNOWN status. Here the request deserializer catches protobuf's
``DecodeError`` and the call fails with ``INVALID_ARGUMENT`` and no traceback;
the count is logged at WARNING at most once a minute ("N undecodable requests
in the last minute, e.g. to <method>: <why>"). Unexpected exceptions of the
servicer are counted and logged the same way (ERROR, with the traceback of the
first one in each minute) and fail the call with ``INTERNAL``. grpc's own
loggers are quieted by ``app/logs.py``, so these are the only lines a flood
leaves in the journal.

Each answered RPC is also told to an :class:`RpcObserver` (the metrics): its
method, gRPC status code and duration, and each ListAndWatch message sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf.message import DecodeError

from nvdp_node.api import deviceplugin_v1beta1_pb2 as pb

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["DevicePlugin"]
REPORT_INTERVAL = 60.0


class RateLimitedReport:
    """Counts events and lets one log line through per ``interval``; pure, the caller passes ``now``.

    The first event of a quiet period is reported at once (count 1); later
    ones are counted and reported by :meth:`flush` once the interval since
    the last line has passed, so a burst costs two lines, not one per event.
    """

    def __init__(self, what: str, interval: float = REPORT_INTERVAL) -> None:
        self.what = what
        self.interval = interval
        self.total = 0
        self._last_line_at: float | None = None
        self._suppressed = 0
        self._example = ""

    def record(self, now: float, example: str) -> str | None:
        """Count one event; the line to log now, or None if this interval already had its line."""
        self.total += 1
        if self._last_line_at is not None and now - self._last_line_at < self.interval:
            self._suppressed += 1
            self._example = example
            return None
        count, self._suppressed = self._suppressed + 1, 0
        self._last_line_at = now
        return self._line(count, example)

    def flush(self, now: float, *, force: bool = False) -> str | None:
        """The line for the events counted but not yet reported, once the interval has passed."""
        if not self._suppressed or self._last_line_at is None:
            return None
        if not force and now - self._last_line_at < self.interval:
            return None
        count, self._suppressed = self._suppressed, 0
        self._last_line_at = now
        return self._line(count, self._example)

    def due_in(self, now: float) -> float | None:
        """Seconds until :meth:`flush` has something to say, or None when nothing is pending."""
        if not self._suppressed or self._last_line_at is None:
            return None
        return max(0.0, self._last_line_at + self.interval - now)

    def _line(self, count: int, example: str) -> str:
        plural = "" if count == 1 else "s"
        return f"{count} {self.what}{plural} in the last minute, e.g. {example}"


class Reporter:
    """A :class:`RateLimitedReport` on the event loop: logs, and arms a timer for the pending count."""

    def __init__(self, report: RateLimitedReport, level: int) -> None:
        self.report = report
        self._level = level
        self._timer: asyncio.TimerHandle | None = None

    def record(self, example: str, exc: BaseException | None = None) -> None:
        loop = asyncio.get_running_loop()
        line = self.report.record(loop.time(), example)
        if line is not None:
            log.log(self._level, "%s", line, exc_info=exc)
        elif self._timer is None:
            delay = self.report.due_in(loop.time())
            if delay is not None:
                self._timer = loop.call_later(delay, self._flush)

    def _flush(self, *, force: bool = False) -> None:
        self._timer = None
        line = self.report.flush(asyncio.get_running_loop().time(), force=force)
        if line is not None:
            log.log(self._level, "%s", line)

    def close(self) -> None:
        """Report what is still counted (the server stops): nothing is lost, nothing fires later."""
        if self._timer is not None:
            self._timer.cancel()
        self._flush(force=True)


class RpcObserver(Protocol):
    """Told about every answered RPC (on the loop); must be cheap: it runs inside Allocate."""

    def rpc_done(self, method: str, code: str, seconds: float) -> None: ...

    def stream_sent(self, method: str) -> None: ...


class _NoRpcObserver:
    def rpc_done(self, method: str, code: str, seconds: float) -> None:
        return None

    def stream_sent(self, method: str) -> None:
        return None


@dataclass(frozen=True)
class _Undecodable:
    """What the deserializer hands to the behaviour instead of a message it could not parse."""

    details: str


class DevicePluginHandlers:
    """The generic handler for ``v1beta1.DevicePlugin`` over one servicer, plus its two reports."""

    def __init__(self, servicer: object, *, rpc: RpcObserver | None = None) -> None:
        self._rpc = rpc or _NoRpcObserver()
        self.undecodable = Reporter(RateLimitedReport("undecodable request"), logging.WARNING)
        self.failed = Reporter(RateLimitedReport("failed request"), logging.ERROR)
        self.methods: dict[str, grpc.RpcMethodHandler] = {}
        for method in SERVICE.methods:
            path = f"/{SERVICE.full_name}/{method.name}"
            request_type = getattr(pb, method.input_type.name)
            serializer = getattr(pb, method.output_type.name).SerializeToString
            behaviour = getattr(servicer, method.name)
            deserializer = self._deserializer(request_type, path)
            if method.server_streaming:
                self.methods[method.name] = grpc.unary_stream_rpc_method_handler(
                    self._streaming(behaviour, path, method.name),
                    request_deserializer=deserializer,
                    response_serializer=serializer,
                )
            else:
                self.methods[method.name] = grpc.unary_unary_rpc_method_handler(
                    self._unary(behaviour, path, method.name),
                    request_deserializer=deserializer,
                    response_serializer=serializer,
                )

    def add_to(self, server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, self.methods),))
        server.add_registered_method_handlers(SERVICE.full_name, self.methods)

    def close(self) -> None:
        self.undecodable.close()
        self.failed.close()

    def _deserializer(self, request_type: Any, path: str) -> Callable[[bytes], object]:
        def deserialize(data: bytes) -> object:
            try:
                return request_type.FromString(data)
            except DecodeError as err:
                self.undecodable.record(f"to {path}: {err}")
                return _Undecodable(f"the request to {path} could not be decoded: {err}")

        return deserialize

    def _unary(self, behaviour: Callable[..., Any], path: str, name: str) -> Callable[..., Any]:
        async def handle(request: object, context: grpc.aio.ServicerContext) -> object:
            started, code = time.perf_counter(), "OK"
            try:
                if isinstance(request, _Undecodable):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.details)
                return await behaviour(request, context)
            except grpc.aio.AbortError:
                code = _code_name(context)
                raise
            except Exception as err:
                code = "INTERNAL"
                await self._internal(context, path, err)
            finally:
                self._rpc.rpc_done(name, code, time.perf_counter() - started)

        return handle

    def _streaming(self, behaviour: Callable[..., Any], path: str, name: str) -> Callable[..., AsyncIterator[object]]:
        async def handle(request: object, context: grpc.aio.ServicerContext) -> AsyncIterator[object]:
            if isinstance(request, _Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.details)
            try:
                # aclosing: when grpc closes this generator, the servicer's must run its finally too.
                async with aclosing(behaviour(request, context)) as responses:
                    async for response in responses:
                        yield response
                        self._rpc.stream_sent(name)
            except grpc.aio.AbortError:
                raise
            except Exception as err:
                await self._internal(context, path, err)

        return handle

    async def _internal(self, context: grpc.aio.ServicerContext, path: str, err: Exception) -> None:
        self.failed.record(f"{path}: {type(err).__name__}: {err}"[:300], err)
        await context.abort(grpc.StatusCode.INTERNAL, f"nvdp could not answer {path}: {type(err).__name__}")


def _code_name(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
