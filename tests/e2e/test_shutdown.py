"""SIGTERM to ``voxpipe up`` while turns are in flight, on its own real stack: the orchestrator reports
NOT_SERVING first, every turn in flight still answers (transcript, reply, audio, report), each stream then
ends with UNAVAILABLE asking the client to reconnect, and ``voxpipe up`` exits 0 within the grace period."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.api import Conversation, load_audio, stream_audio
from clients.talk import BUNDLED_QUESTION
from tests.e2e.conftest import start_stack

pytestmark = [pytest.mark.models, pytest.mark.slow]


@pytest.fixture(scope="module")
def doomed_stack(models_dir):
    yield from start_stack(models_dir)


async def test_sigterm_under_load_drains_turns_in_flight_and_exits_0(doomed_stack):
    stack = doomed_stack
    pcm, rate = load_audio(BUNDLED_QUESTION)
    turns_started = asyncio.Event()
    finals: list[str] = []

    def on_event(response) -> None:
        if response.WhichOneof("event") == "transcript" and response.transcript.is_final and response.transcript.text:
            finals.append(response.transcript.text)
            if len(finals) == 3:
                turns_started.set()

    async def user() -> tuple[object, grpc.aio.AioRpcError | None]:
        conv = await Conversation(stack.orchestrator, sample_rate_hz=rate, on_event=on_event).__aenter__()
        ended = None
        try:
            await stream_audio(conv, pcm, rate, realtime=True)
        except grpc.aio.AioRpcError as e:
            # The clip's last second (its silence) is still being sent when a quick turn has answered and the
            # drain has ended the stream: the write fails with the stream's status. The turn must be whole.
            ended = e
        turn = await conv.next_turn(timeout_s=60)
        if ended is None:
            try:
                await conv.next_turn(timeout_s=60)
            except grpc.aio.AioRpcError as e:
                ended = e
        with contextlib.suppress(grpc.aio.AioRpcError):
            await conv.close()  # re-raises how the stream ended
        return turn, ended

    users = [asyncio.create_task(user()) for _ in range(3)]
    await asyncio.wait_for(turns_started.wait(), 60)  # every user's turn is in flight
    stack.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    statuses = []
    async with grpc.aio.insecure_channel(stack.orchestrator) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() - signalled < 10:
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.aio.AioRpcError:
                break
            statuses.append(reply.status)
            if reply.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
            await asyncio.sleep(0.02)
    assert statuses and statuses[-1] == health_pb2.HealthCheckResponse.NOT_SERVING, statuses

    results = await asyncio.wait_for(asyncio.gather(*users), 60)
    for turn, ended in results:
        assert turn.report is not None and turn.reply_text and turn.audio and not turn.errors, turn.errors
        assert ended is not None and ended.code() == grpc.StatusCode.UNAVAILABLE, ended
        assert "shutting down" in ended.details()
    code = await asyncio.to_thread(stack.process.wait, 40)
    assert code == 0, "\n".join(stack.log[-30:])
    assert time.monotonic() - signalled < 30  # the orchestrator's grace (15 s), then the model stages'
