"""Faults on the real stack: a stage SIGKILLed mid-conversation is degraded around (or, for ASR, named in a
quick UNAVAILABLE), ``voxpipe up`` restarts it, and the next turn is whole; ``voxpipe talk`` on silence says
so. The stack here is this module's own (it is damaged on purpose)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from clients.api import Conversation, load_audio, stream_audio
from clients.talk import BUNDLED_QUESTION
from services.launcher import wait_serving
from tests.e2e.conftest import start_stack

pytestmark = [pytest.mark.models, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def faulty_stack(models_dir):
    # The first restart waits 5 s, so a stage killed as a question starts is still down when its turn runs.
    # Speculative turns off: a turn committed from ASR's speculative result has called NLP and the recommender
    # before the final transcript arrives, so a stage killed "as the turn starts" (at the final) would not be on
    # the turn's path at all; with the faster CPU finals that now happens in some runs.
    yield from start_stack(models_dir, VOXPIPE_SUPERVISOR__INITIAL_BACKOFF_S="5.0",
                           VOXPIPE_ORCHESTRATOR__SPECULATION="false")


def stage_pid(stack, stage: str) -> int:
    """PID of the ``voxpipe serve <stage>`` child of the stack's ``voxpipe up``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == stack.process.pid and b"serve" in argv and argv[argv.index(b"serve") + 1] == stage.encode():
            return int(proc.name)
    raise AssertionError(f"no running {stage} process under voxpipe up")


async def ask_while(stack, kill: str | None = None):
    """Ask the bundled question at real-time pace; SIGKILL ``kill``'s process half a second into it (the
    turn runs ~3 s later; the supervisor restarts the stage after 5 s)."""
    pcm, rate = load_audio(BUNDLED_QUESTION)
    async with Conversation(stack.orchestrator, sample_rate_hz=rate, budget_ms=20_000) as conv:
        sender = asyncio.create_task(stream_audio(conv, pcm, rate, realtime=True))
        if kill is not None:
            await asyncio.sleep(0.5)
            os.kill(stage_pid(stack, kill), signal.SIGKILL)
        await sender
        return await conv.next_turn(timeout_s=30)


async def back_and_whole(stack, stage: str) -> None:
    """The supervisor restarts ``stage``; once it serves (and the orchestrator's ~2 s reconnect backoff has
    passed) a turn is whole again."""
    await wait_serving(stack.addresses[stage], timeout_s=120)
    await asyncio.sleep(2.5)
    turn = await asyncio.wait_for(ask_while(stack), 60)
    assert turn.audio and turn.reply_text and not turn.errors
    assert not any(s.degraded for s in turn.report.stages), [(s.stage, s.note) for s in turn.report.stages]


async def test_tts_killed_mid_conversation_gives_a_text_answer_then_comes_back(faulty_stack):
    started = time.monotonic()
    turn = await asyncio.wait_for(ask_while(faulty_stack, kill="tts"), 60)
    stages = {s.stage: s for s in turn.report.stages}
    assert turn.reply_text and turn.items and not turn.audio
    assert stages["tts"].degraded and stages["tts"].note.startswith("no audio: tts")
    assert time.monotonic() - started < 15
    await back_and_whole(faulty_stack, "tts")


async def test_recommender_killed_answers_from_the_cached_popularity_list(faulty_stack):
    turn = await asyncio.wait_for(ask_while(faulty_stack, kill="recommender"), 60)
    stages = {s.stage: s for s in turn.report.stages}
    assert turn.items and turn.audio
    assert stages["recommender"].degraded and "cached popularity" in stages["recommender"].note
    assert all("Comedy" in i.genres for i in turn.items)  # the cached list is still filtered by genre
    await back_and_whole(faulty_stack, "recommender")


async def test_nlp_killed_still_recommends_without_understanding(faulty_stack):
    turn = await asyncio.wait_for(ask_while(faulty_stack, kill="nlp"), 60)
    stages = {s.stage: s for s in turn.report.stages}
    assert stages["nlp"].degraded and "UNAVAILABLE" in stages["nlp"].note
    assert turn.items and turn.audio and turn.reply_text
    await back_and_whole(faulty_stack, "nlp")


async def test_asr_killed_ends_the_stream_with_unavailable_naming_it_quickly(faulty_stack):
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await asyncio.wait_for(ask_while(faulty_stack, kill="asr"), 30)
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE and "asr" in failed.value.details()
    assert time.monotonic() - started < 10
    await back_and_whole(faulty_stack, "asr")


# A call already on its way when the process dies ends UNAVAILABLE (connection reset) or, if the reset is not
# seen within the stage's share, DEADLINE_EXCEEDED: either way the stage is skipped and the note says why.
@pytest.mark.parametrize(("stage", "note"), [("nlp", r"skip: (UNAVAILABLE|DEADLINE_EXCEEDED)"),
                                           ("recommender", "cached popularity"), ("tts", "no audio: tts")])
