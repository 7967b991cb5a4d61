"""Multiplexed calls (``<Method>Calls``) on a real server: the probe stage's ``RecommendCalls`` via CallStream."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from orchestrator.calls import CallStream
from protos import common_pb2, recommender_pb2, recommender_pb2_grpc
from tests.fakes import closed_port_address
from tests.helpers import running_stage
from tests.stage.probe_stage import ProbeStage

METADATA = [("x-request-id", "test")]


def calls_of(channel) -> CallStream:
    stub = recommender_pb2_grpc.RecommenderStub(channel)
    return CallStream("probe", stub.RecommendCalls, recommender_pb2.RecommendCall)


def ask(k: int) -> recommender_pb2.RecommendRequest:
    return recommender_pb2.RecommendRequest(k=k)


async def first_cancel(stage: ProbeStage, within_s: float = 1.0) -> float | None:
    """When the probe saw its first call cancelled (monotonic), waiting up to ``within_s`` for it."""
    for _ in range(int(within_s / 0.005)):
        if stage.cancelled:
            return stage.cancelled[0]
        await asyncio.sleep(0.005)
    return None


async def test_concurrent_calls_share_one_stream_and_each_gets_its_own_answer():
    async with running_stage(ProbeStage()) as (_, channel):
        calls = calls_of(channel)
        try:
            # The slowest call was sent first: answers come back as they finish, each to its own caller.
            results = await asyncio.gather(*(calls.unary(ask(k), timeout_s=5, metadata=METADATA) for k in (60, 20, 1)))
            assert [r.items[0].item_id for r, _ in results] == [60, 20, 1]
            assert all(0 < server_ms for _, server_ms in results) and results[0][1] >= 60
        finally:
            await calls.close()


async def test_a_failed_call_raises_its_status_and_the_stream_keeps_serving():
    async with running_stage(ProbeStage()) as (_, channel):
        calls = calls_of(channel)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await calls.unary(ask(0), timeout_s=5, metadata=METADATA)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "k=0" in err.value.details()
            response, _ = await calls.unary(ask(2), timeout_s=5, metadata=METADATA)
            assert response.items[0].item_id == 2
        finally:
            await calls.close()


async def test_timeout_is_deadline_exceeded_and_the_server_stops_the_call():
    stage = ProbeStage()
    async with running_stage(stage) as (_, channel):
        calls = calls_of(channel)
        try:
            t0 = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await calls.unary(ask(2000), timeout_s=0.05, metadata=METADATA)
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "50.0 ms" in err.value.details()
            assert time.monotonic() - t0 < 1.0
            cancelled = await first_cancel(stage)
            assert cancelled is not None and cancelled - t0 < 0.5
        finally:
            await calls.close()


async def test_cancelling_the_caller_cancels_the_call_on_the_server_within_50_ms():
    stage = ProbeStage()
    async with running_stage(stage) as (_, channel):
        calls = calls_of(channel)
        try:
            task = asyncio.create_task(calls.unary(ask(5000), timeout_s=10, metadata=METADATA))
            await asyncio.sleep(0.2)
            t0 = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            cancelled = await first_cancel(stage)
            assert cancelled is not None and cancelled - t0 < 0.05
        finally:
            await calls.close()


async def test_stage_down_is_unavailable_and_the_next_call_tries_again():
    async with grpc.aio.insecure_channel(closed_port_address()) as channel:
        calls = calls_of(channel)
        for _ in range(2):  # the broken stream is not reused: each call opens a new one
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await calls.unary(ask(1), timeout_s=5, metadata=METADATA)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "probe" in err.value.details()
        await calls.close()


async def test_a_refused_stream_ends_its_request_iterator():
    """A stream the stage refused (still loading: UNAVAILABLE before reading any call) ends its request
    iterator, so gRPC's task consuming it finishes instead of waiting forever, to be destroyed pending when the
    dropped call is garbage-collected (seen in a GPU stack whose orchestrator started before its stages)."""
    from services.common.server import build_server

    def consumers() -> list[asyncio.Task]:
        return [t for t in asyncio.all_tasks() if "_consume_request_iterator" in repr(t.get_coro())]

    handle = build_server(ProbeStage(), "127.0.0.1:0")
    await handle.set_serving(False)
    await handle.server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            calls = calls_of(channel)
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await calls.unary(ask(1), timeout_s=5, metadata=METADATA)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            for _ in range(100):
                if not consumers():
                    break
                await asyncio.sleep(0.01)
            assert not consumers(), consumers()
            await calls.close()
    finally:
        await handle.server.stop(0)


async def test_bad_headers_and_too_many_open_calls_are_answered_per_call():
    async with running_stage(ProbeStage()) as (_, channel):
        stub = recommender_pb2_grpc.RecommenderStub(channel)

        def call(call_id: int, k: int, timeout_ms: float = 0.0) -> recommender_pb2.RecommendCall:
            return recommender_pb2.RecommendCall(header=common_pb2.CallHeader(call_id=call_id, timeout_ms=timeout_ms),
                                                 request=ask(k))

        # The probe allows 8 open calls: ids 1-8 stay open (2 s each), 1 again is a duplicate, 9 is one too many.
        requests = [call(i, 2000) for i in range(1, 9)] + [call(1, 1), call(9, 1), call(10, 1, timeout_ms=-1)]
        stream = stub.RecommendCalls()
        for r in requests:
            await stream.write(r)
        replies = [await stream.read() for _ in range(3)]
        stream.cancel()
    by_id = {r.status.call_id: r.status for r in replies}
    assert by_id[1].code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "already open" in by_id[1].message
    assert by_id[9].code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] and "max_open_calls=8" in by_id[9].message
    assert by_id[10].code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "timeout_ms=-1" in by_id[10].message
    assert all(s.done for s in by_id.values())
