"""A server that ends a stream while its client is still writing: the client sees the server's status, not
grpcio's ``INTERNAL: Internal error from Core`` (grpc/grpc#36066; services/common/grpc_fix.py)."""

from __future__ import annotations

import asyncio
import collections

import grpc

from protos import assistant_pb2, assistant_pb2_grpc
from services.common import grpc_fix


class _EndsEarly(assistant_pb2_grpc.AssistantServicer):
    async def Converse(self, request_iterator, context):
        n = 0
        async for _ in request_iterator:
            n += 1
            if n == 20:
                await context.abort(grpc.StatusCode.OUT_OF_RANGE, "too much audio")
        yield assistant_pb2.ConverseResponse()


async def test_writes_racing_the_end_of_a_stream_report_the_servers_status():
    assert grpc_fix.apply()
    server = grpc.aio.server()
    assistant_pb2_grpc.add_AssistantServicer_to_server(_EndsEarly(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = assistant_pb2_grpc.AssistantStub(channel)

            async def writer() -> str:  # the client style: call.write in a loop
                call = stub.Converse()
                try:
                    for _ in range(2000):
                        await call.write(assistant_pb2.ConverseRequest(audio=b"\0" * 3200))
                except grpc.aio.AioRpcError as e:
                    return e.code().name
                except asyncio.InvalidStateError:
                    return (await call.code()).name
                return "never ended"

            async def iterated() -> str:  # the orchestrator's style: a request iterator
                async def requests():
                    for _ in range(2000):
                        yield assistant_pb2.ConverseRequest(audio=b"\0" * 3200)
                try:
                    async for _ in stub.Converse(requests()):
                        pass
                except grpc.aio.AioRpcError as e:
                    return e.code().name
                return "never ended"

            codes = await asyncio.wait_for(asyncio.gather(*(writer() for _ in range(25)),
                                                          *(iterated() for _ in range(25))), 60)
    finally:
        await server.stop(0)
    assert collections.Counter(codes) == {"OUT_OF_RANGE": 50}
