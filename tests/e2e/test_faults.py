"""Faults on the real stack: a stage SIGKILLed mid-conversation is degraded around (or, for ASR, named in a
quick UNAVAILABLE), ``voxpipe up`` restarts it, and the next turn is whole; ``voxpipe talk`` on silence says
so. The stack here is this module's own (it is damaged on purpose)."""

from __future__ import annotations

import asyncio
import os
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
    yield from start_stack(models_dir, VOXPIPE_SUPERVISOR__INITIAL_BACKOFF_S="5.0")


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


def test_talk_on_silence_says_no_speech_was_heard(faulty_stack, tmp_path):
    import soundfile as sf

    wav = tmp_path / "silence.wav"
    sf.write(wav, np.zeros(16000 * 3, np.float32), 16000)
    for extra, expected in (([], "no speech was heard"), (["--json"], '"no_speech": true')):
        done = subprocess.run([sys.executable, "-m", "clients.cli", "talk", str(wav), "--fast",
                               "--address", faulty_stack.orchestrator, *extra], capture_output=True, text=True,
                              cwd=ROOT, timeout=60, check=False)
        assert done.returncode == 1 and expected in done.stdout, (done.stdout, done.stderr)
