"""The caller's side of multiplexed calls (``<Method>Calls`` RPCs, see ``CallHeader`` in protos/common.proto).

A :class:`CallStream` keeps one bidirectional stream to a stage open and runs many concurrent calls over
it, each with its own timeout, metadata and cancellation: on a turn's critical path this costs about half
of what a unary RPC costs. Calls fail as a unary call would, with ``grpc.aio.AioRpcError``, so callers
handle both transports alike. A broken stream fails its open calls with UNAVAILABLE; the next call opens
a new one.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import grpc

from protos import common_pb2

_CODES = {code.value[0]: code for code in grpc.StatusCode}
_END = object()  # ends a connection's request iterator


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """An error as a unary call raises it."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


class _Connection:
    """One open stream: its outgoing queue and the reply queue of each open call."""

    def __init__(self, open_stream: Callable[..., grpc.aio.StreamStreamCall], max_queued: int) -> None:
        self.outgoing: asyncio.Queue = asyncio.Queue(maxsize=max_queued)
        self.calls: dict[int, asyncio.Queue] = {}
        self.closed = False
        self.call = open_stream(self._requests())

    async def _requests(self) -> AsyncIterator[Any]:
        while (item := await self.outgoing.get()) is not _END:
            yield item

    async def read(self, name: str) -> None:
        """Route replies to their calls until the stream ends; then fail every open call with UNAVAILABLE."""
        error = rpc_error(grpc.StatusCode.UNAVAILABLE, f"{name}: the call stream ended")
        try:
            async for reply in self.call:
                queue = self.calls.get(reply.status.call_id)
                if queue is not None:  # else: a cancelled call's late reply
                    await queue.put(reply)
        except grpc.aio.AioRpcError as e:
            error = rpc_error(grpc.StatusCode.UNAVAILABLE, f"{name}: the call stream failed "
                                                           f"({e.code().name}): {e.details()}")
        finally:
            self._end_requests()
            for queue in self.calls.values():
                if queue.full():
                    queue.get_nowait()  # the call fails anyway: make room for its error
                queue.put_nowait(error)

    def _end_requests(self) -> None:
        """Mark the connection closed and end its request iterator, so gRPC's task consuming it finishes
        (left waiting, it is destroyed pending when the dropped call is garbage-collected)."""
        self.closed = True
        while True:
            try:
                self.outgoing.put_nowait(_END)
                return
            except asyncio.QueueFull:
                self.outgoing.get_nowait()  # nobody will send these any more

    def close(self) -> None:
        self._end_requests()
        self.call.cancel()


class CallStream:
    """Concurrent calls of one method over one stream to a stage, opened lazily and reopened after failure.

    ``open_stream`` is the stub's ``<Method>Calls``; ``call_type`` its request message (``header`` + ``request``).
    """

    def __init__(self, name: str, open_stream: Callable[..., grpc.aio.StreamStreamCall], call_type: type, *,
                 max_queued: int = 256) -> None:
        self.name = name
        self._open_stream = open_stream
        self._call_type = call_type
        self._max_queued = max_queued
        self._ids = itertools.count(1)
        self._conn: _Connection | None = None
        self._reader: asyncio.Task | None = None

    def connect(self) -> None:
        """Open the stream now (idempotent), so the first call does not pay for it; a failure shows at that call."""
        self._connection()

    def _connection(self) -> _Connection:
        if self._conn is None or self._conn.closed:
            self._conn = _Connection(self._open_stream, self._max_queued)
            self._reader = asyncio.create_task(self._conn.read(self.name), name=f"{self.name}-calls-reader")
        return self._conn

    async def unary(self, request: Any, *, timeout_s: float | None, metadata) -> tuple[Any, float]:
        """One call of a unary method: its response and the server's time (ms)."""
        async with aclosing(self.stream(request, timeout_s=timeout_s, metadata=metadata)) as replies:
            async for reply in replies:
                return reply
        raise rpc_error(grpc.StatusCode.INTERNAL, f"{self.name}: the call ended without a response")

    async def stream(self, request: Any, *, timeout_s: float | None, metadata) -> AsyncIterator[tuple[Any, float]]:
        """One call: ``(response, server_ms)`` for each response; raises its error as ``AioRpcError``.

        ``timeout_s`` covers the whole call, as a gRPC deadline would; the server enforces it too.
        Leaving early (cancellation, ``aclose``) cancels the call on the server.
        """
        conn, call_id = self._connection(), next(self._ids)
        replies: asyncio.Queue = asyncio.Queue(maxsize=self._max_queued)
        conn.calls[call_id] = replies
        header = common_pb2.CallHeader(call_id=call_id, timeout_ms=(timeout_s or 0.0) * 1e3, metadata=dict(metadata))
        done = False
        try:
            async with asyncio.timeout(timeout_s):
                await conn.outgoing.put(self._call_type(header=header, request=request))
                while True:
                    reply = await replies.get()
                    if isinstance(reply, grpc.aio.AioRpcError):
                        done = True
                        raise reply
                    status = reply.status
                    done = status.done
                    if status.code:
                        raise rpc_error(_CODES.get(status.code, grpc.StatusCode.UNKNOWN), status.message)
                    if reply.HasField("response"):
                        yield reply.response, status.server_ms
                    if done:
                        return
        except TimeoutError:
            raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED,
                            f"{self.name}: deadline of {timeout_s * 1e3:.1f} ms exceeded") from None
        finally:
            del conn.calls[call_id]
            while not replies.empty():  # unblocks the reader if it waits to queue one more reply here
                replies.get_nowait()
            if not done and not conn.closed:
                cancel = self._call_type(header=common_pb2.CallHeader(call_id=call_id, cancel=True))
                try:
                    conn.outgoing.put_nowait(cancel)
                except asyncio.QueueFull:
                    pass  # the server finishes the call; its reply is dropped

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        self._conn = self._reader = None

