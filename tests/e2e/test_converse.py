"""End to end on the real stack (every stage's real model, started by ``voxpipe up``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pytest
import soxr

from clients.api import Conversation, TurnResult, load_audio, stream_audio
from clients.talk import BUNDLED_QUESTION
from orchestrator import create_stage
from protos import assistant_pb2, assistant_pb2_grpc, tts_pb2, tts_pb2_grpc
from services.common import StageSettings
from tests.fakes import closed_port_address
from tests.helpers import running_stage

pytestmark = [pytest.mark.models, pytest.mark.slow]
MISHEARD_TITLE = Path(__file__).resolve().parents[1] / "fixtures" / "asr_titles" / "christmas_carol.wav"


async def speak(stack, text: str) -> tuple[bytes, int]:
    """The user's question, spoken by the stack's own TTS voice and resampled to 16 kHz."""
    async with grpc.aio.insecure_channel(stack.addresses["tts"]) as channel:
        chunks = [c async for c in tts_pb2_grpc.SynthesizerStub(channel).Synthesize(
            tts_pb2.SynthesizeRequest(text=text), timeout=30)]
    pcm = np.frombuffer(b"".join(c.audio for c in chunks), dtype="<i2").astype(np.float32) / 32768
    pcm16 = soxr.resample(pcm, chunks[0].sample_rate_hz, 16000)
    return (np.clip(pcm16, -1, 1) * 32767).astype("<i2").tobytes(), 16000


# Functional tests must not depend on how loaded the test machine is: they ask with a generous budget.
# The budget itself is exercised by test_exhausted_budget_is_degraded_and_reported.
FUNCTIONAL_BUDGET_MS = 20_000


async def ask(address: str, clips: list[tuple[bytes, int]], **kw) -> list[TurnResult]:
    """One conversation, one turn per clip (each clip followed by trailing silence), fast pace."""
    kw.setdefault("budget_ms", FUNCTIONAL_BUDGET_MS)
    turns: list[TurnResult] = []
    async with Conversation(address, sample_rate_hz=clips[0][1], **kw) as conv:
        for pcm, rate in clips:
            await stream_audio(conv, pcm, rate, realtime=False)
            turns.append(await conv.next_turn(timeout_s=60))
    return turns


async def test_bundled_question_gets_a_spoken_answer_with_a_report(stack):
    pcm, rate = load_audio(BUNDLED_QUESTION)
    (turn,) = await ask(stack.orchestrator, [(pcm, rate)])
    assert "comedy" in turn.transcript.lower()
    assert turn.intent == "recommend"
    assert turn.items and all("Comedy" in i.genres and 1990 <= i.year <= 1999 for i in turn.items)
    assert turn.reply_text and not turn.errors
    assert len(turn.audio) / 2 / turn.sample_rate_hz > 1.0  # seconds of reply speech
    assert [s.stage for s in turn.report.stages] == ["asr", "nlp", "recommender", "tts"]
    assert turn.report.voice_to_voice_ms > 0 and turn.client_voice_to_voice_ms > 0
    # Every stage says how long its server took, so the report splits each stage into server time and hop.
    assert all(0 < s.server_ms <= s.ms for s in turn.report.stages)
    hops = sum(s.ms - s.server_ms for s in turn.report.stages)
    assert turn.report.overhead_ms == pytest.approx(turn.report.orchestration_ms + hops, abs=0.01)


async def test_a_turn_prepared_speculatively_answers_as_a_turn_started_at_the_endpoint(stack):
    pcm, rate = load_audio(BUNDLED_QUESTION)
    # Sent faster than real time, the endpoint comes before the speculative decode is done: a normal turn.
    (plain,) = await ask(stack.orchestrator, [(pcm, rate)])
    # In real time, with a 2 s endpoint silence, the speculative result comes first even on a loaded 2-core CI
    # machine (where a final's decode took ~1 s).
    async with Conversation(stack.orchestrator, sample_rate_hz=rate, budget_ms=FUNCTIONAL_BUDGET_MS,
                            silence_ms=2000) as conv:
        await stream_audio(conv, pcm, rate, realtime=True, trailing_silence_ms=2500)
        speculative = await conv.next_turn(timeout_s=60)
    assert not plain.report.speculative
    assert speculative.report.speculative and speculative.report.hidden_ms > 0, speculative.report
    assert (speculative.transcript, speculative.intent, speculative.reply_text) == (
        plain.transcript, plain.intent, plain.reply_text)
    assert [i.item_id for i in speculative.items] == [i.item_id for i in plain.items]
    assert len(speculative.audio) / 2 / speculative.sample_rate_hz > 1.0 and not speculative.errors  # (VITS samples)


async def test_multi_turn_something_else_gives_new_movies(stack):
    first = await speak(stack, "Recommend a comedy from the nineties.")
    more = await speak(stack, "Something else, please.")
    t1, t2 = await ask(stack.orchestrator, [first, more])
    assert t1.intent == "recommend" and t2.intent == "more"
    assert t2.items and not {i.item_id for i in t1.items} & {i.item_id for i in t2.items}
    assert all("Comedy" in i.genres for i in t2.items)  # "something else" keeps the last request's filters


async def test_a_rating_changes_the_next_recommendation(stack):
    rate = await speak(stack, "I loved Star Wars.")
    ask_for = await speak(stack, "Recommend a movie.")
    rated_turns = await ask(stack.orchestrator, [rate, ask_for])
    (control,) = await ask(stack.orchestrator, [ask_for])
    assert rated_turns[0].intent == "rate"
    assert "star wars" in rated_turns[0].reply_text.lower()
    assert [i.item_id for i in rated_turns[1].items] != [i.item_id for i in control.items]


async def test_barge_in_cancels_the_reply(stack):
    pcm, rate = load_audio(BUNDLED_QUESTION)
    async with Conversation(stack.orchestrator, sample_rate_hz=rate, budget_ms=FUNCTIONAL_BUDGET_MS) as conv:
        got_audio = asyncio.Event()
        conv.on_event = lambda r: got_audio.set() if r.WhichOneof("event") == "audio" else None
        await stream_audio(conv, pcm, rate, realtime=False)
        await asyncio.wait_for(got_audio.wait(), 60)
        await conv.cancel_turn()
        turn = await conv.next_turn(timeout_s=30)
    assert turn.report.cancelled


async def test_tts_down_still_answers_in_text_with_tts_degraded(stack):
    peers = {s: stack.addresses[s] for s in ("asr", "nlp", "recommender")} | {"tts": closed_port_address()}
    settings = StageSettings(name="orchestrator", models_dir=Path("/nonexistent"), peers=peers)
    async with running_stage(create_stage(settings)) as (server, _):
        pcm, rate = load_audio(BUNDLED_QUESTION)
        (turn,) = await asyncio.wait_for(ask(server.address, [(pcm, rate)]), 60)
    assert turn.reply_text and turn.items  # understood and answered in text
    assert turn.errors and turn.errors[0].stage == "tts" and turn.errors[0].code == "UNAVAILABLE"
    tts = next(s for s in turn.report.stages if s.stage == "tts")
    assert tts.degraded and tts.note == "no audio: tts unavailable (UNAVAILABLE)"
    assert not turn.audio


async def test_exhausted_budget_is_degraded_and_reported(stack):
    pcm, rate = load_audio(BUNDLED_QUESTION)
    (turn,) = await ask(stack.orchestrator, [(pcm, rate)], budget_ms=100)
    stages = {s.stage: s for s in turn.report.stages}
    assert turn.report.missed and turn.report.budget_ms == 100
    assert stages["asr"].missed or stages["nlp"].missed
    assert any(s.degraded for s in turn.report.stages)
    assert turn.reply_text and turn.audio  # degraded, but still an answer


async def test_bad_audio_config_is_invalid_argument_and_the_stack_keeps_serving(stack):
    async with grpc.aio.insecure_channel(stack.orchestrator) as channel:
        stub = assistant_pb2_grpc.AssistantStub(channel)
        bad = assistant_pb2.ConverseRequest(config=assistant_pb2.ConverseConfig())
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.Converse(iter([bad]), timeout=10):
                pass
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "audio.encoding" in err.value.details()
    pcm, rate = load_audio(BUNDLED_QUESTION)
    (turn,) = await ask(stack.orchestrator, [(pcm, rate)])
    assert turn.reply_text


async def test_a_simulated_user_listens_to_the_whole_reply_and_thinks_before_asking_again(stack):
    """The load generator's user (``voxpipe bench``): turn after turn on one stream, real-time pace."""
    from clients.load import LoadOptions, run_users

    think_s = (0.5, 0.6)
    options = LoadOptions(addresses=(stack.orchestrator,), wavs=(BUNDLED_QUESTION,), users=1, duration_s=15.0,
                          think_s=think_s, ramp_s=0.0, budget_ms=FUNCTIONAL_BUDGET_MS, chunk_ms=100)
    result = await asyncio.wait_for(run_users(options, range(1)), 120)
    assert not result.errors, result.errors
    turns = sorted(result.turns, key=lambda t: t["asked_s"])
    assert len(turns) >= 2 and all(t["user"] == 0 for t in turns)
    pcm, rate = load_audio(BUNDLED_QUESTION)
    # The reply may start in the speaker's trailing pause, or even in the quiet tail of the last word (the VAD
    # can end the utterance there): allow half a second before the question's last sample.
    question_s = len(pcm) / 2 / rate - 0.5
    for first, second in zip(turns, turns[1:], strict=False):
        assert first["audio_s"] > 0 and first["client_voice_to_voice_ms"] > 0
        # The next question waits for the question, the whole reply played from its first byte, and the pause.
        assert second["asked_s"] - first["asked_s"] >= question_s + first["audio_s"] + think_s[0]


