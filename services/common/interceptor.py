"""The server interceptor every service installs: ids into contextvars, errors to status, metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager, nullcontext
from typing import Any

import grpc
from opentelemetry import trace
from prometheus_client import Counter

from engines.metrics import STAGE_SECONDS
from services.common import context as ctx
from services.common.errors import UnavailableError, bounded, status_of
from services.common.tracing import extract_context
from services.common.wire import BadCall, BadMessage, tolerant

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("voxpipe.server")

GRPC_HANDLED = Counter(
    "voxpipe_grpc_handled_total", "RPCs completed, by service, method and status code.",
    ("service", "method", "code"),
)


def _split_method(full: str) -> tuple[str, str]:
    service, _, method = full.rpartition("/")
    return service.lstrip("/"), method


def error_status(stage: str, error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a caller gets for ``error`` (logged; INTERNAL with its traceback)."""
    code = status_of(error)
    if code is grpc.StatusCode.INTERNAL:
        log.exception("unexpected error in %s", stage, exc_info=error)
        return code, bounded(f"internal error in {stage}: {type(error).__name__}: {error}")
    message = bounded(str(error))
    log.info("%s: %s: %s", stage, code.name, message)
    return code, message


@contextmanager
def call_scope(stage: str, service: str, method: str, metadata: Mapping[str, str], *, traced: bool = True) -> Iterator[None]:
    """Around one call (an RPC, or one call of a multiplexed stream): request and trace ids into contextvars,
    a server span (child of the caller's ``traceparent``), and the call counted and timed by status code.

    Each call runs in its own task (its own context copy): the ids are set, never reset across awaits.
    """
    ctx.REQUEST_ID.set(str(metadata.get(ctx.REQUEST_ID_HEADER) or ctx.new_request_id()))
    ctx.TRACE_ID.set(ctx.trace_id_from_traceparent(str(metadata.get(ctx.TRACEPARENT_HEADER, ""))) or "-")
    start, code = time.perf_counter(), grpc.StatusCode.OK
    span = _tracer.start_as_current_span(f"{service}/{method}", context=extract_context(metadata),
                                         kind=trace.SpanKind.SERVER) if traced else nullcontext()
    try:
        with span:
            yield
    except grpc.aio.AbortError:
        code = grpc.StatusCode.UNKNOWN
        raise
    except BaseException as e:
        code = grpc.StatusCode.CANCELLED if isinstance(e, asyncio.CancelledError) else status_of(e)
        raise
    finally:
        GRPC_HANDLED.labels(service, method, code.name).inc()
        STAGE_SECONDS.labels(stage=stage, phase="total", model=method).observe(time.perf_counter() - start)


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each handler in :func:`call_scope`, maps exceptions to status, and returns the handler's time.

    Until ``ready`` is set (engines loaded and warmed), calls to the stage's own services are refused with
    UNAVAILABLE; health and reflection always answer. A multiplexed stream (``*Calls``) is not traced as
    one span: each of its calls is (``services.common.calls``).
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
        # A request that does not decode reaches the handler as a BadMessage (INVALID_ARGUMENT), not as INTERNAL.
        deserializer = tolerant(handler.request_deserializer, calls=method.endswith("Calls"))
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, service, method, metadata),
                request_deserializer=deserializer, response_serializer=handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, service, method, metadata),
                request_deserializer=deserializer, response_serializer=handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(handler.stream_unary, service, method, metadata, streaming=True),
                request_deserializer=deserializer, response_serializer=handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(
            self._wrap_stream(handler.stream_stream, service, method, metadata, streaming=True),
            request_deserializer=deserializer, response_serializer=handler.response_serializer)

    @asynccontextmanager
    async def _rpc(self, context: grpc.aio.ServicerContext, service: str, method: str,
                   metadata: Mapping[str, str]) -> AsyncIterator[None]:
        """Around one RPC: :func:`call_scope`, the readiness gate, and errors sent as the RPC's status."""
        try:
            with call_scope(self.stage, service, method, metadata, traced=not method.endswith("Calls")):
                if not self.ready and service in self.gated_services:
                    raise UnavailableError(f"{self.stage} is still loading its models (health NOT_SERVING); retry shortly")
                yield
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as e:
            await context.abort(*error_status(self.stage, e))

    def _wrap_unary(self, behavior, service: str, method: str, metadata: Mapping[str, str], *,
                    streaming: bool = False):
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            async with self._rpc(context, service, method, metadata):
                response = await behavior(_checked(request, streaming), context)
                _set_server_time(context, start)
                return response

        return wrapper

    def _wrap_stream(self, behavior, service: str, method: str, metadata: Mapping[str, str], *,
                     streaming: bool = False):
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            start, first = time.perf_counter(), True
            async with self._rpc(context, service, method, metadata):
                async for response in behavior(_checked(request, streaming), context):
                    if first:  # the time to the first message is the stream's latency (TTS: first audio)
                        _set_server_time(context, start)
                        first = False
                    yield response

        return wrapper


def _checked(request: Any, streaming: bool) -> Any:
    """The request, or for a request stream its iterator, with undecodable messages raised as
    INVALID_ARGUMENT (a multiplexed stream's BadCall passes: its CallServer fails that one call)."""
    if not streaming:
        if isinstance(request, BadMessage):
            raise request.error()
        return request

    async def messages() -> AsyncIterator[Any]:
        async for message in request:
            if isinstance(message, BadMessage) and not isinstance(message, BadCall):
                raise message.error()
            yield message

    return messages()


def _set_server_time(context: grpc.aio.ServicerContext, start: float) -> None:
    """Send the handler's time so far back in trailing metadata (:data:`ctx.SERVER_TIME_HEADER`)."""
    context.set_trailing_metadata(((ctx.SERVER_TIME_HEADER, f"{(time.perf_counter() - start) * 1e3:.3f}"),))
