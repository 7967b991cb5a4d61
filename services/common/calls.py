"""The server side of multiplexed calls: many calls of one method over one bidirectional stream.

A service's ``<Method>Calls`` RPC (see ``CallHeader`` in protos/common.proto) hands each incoming call to
the same servicer method its unary RPC runs, in a task of its own, with a :class:`CallContext` standing in
for the gRPC context: the call's timeout and metadata come from its header. Each call gets what a unary
call gets (validation, error status, deadline, span, metrics); its replies carry a :class:`CallStatus`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from protos import common_pb2
from services.common.errors import DeadlineError, InvalidArgumentError, ResourceExhaustedError, first_error
from services.common.interceptor import call_scope, error_status
from services.common.wire import BadCall

_END = object()


class CallContext:
    """What a servicer reads from its context (``deadline_of``), for one multiplexed call."""

    def __init__(self, header: common_pb2.CallHeader) -> None:
        self._deadline_s = time.monotonic() + header.timeout_ms / 1e3 if header.timeout_ms > 0 else None
        self._metadata = tuple(header.metadata.items())

    def time_remaining(self) -> float | None:
        return None if self._deadline_s is None else max(self._deadline_s - time.monotonic(), 0.0)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


class CallServer:
    """Serves one ``<Method>Calls`` stream for ``handle`` (the servicer's unary or response-streaming method).

    ``reply_type`` is the stream's reply message (``status`` + ``response``). At most ``max_open_calls`` run at
    once; more are answered RESOURCE_EXHAUSTED. Replies leave through one bounded queue.
    """

    def __init__(self, stage: str, service: str, method: str, handle: Callable[..., Any], reply_type: type, *,
                 streaming: bool = False, max_open_calls: int = 256) -> None:
        self.stage = stage
        self.service = service
        self.method = method
        self.handle = handle
        self.reply_type = reply_type
        self.streaming = streaming
        self.max_open_calls = max_open_calls

    async def serve(self, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """The stream handler's body: ``async for reply in server.serve(requests): yield reply``."""
        replies: asyncio.Queue = asyncio.Queue(maxsize=256)
        runner = asyncio.create_task(self._run(requests, replies), name=f"{self.method}-calls")
        try:
            while (reply := await replies.get()) is not _END:
                yield reply
            try:
                await runner  # re-raises what ended the stream (the caller's stream failing, a message not decoding)
            except BaseExceptionGroup as group:
                raise first_error(group) from None
        finally:
            if not runner.done():
                runner.cancel()
            # Also when it already ended on its own (the server stopping under it): its error is taken here,
            # not logged as "never retrieved".
            await asyncio.gather(runner, return_exceptions=True)

    async def _run(self, requests: AsyncIterator[Any], replies: asyncio.Queue) -> None:
        open_calls: dict[int, asyncio.Task] = {}
        try:
            async with asyncio.TaskGroup() as tg:
                async for message in requests:
                    if isinstance(message, BadCall):  # fails this call only; the stream and its other calls go on
                        await replies.put(self._reply(message.call_id, *error_status(self.stage, message.error())))
                        continue
                    header = message.header
                    if header.cancel:
                        task = open_calls.get(header.call_id)
                        if task is not None:
                            task.cancel()
                        continue
                    error = self._refuse(header, open_calls)
                    if error is not None:
                        await replies.put(self._reply(header.call_id, *error_status(self.stage, error)))
                        continue
                    task = tg.create_task(self._call(header, message.request, replies),
                                          name=f"{self.method}-call-{header.call_id}")
                    open_calls[header.call_id] = task
                    task.add_done_callback(lambda _, call_id=header.call_id: open_calls.pop(call_id, None))
        finally:
            await replies.put(_END)

    def _refuse(self, header: common_pb2.CallHeader, open_calls: dict[int, asyncio.Task]) -> Exception | None:
        if header.call_id in open_calls:
            return InvalidArgumentError(f"header.call_id={header.call_id} is already open on this stream")
        if header.timeout_ms < 0:
            return InvalidArgumentError(f"header.timeout_ms={header.timeout_ms} is negative (0 = no timeout)")
        if len(open_calls) >= self.max_open_calls:
            return ResourceExhaustedError(f"{len(open_calls)} calls are open on this stream "
                                          f"(max_open_calls={self.max_open_calls}); retry when one ends")
        return None

    def _reply(self, call_id: int, code: grpc.StatusCode = grpc.StatusCode.OK, message: str = "", *,
               done: bool = True, server_ms: float = 0.0, response: Any = None) -> Any:
        status = common_pb2.CallStatus(call_id=call_id, code=code.value[0], message=message, done=done,
                                       server_ms=server_ms)
        return self.reply_type(status=status, response=response)

    async def _call(self, header: common_pb2.CallHeader, request: Any, replies: asyncio.Queue) -> None:
        """One call. Its error is its last reply, never the stream's end: the other calls go on."""
        context = CallContext(header)
        try:
            with call_scope(self.stage, self.service, self.method, header.metadata):
                try:
                    async with asyncio.timeout(context.time_remaining()):
                        await self._respond(header.call_id, request, context, replies)
                except TimeoutError:
                    raise DeadlineError(f"deadline of {header.timeout_ms:.1f} ms exceeded in {self.stage}") from None
        except Exception as e:
            await replies.put(self._reply(header.call_id, *error_status(self.stage, e)))

    async def _respond(self, call_id: int, request: Any, context: CallContext, replies: asyncio.Queue) -> None:
        start = time.perf_counter()
        if not self.streaming:
            response = await self.handle(request, context)
            await replies.put(self._reply(call_id, server_ms=(time.perf_counter() - start) * 1e3, response=response))
            return
        server_ms = 0.0  # to the first message: the stream's latency (TTS: first audio)
        async for response in self.handle(request, context):
            server_ms = server_ms or (time.perf_counter() - start) * 1e3
            await replies.put(self._reply(call_id, done=False, server_ms=server_ms, response=response))
        await replies.put(self._reply(call_id, server_ms=server_ms))
