"""The shared server scaffold on real grpc.aio servers: health, reflection, errors, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from protos import recommender_pb2, recommender_pb2_grpc
from services.common import ServerSettings, StageServer
from services.common.context import SERVER_TIME_HEADER, server_time_ms
from tests.helpers import running_stage
from tests.stage.probe_stage import ProbeStage

SERVICE = "voxpipe.v1.Recommender"


async def _status(channel, service: str = "") -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
    return reply.status


async def test_health_not_serving_until_loaded_then_serving_then_not_serving_on_stop():
    stage = ProbeStage()
    stage.loaded.clear()
    server = StageServer(stage, ServerSettings(port=0, grace_s=0.5))
    starting = asyncio.create_task(server.start())
    while server._handle is None or not server._handle.server:  # noqa: ASYNC110 -- observing from outside
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server._handle.port}") as channel:
        assert await _status(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await _status(channel, SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
        # The stage's own RPCs are refused while it loads, instead of reaching half-built engines.
        stub = recommender_pb2_grpc.RecommenderStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetItems(recommender_pb2.GetItemsRequest(item_ids=[1]), timeout=2)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "still loading" in err.value.details()
        stage.loaded.set()
        await starting
        assert await _status(channel) == health_pb2.HealthCheckResponse.SERVING
        assert await _status(channel, SERVICE) == health_pb2.HealthCheckResponse.SERVING
        assert (await stub.GetItems(recommender_pb2.GetItemsRequest(item_ids=[1]), timeout=2)).items
        health = server._handle.health
        await server.stop()
    reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE), None)
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_reflection_lists_the_stage_services():
    async with running_stage(ProbeStage()) as (_, channel):
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for reply in stub.ServerReflectionInfo(iter([request])):
            names = {s.name for s in reply.list_services_response.service}
            break
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


async def test_errors_map_to_status_with_message_and_server_keeps_serving():
    async with running_stage(ProbeStage()) as (_, channel):
        stub = recommender_pb2_grpc.RecommenderStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetItems(recommender_pb2.GetItemsRequest())
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "item_ids is empty" in err.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetItems(recommender_pb2.GetItemsRequest(item_ids=[-1]))
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert "RuntimeError" in err.value.details()
        reply = await stub.GetItems(recommender_pb2.GetItemsRequest(item_ids=[1, 2]))
        assert [i.item_id for i in reply.items] == [1, 2]


async def test_each_reply_carries_the_handlers_time_in_trailing_metadata():
    async with running_stage(ProbeStage()) as (_, channel):
        stub = recommender_pb2_grpc.RecommenderStub(channel)
        t0 = time.perf_counter()
        call = stub.GetItems(recommender_pb2.GetItemsRequest(item_ids=[30]), timeout=5)  # the probe sleeps 30 ms
        await call
        client_ms = (time.perf_counter() - t0) * 1e3
        server_ms = server_time_ms(await call.trailing_metadata())
    assert server_ms is not None and 30 <= server_ms <= client_ms


def test_server_time_header_parsing_ignores_what_is_not_a_time():
    assert server_time_ms([(SERVER_TIME_HEADER, "12.5")]) == 12.5
    assert server_time_ms([(SERVER_TIME_HEADER, "soon")]) is None
    assert server_time_ms([(SERVER_TIME_HEADER, "-1")]) is None
    assert server_time_ms([("x-request-id", "1")]) is None
    assert server_time_ms(None) is None


async def test_sigterm_drains_in_flight_rpc_refuses_new_ones_and_exits_zero():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.stage.probe_stage", stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        port = int(line.split()[1])
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = recommender_pb2_grpc.RecommenderStub(channel)
            await stub.GetItems(recommender_pb2.GetItemsRequest(item_ids=[0]), timeout=5)  # connected
            in_flight = asyncio.ensure_future(stub.GetItems(recommender_pb2.GetItemsRequest(item_ids=[1500]), timeout=10))
            await asyncio.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetItems(recommender_pb2.GetItemsRequest(item_ids=[0]), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            reply = await in_flight
            assert [i.item_id for i in reply.items] == [1500]
        assert await asyncio.wait_for(proc.wait(), timeout=15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_ports_in_use_give_a_clear_serve_error():
    import socket

    from services.common import ServeError

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServeError, match=f"metrics port 127.0.0.1:{port} .*VOXPIPE_PROBE__METRICS_PORT"):
            await StageServer(ProbeStage(), ServerSettings(port=0, metrics_port=port)).start()
        with pytest.raises(ServeError, match=f"cannot listen on 127.0.0.1:{port}.*VOXPIPE_PROBE__PORT"):
            await StageServer(ProbeStage(), ServerSettings(port=port)).start()


async def test_the_scaffold_warms_every_engine_after_load_and_closes_it_after_the_batchers():
    from engines.batcher import DynamicBatcher
    from engines.config import BatchingConfig
    from services.common import Stage

    events: list[str] = []

    class Engine:
        def __init__(self, name: str) -> None:
            self.name = name

        def warmup(self) -> None:
            events.append(f"warmup {self.name}")

        def close(self) -> None:
            events.append(f"close {self.name}")

    class Batcher(DynamicBatcher):
        async def close(self, timeout_s: float = 5.0) -> None:
            events.append("close batcher")
            await super().close(timeout_s)

    class TwoEngineStage(Stage):
        name = "two-engines"
        service_names = (SERVICE,)

        def load(self) -> None:
            events.append("load")
            self._engines = [Engine("a"), Engine("b")]
            self._batcher = Batcher("echo", [lambda items: items], BatchingConfig())

        def engines(self):
            return self._engines

        def warm(self) -> None:
            events.append("warm")

        def batchers(self):
            return (self._batcher,)

        def register(self, server) -> None:
            recommender_pb2_grpc.add_RecommenderServicer_to_server(recommender_pb2_grpc.RecommenderServicer(), server)

    async with running_stage(TwoEngineStage()):
        assert events == ["load", "warmup a", "warmup b", "warm"]
    assert events[4:] == ["close batcher", "close a", "close b"]
