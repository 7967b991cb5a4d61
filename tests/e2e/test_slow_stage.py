"""A slow stage: the link to NLP delays every byte by 800 ms (a small TCP proxy), past the whole turn budget. The turn is degraded around it and says so in its report, and NLP computes nothing for the late
request: the request arrives with its budget already spent in transit (``x-voxpipe-sent-unix-ns``) and its
batcher drops it on arrival. Real ASR, recommender and TTS (the session's stack), a real NLP stage and an
orchestrator in this process (so NLP's counters can be read)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from clients.api import Conversation, load_audio, stream_audio
from clients.talk import BUNDLED_QUESTION
from orchestrator import create_stage as create_orchestrator
from services.common import StageSettings
from services.nlp import create_stage as create_nlp
from tests.helpers import running_stage
from tests.stage.nlp_fixtures import nlp_models_fixture, nlp_settings  # noqa: F401

pytestmark = [pytest.mark.models, pytest.mark.slow]
DELAY_S = 0.8
BUDGET_MS = 600


class DelayingProxy:
    """Forwards TCP connections to ``target``; bytes from the client reach the server ``delay_s`` late, in
    order (the replies come back at once)."""

    def __init__(self, target: str, delay_s: float) -> None:
        self.host, port = target.rsplit(":", 1)
        self.port = int(port)
        self.delay_s = delay_s
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _connection(self, client_reader, client_writer) -> None:
        server_reader, server_writer = await asyncio.open_connection(self.host, self.port)
        for pipe in (self._pipe(client_reader, server_writer, self.delay_s), self._pipe(server_reader, client_writer, 0)):
            task = asyncio.create_task(pipe)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader, writer, delay_s: float) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver() -> None:
            while (item := await queue.get()) is not None:
                due, data = item
                await asyncio.sleep(max(0.0, due - loop.time()))
                writer.write(data)
                await writer.drain()
            writer.close()

        delivery = asyncio.create_task(deliver())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((loop.time() + delay_s, data))
        finally:
            queue.put_nowait(None)
            await delivery


def nlp_counts() -> dict[str, float]:
    computed = dropped = 0.0
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.labels.get("stage") != "nlp":
                continue
            if sample.name == "voxpipe_stage_seconds_count" and sample.labels.get("phase") == "compute":
                computed += sample.value
            if sample.name == "voxpipe_batcher_dropped_total" and sample.labels.get("reason") == "deadline":
                dropped += sample.value
    return {"computed": computed, "dropped_late": dropped}


async def test_a_slow_link_to_nlp_is_degraded_around_and_nlp_computes_nothing_late(stack, nlp_models):
    async with running_stage(create_nlp(nlp_settings(nlp_models))) as (nlp_server, _):
        proxy = DelayingProxy(nlp_server.address, DELAY_S)
        peers = {s: stack.addresses[s] for s in ("asr", "recommender", "tts")}
        peers["nlp"] = await proxy.start()
        settings = StageSettings(name="orchestrator", models_dir=Path("/nonexistent"), peers=peers)
        try:
            async with running_stage(create_orchestrator(settings)) as (orchestrator, _):
                pcm, rate = load_audio(BUNDLED_QUESTION)
                # A turn's budget (600 ms) below the delay: whatever the earlier stages leave, NLP's timeout and
                # the budget it is sent are shorter than the way there. The first turn opens the (delayed)
                # connection and call stream; the second is the one measured.
                async with Conversation(orchestrator.address, sample_rate_hz=rate, budget_ms=BUDGET_MS) as conv:
                    for _ in range(2):
                        await asyncio.sleep(2 * DELAY_S)  # a late request (and its cancel) has reached NLP
                        before = nlp_counts()
                        await stream_audio(conv, pcm, rate, realtime=False)
                        turn = await conv.next_turn(timeout_s=30)
                await asyncio.sleep(2 * DELAY_S)
                after = nlp_counts()
        finally:
            await proxy.close()
    stages = {s.stage: s for s in turn.report.stages}
    assert stages["nlp"].degraded and stages["nlp"].missed, stages["nlp"]
    assert stages["nlp"].ms < 1000 * DELAY_S  # the orchestrator gave up at NLP's share, not after the delay
    assert turn.reply_text and turn.items and turn.audio  # an answer all the same
    assert after["computed"] == before["computed"], (before, after)  # NLP ran nothing for the late request
    assert after["dropped_late"] > before["dropped_late"], (before, after)
