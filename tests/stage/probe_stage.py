"""A stage with a deliberately slow, fake servicer: tests the server scaffold in isolation.

``GetItems`` sleeps ``item_ids[0]`` milliseconds, then echoes the ids; no ids -> INVALID_ARGUMENT;
id -1 -> an unexpected exception (INTERNAL). ``Recommend`` (also multiplexed, as ``RecommendCalls``) sleeps
``k`` milliseconds and answers with one item, whose id is ``k``; k=0 -> INVALID_ARGUMENT. Cancelled calls are
recorded in ``cancelled`` (monotonic times). Run as ``python -m tests.stage.probe_stage`` it serves on a
free port, prints ``PORT <n>`` and drains on SIGTERM like every real stage.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import grpc

from protos import recommender_pb2, recommender_pb2_grpc
from services.common import InvalidArgumentError, ServerSettings, Stage, StageServer
from services.common.calls import CallServer


class ProbeServicer(recommender_pb2_grpc.RecommenderServicer):
    def __init__(self, stage: ProbeStage) -> None:
        self._stage = stage
        self._calls = CallServer(stage.name, stage.service_names[0], "Recommend", self.Recommend,
                                 recommender_pb2.RecommendCallReply, max_open_calls=8)

    async def RecommendCalls(self, request_iterator, context):
        async for reply in self._calls.serve(request_iterator):
            yield reply

    async def Recommend(self, request, context):
        if request.k == 0:
            raise InvalidArgumentError("k=0: ask for at least one item")
        try:
            await asyncio.sleep(request.k / 1e3)
        except asyncio.CancelledError:
            self._stage.cancelled.append(time.monotonic())
            raise
        return recommender_pb2.RecommendResponse(items=[recommender_pb2.Item(item_id=request.k)])

    async def GetItems(self, request, context):
        if not request.item_ids:
            raise InvalidArgumentError("item_ids is empty")
        if request.item_ids[0] == -1:
            raise RuntimeError("unexpected")
        await asyncio.sleep(request.item_ids[0] / 1e3)
        return recommender_pb2.GetItemsResponse(items=[recommender_pb2.Item(item_id=i) for i in request.item_ids])


class ProbeStage(Stage):
    name = "probe"
    service_names = (recommender_pb2.DESCRIPTOR.services_by_name["Recommender"].full_name,)

    def __init__(self) -> None:
        self.loaded = threading.Event()  # tests hold loading with this to observe NOT_SERVING
        self.loaded.set()
        self.cancelled: list[float] = []

    def load(self) -> None:
        self.loaded.wait(timeout=30)

    def register(self, server: grpc.aio.Server) -> None:
        recommender_pb2_grpc.add_RecommenderServicer_to_server(ProbeServicer(self), server)


if __name__ == "__main__":
    server = StageServer(ProbeStage(), ServerSettings(port=0, grace_s=5.0))
    asyncio.run(server.serve_until_signal(on_ready=lambda s: print(f"PORT {s.port}", flush=True)))
    sys.exit(0)
