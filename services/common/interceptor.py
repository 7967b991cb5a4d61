"""The server interceptor every service installs: ids into contextvars, errors to status, metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
from opentelemetry import trace
from prometheus_client import Counter

from engines.metrics import STAGE_SECONDS
from services.common import context as ctx
from services.common.errors import UnavailableError, status_of
from services.common.tracing import extract_context

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("voxpipe.server")

GRPC_HANDLED = Counter(
    "voxpipe_grpc_handled_total", "RPCs completed, by service, method and status code.",
    ("service", "method", "code"),
)


def _split_method(full: str) -> tuple[str, str]:
    service, _, method = full.rpartition("/")
    return service.lstrip("/"), method


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each handler: binds request/trace ids, maps exceptions to status, counts codes, times RPCs.

    Until ``ready`` is set (engines loaded and warmed), calls to the stage's own services are refused with
    UNAVAILABLE; health and reflection always answer.
    """

    def __init__(self, stage: str, gated_services: tuple[str, ...] = ()) -> None:
        self.stage = stage
        self.gated_services = frozenset(gated_services)
        self.ready = False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        service, method = _split_method(details.method)
        metadata = {k: v for k, v in (details.invocation_metadata or ()) if isinstance(v, str)}
        ids = self._ids(metadata)
        parent = extract_context(metadata)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, service, method, ids, parent),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, service, method, ids, parent),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(handler.stream_unary, service, method, ids, parent),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(
            self._wrap_stream(handler.stream_stream, service, method, ids, parent),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)

    @staticmethod
    def _ids(metadata: dict[str, Any]) -> tuple[str, str]:
        request_id = str(metadata.get(ctx.REQUEST_ID_HEADER) or ctx.new_request_id())
        trace_id = ctx.trace_id_from_traceparent(str(metadata.get(ctx.TRACEPARENT_HEADER, ""))) or "-"
        return request_id, trace_id

    def _finish(self, service: str, method: str, context: grpc.aio.ServicerContext, start: float,
                code: grpc.StatusCode | None) -> None:
        code = code or context.code() or grpc.StatusCode.OK
        name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        GRPC_HANDLED.labels(service, method, name).inc()
        STAGE_SECONDS.labels(stage=self.stage, phase="total", model=method).observe(time.perf_counter() - start)

    async def _abort(self, context: grpc.aio.ServicerContext, error: Exception) -> grpc.StatusCode:
        code = status_of(error)
        if code is grpc.StatusCode.INTERNAL:
            log.exception("unexpected error in %s", self.stage, exc_info=error)
            message = f"internal error in {self.stage}: {type(error).__name__}: {error}"
        else:
            log.info("%s: %s: %s", self.stage, code.name, error)
            message = str(error)
        await context.abort(code, message)
        return code  # not reached: abort raises

    @asynccontextmanager
    async def _rpc(self, context: grpc.aio.ServicerContext, service: str, method: str, ids: tuple[str, str],
                   parent) -> AsyncIterator[None]:
        """Around one RPC: ids into contextvars, a server span, errors mapped to status, metrics at the end."""
        # Each RPC runs in its own task (its own context copy): set, never reset across await points.
        ctx.REQUEST_ID.set(ids[0])
        ctx.TRACE_ID.set(ids[1])
        start, code = time.perf_counter(), None
        try:
            if not self.ready and service in self.gated_services:
                raise UnavailableError(f"{self.stage} is still loading its models (health NOT_SERVING); retry shortly")
            with _tracer.start_as_current_span(f"{service}/{method}", context=parent, kind=trace.SpanKind.SERVER):
                yield
        except grpc.aio.AbortError:
            raise
        except Exception as e:
            code = status_of(e)
            await self._abort(context, e)
        finally:
            self._finish(service, method, context, start, code)

    def _wrap_unary(self, behavior, service: str, method: str, ids: tuple[str, str], parent):
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            async with self._rpc(context, service, method, ids, parent):
                response = await behavior(request, context)
                _set_server_time(context, start)
                return response

        return wrapper

    def _wrap_stream(self, behavior, service: str, method: str, ids: tuple[str, str], parent):
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            start, first = time.perf_counter(), True
            async with self._rpc(context, service, method, ids, parent):
                async for response in behavior(request, context):
                    if first:  # the time to the first message is the stream's latency (TTS: first audio)
                        _set_server_time(context, start)
                        first = False
                    yield response

        return wrapper


def _set_server_time(context: grpc.aio.ServicerContext, start: float) -> None:
    """Send the handler's time so far back in trailing metadata (:data:`ctx.SERVER_TIME_HEADER`)."""
    context.set_trailing_metadata(((ctx.SERVER_TIME_HEADER, f"{(time.perf_counter() - start) * 1e3:.3f}"),))