async def test_a_stage_killed_as_the_turn_starts_is_degraded_around_within_the_deadline(faulty_stack, stage, note):
    """SIGKILL the stage in the middle of the question (its first second is sent, mid-word, so no endpoint
    can have been found and, speculation being off, no stage but ASR has been called); the rest follows at
    once, so the turn starts a moment later: it answers within its budget's reach, degraded around that
    stage, and says so; then the stage is back. (Killing at the final, then at the first transcript the client saw, raced the turn:
    a flood of audio can give the client its first transcript as the final, and NLP answered before a loaded
    client got to the kill; CI failed both ways.)"""
    pcm, rate = load_audio(BUNDLED_QUESTION)
    cut = rate * 2  # one second of 16-bit samples, in bytes: the clip's speech runs from 0.3 s to 2.3 s
    async with Conversation(faulty_stack.orchestrator, sample_rate_hz=rate) as conv:
        await stream_audio(conv, pcm[:cut], rate, realtime=False, trailing_silence_ms=0, end_of_utterance=False)
        os.kill(stage_pid(faulty_stack, stage), signal.SIGKILL)
        killed = time.monotonic()
        await stream_audio(conv, pcm[cut:], rate, realtime=False)
        turn = await conv.next_turn(timeout_s=30)
    stages = {s.stage: s for s in turn.report.stages}
    assert stages[stage].degraded and re.search(note, stages[stage].note), stages[stage]
    assert turn.reply_text and time.monotonic() - killed < 5
    await back_and_whole(faulty_stack, stage)


def test_talk_on_silence_says_no_speech_was_heard(faulty_stack, tmp_path):
    import soundfile as sf

    wav = tmp_path / "silence.wav"
    sf.write(wav, np.zeros(16000 * 3, np.float32), 16000)
    for extra, expected in (([], "no speech was heard"), (["--json"], '"no_speech": true')):
        done = subprocess.run([sys.executable, "-m", "clients.cli", "talk", str(wav), "--fast",
                               "--address", faulty_stack.orchestrator, *extra], capture_output=True, text=True,
                              cwd=ROOT, timeout=60, check=False)
        assert done.returncode == 1 and expected in done.stdout, (done.stdout, done.stderr)


_CLIENT = """
import asyncio, sys
from clients.api import Conversation, load_audio, stream_audio
from clients.talk import BUNDLED_QUESTION

async def one(address, pcm, rate):
    def on_event(response):
        if response.WhichOneof("event") == "audio":
            print("audio", flush=True)
    async with Conversation(address, sample_rate_hz=rate, on_event=on_event) as conv:
        await stream_audio(conv, pcm, rate, realtime=False)
        await conv.next_turn(timeout_s=120)

async def main(address, n):
    pcm, rate = load_audio(BUNDLED_QUESTION)
    await asyncio.gather(*(one(address, pcm, rate) for _ in range(n)))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def test_a_hundred_clients_that_vanish_mid_turn_leave_no_task_slot_or_memory_behind(faulty_stack):
    """50 conversations in client processes SIGKILLed as their replies stream, 50 that cancel their call as
    the reply starts: afterwards no conversation or turn holds a slot, the orchestrator's and every stage's
    event loop is back to its task count before, and the orchestrator's memory has not grown."""
    stack = faulty_stack
    stages = ("orchestrator", "nlp", "recommender", "tts", "asr")
    await asyncio.wait_for(ask_while(stack), 60)  # every peer stream is open before the baseline
    tasks_before = {s: stack.metric(s, "voxpipe_event_loop_tasks") for s in stages}
    rss_before = rss_mib(stage_pid(stack, "orchestrator"))

    async def killed_process(n: int) -> None:
        process = await asyncio.create_subprocess_exec(sys.executable, "-c", _CLIENT, stack.orchestrator, str(n),
                                                       cwd=ROOT, stdout=asyncio.subprocess.PIPE)
        try:
            await asyncio.wait_for(process.stdout.readline(), 60)  # a reply is streaming
        finally:
            process.kill()
            await process.wait()

    pcm, rate = load_audio(BUNDLED_QUESTION)

    async def cancelled_call() -> None:
        def on_event(response) -> None:
            if response.WhichOneof("event") == "audio" and not conv._call.done():
                conv._call.cancel()  # the client hangs up as its reply starts

        conv = Conversation(stack.orchestrator, sample_rate_hz=rate, on_event=on_event)
        async with conv:
            await stream_audio(conv, pcm, rate, realtime=False)
            with contextlib.suppress(Exception):
                await conv.next_turn(timeout_s=60)
        # (close() re-raises the CANCELLED the client chose)

    for _ in range(5):
        await asyncio.gather(*(killed_process(5) for _ in range(2)),
                             *(_quiet(cancelled_call()) for _ in range(10)))
    for _ in range(150):
        settled = (stack.metric("orchestrator", "voxpipe_conversations_open") == 0
                   and stack.metric("orchestrator", "voxpipe_turns_in_flight") == 0
                   and all(stack.metric(s, "voxpipe_event_loop_tasks") <= tasks_before[s] for s in stages))
        if settled:
            break
        await asyncio.sleep(0.2)
    tasks_after = {s: stack.metric(s, "voxpipe_event_loop_tasks") for s in stages}
    assert stack.metric("orchestrator", "voxpipe_conversations_open") == 0
    assert stack.metric("orchestrator", "voxpipe_turns_in_flight") == 0
    assert all(tasks_after[s] <= tasks_before[s] for s in stages), (tasks_before, tasks_after)
    assert rss_mib(stage_pid(stack, "orchestrator")) - rss_before < 40, (rss_before,)
    turn = await asyncio.wait_for(ask_while(stack), 60)
    assert turn.audio and not turn.errors


async def _quiet(coro) -> None:
    with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError, EOFError):
        await coro