async def test_an_unknown_voice_is_refused_when_the_stream_opens(stack):
    pcm, rate = load_audio(BUNDLED_QUESTION)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await asyncio.wait_for(ask(stack.orchestrator, [(pcm, rate)], voice="en_GB-nobody"), 30)
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    assert "config.voice='en_GB-nobody'" in err.value.details() and "en_us-joe-medium" in err.value.details()
    (turn,) = await ask(stack.orchestrator, [(pcm, rate)], voice="EN_us-JOE-medium")  # TTS ignores case too
    assert turn.audio


async def test_a_film_title_whisper_mishears_is_heard_through_the_catalogue(stack):
    # Whisper tiny alone hears "what year did a Christmas cattle come out" (an espeak-ng voice, en-gb); the ASR stage
    # boosts the catalogue's titles by default, so the NLP gets the title and the reply answers about the film.
    pcm, rate = load_audio(MISHEARD_TITLE)
    (turn,) = await ask(stack.orchestrator, [(pcm, rate)])
    assert "Christmas Carol" in turn.transcript, turn.transcript
    titles = [e.value for e in turn.understanding.entities if e.type == "title"]
    assert titles == ["Christmas Carol, A"], turn.understanding
    assert "Christmas Carol" in turn.reply_text and "1938" in turn.reply_text, turn.reply_text
