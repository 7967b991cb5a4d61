"""The TTS stage on a real gRPC server: streaming, spans, resampling, voices, bad input, cancel, batching."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY

from engines.build.tts import ENCODER_NAME
from protos import common_pb2, tts_pb2, tts_pb2_grpc
from services.common.sentences import split_sentences
from services.tts import create_stage
from tests.helpers import running_stage
from tests.stage.tts_fixtures import pcm_of, piper_voice_fixture, tts_models_fixture, tts_settings  # noqa: F401

pytestmark = pytest.mark.models

REPLY = ("I found three comedies you might like. Clueless is from 1995 and rated 4.5/5. "
         "Groundhog Day came out in 1993! Would you like another suggestion?")
MANY = " ".join(f"This is sentence number {i} of the reply." for i in range(1, 11))


async def _collect(stub, **fields) -> list[tts_pb2.SynthesizeResponse]:
    return [r async for r in stub.Synthesize(tts_pb2.SynthesizeRequest(**fields), timeout=60)]


async def _error(stub, **fields) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _collect(stub, **fields)
    return info.value


async def test_streams_sentence_by_sentence_with_spans(tts_models):
    stage = create_stage(tts_settings(tts_models))
    async with running_stage(stage) as (_, channel):
        stub = tts_pb2_grpc.SynthesizerStub(channel)
        responses = await _collect(stub, text=REPLY)
    sentences = split_sentences(REPLY)
    assert len(sentences) == 4
    assert [r.sentence_index for r in responses] == sorted(r.sentence_index for r in responses)
    assert sorted({r.sentence_index for r in responses}) == [0, 1, 2, 3]
    for r in responses:
        s = sentences[r.sentence_index]
        assert (r.text_start, r.text_end) == (s.start, s.end)
        assert r.encoding == common_pb2.LINEAR16 and r.sample_rate_hz == 22050
        assert len(r.audio) > 0 and len(r.audio) % 2 == 0
    assert [r.last for r in responses] == [False] * (len(responses) - 1) + [True]
    audio = pcm_of(responses)
    seconds = audio.size / 22050
    assert 6.0 < seconds < 20.0
    assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) > 1000  # speech, not silence


async def test_service_audio_is_piper_audio(tts_models, piper_voice):
    """Noise off and no gain: what the service streams (first sentence in pieces) is piper-tts's audio."""
    from piper.config import SynthesisConfig

    text = "I recommend Groundhog Day. It is a comedy about a weatherman who lives the same day again and again."
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, normalize_audio=False)
    reference = [c.audio_int16_array for c in piper_voice.synthesize(text, config)]
    stage = create_stage(tts_settings(tts_models, noise_scale=0.0, noise_w_scale=0.0, gain_db=0.0))
    async with running_stage(stage) as (_, channel):
        responses = await _collect(tts_pb2_grpc.SynthesizerStub(channel), text=text)
    assert len([r for r in responses if r.sentence_index == 0]) > 1  # the first sentence came in pieces
    for index, theirs in enumerate(reference):
        mine = pcm_of([r for r in responses if r.sentence_index == index])
        assert mine.size == theirs.size
        assert np.abs(mine.astype(np.int32) - theirs).max() <= 4  # 1e-4 of full scale


async def test_first_sentence_arrives_before_the_rest_is_synthesised(tts_models):
    stage = create_stage(tts_settings(tts_models, lookahead_sentences=1))
    async with running_stage(stage) as (_, channel):
        stub = tts_pb2_grpc.SynthesizerStub(channel)
        call = stub.Synthesize(tts_pb2.SynthesizeRequest(text=MANY), timeout=60)
        first = await call.read()
        done_at_first = stage.synthesizer.stats.sentences_done
        rest = []
        while (r := await call.read()) is not grpc.aio.EOF:
            rest.append(r)
    assert first.sentence_index == 0
    assert done_at_first <= 3 < 10
    assert rest[-1].last and rest[-1].sentence_index == 9


async def test_resamples_to_the_requested_rate(tts_models):
    stage = create_stage(tts_settings(tts_models, noise_scale=0.0, noise_w_scale=0.0))
    async with running_stage(stage) as (_, channel):
        stub = tts_pb2_grpc.SynthesizerStub(channel)
        native = pcm_of(await _collect(stub, text="Enjoy the movie."))
        for rate in (8000, 16000, 44100, 48000):
            resampled = await _collect(stub, text="Enjoy the movie.", sample_rate_hz=rate)
            assert all(r.sample_rate_hz == rate for r in resampled)
            assert abs(pcm_of(resampled).size - native.size * rate / 22050) <= 2


async def test_long_sentences_come_in_bounded_chunks(tts_models):
    stage = create_stage(tts_settings(tts_models, max_chunk_ms=200))
    async with running_stage(stage) as (_, channel):
        stub = tts_pb2_grpc.SynthesizerStub(channel)
        responses = await _collect(stub, text="Here is a longer sentence that certainly lasts well over one second.",
                                   sample_rate_hz=48000)
    assert len(responses) > 3
    assert all(len(r.audio) <= 48000 * 2 * 200 // 1000 for r in responses)
    assert {(r.text_start, r.text_end, r.sentence_index) for r in responses} == {(0, 68, 0)}
    assert [r.last for r in responses].count(True) == 1 and responses[-1].last


async def test_list_voices(tts_models):
    async with running_stage(create_stage(tts_settings(tts_models))) as (_, channel):
        reply = await tts_pb2_grpc.SynthesizerStub(channel).ListVoices(tts_pb2.ListVoicesRequest(), timeout=10)
    assert reply.default_voice == "en_US-joe-medium"
    [voice] = reply.voices
    assert voice.name == "en_US-joe-medium" and voice.language_code == "en-US"
    assert voice.native_sample_rate_hz == 22050 and "CC0" in voice.licence


async def test_bad_input_gets_clear_errors_and_the_service_keeps_serving(tts_models):
    async with running_stage(create_stage(tts_settings(tts_models))) as (_, channel):
        stub = tts_pb2_grpc.SynthesizerStub(channel)
        cases = [
            (dict(text=""), grpc.StatusCode.INVALID_ARGUMENT, "empty"),
            (dict(text=" \n\t "), grpc.StatusCode.INVALID_ARGUMENT, "empty"),
            (dict(text="a" * 2001), grpc.StatusCode.INVALID_ARGUMENT, "limit of 2000"),
            (dict(text="Hi.", voice="en_GB-nobody"), grpc.StatusCode.NOT_FOUND, "'en_GB-nobody'"),
            (dict(text="Hi.", sample_rate_hz=4000), grpc.StatusCode.INVALID_ARGUMENT, "sample_rate_hz=4000"),
            (dict(text="Hi.", sample_rate_hz=96000), grpc.StatusCode.INVALID_ARGUMENT, "sample_rate_hz=96000"),
            (dict(text="Hi.", length_scale=-1.0), grpc.StatusCode.INVALID_ARGUMENT, "length_scale=-1.0"),
            (dict(text="Hi.", length_scale=float("nan")), grpc.StatusCode.INVALID_ARGUMENT, "length_scale=nan"),
            (dict(text="Hi.", length_scale=10.0), grpc.StatusCode.INVALID_ARGUMENT, "length_scale=10.0"),
        ]
        for fields, code, needle in cases:
            error = await _error(stub, **fields)
            assert error.code() == code, fields
            assert needle in error.details(), (fields, error.details())
        assert pcm_of(await _collect(stub, text="Still here.", voice="EN_us-JOE-medium")).size > 0


async def test_text_limit_is_configurable(tts_models):
    async with running_stage(create_stage(tts_settings(tts_models, max_text_chars=50))) as (_, channel):
        stub = tts_pb2_grpc.SynthesizerStub(channel)
        error = await _error(stub, text="x" * 51)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "limit of 50" in error.details()
        assert pcm_of(await _collect(stub, text="Ok. " * 12 + "Ok")).size > 0  # exactly 50 is fine


async def test_emoji_controls_and_unknown_symbols_are_spoken_or_skipped(tts_models):
    async with running_stage(create_stage(tts_settings(tts_models))) as (_, channel):
        stub = tts_pb2_grpc.SynthesizerStub(channel)
        mixed = await _collect(stub, text="Hello 😀 world\x07\x1b[31m ★ ™ 中文 \u200b done. 🎬🎬")
        assert pcm_of(mixed).size > 22050 // 2 and mixed[-1].last
        for text in ("🎬🎬🎬", "...!?", "\x00\x01\x02", "★ ™ ©"):
            # Nothing to say: INVALID_ARGUMENT, as Understand answers the same text (it was OK with no audio).
            error = await _error(stub, text=text)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "has no words" in error.details(), text
        assert pcm_of(await _collect(stub, text="Still here.")).size > 0


async def test_client_cancel_stops_later_sentences(tts_models):
    stage = create_stage(tts_settings(tts_models, lookahead_sentences=1))
    async with running_stage(stage) as (_, channel):
        stub = tts_pb2_grpc.SynthesizerStub(channel)
        call = stub.Synthesize(tts_pb2.SynthesizeRequest(text=MANY), timeout=60)
        first = await call.read()
        assert first.sentence_index == 0
        call.cancel()
        await asyncio.sleep(1.5)  # longer than several sentences take; a runaway stream would go on
        stats = stage.synthesizer.stats
        started, done = stats.sentences_started, stats.sentences_done
        # Sentence 0 was sent; at most sentence 1 (lookahead) and 2 (scheduled as 0 was consumed) ran.
        assert started <= 3 and done <= 3
        await asyncio.sleep(0.5)
        assert stage.synthesizer.stats.sentences_started == started
        # The service is still fine for the next client.
        assert pcm_of(await _collect(stub, text="Next please.")).size > 0


async def test_budget_header_becomes_the_deadline(tts_models):
    async with running_stage(create_stage(tts_settings(tts_models))) as (_, channel):
        stub = tts_pb2_grpc.SynthesizerStub(channel)
        call = stub.Synthesize(tts_pb2.SynthesizeRequest(text=MANY), timeout=60,
                               metadata=(("x-voxpipe-budget-ms", "1"),))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            _ = [r async for r in call]
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def _batch_count(le: str) -> float:
    labels = {"stage": "tts", "model": ENCODER_NAME}
    return REGISTRY.get_sample_value("voxpipe_batch_size_bucket", {**labels, "le": le}) or 0.0


async def test_concurrent_requests_batch_and_each_gets_only_its_own_audio(tts_models):
    texts = ["Sure.", "Can you recommend a comedy from the nineties?",
             "Here are three films you might enjoy: Clueless, Groundhog Day and Toy Story.", "Enjoy it!"]
    quiet = dict(noise_scale=0.0, noise_w_scale=0.0)
    async with running_stage(create_stage(tts_settings(tts_models, **quiet))) as (_, channel):
        stub = tts_pb2_grpc.SynthesizerStub(channel)
        alone = [pcm_of(await _collect(stub, text=t)) for t in texts]
    batched_stage = create_stage(tts_settings(tts_models, serving={"max_batch_size": 4, "max_queue_delay_us": 200_000},
                                                **quiet))
    single_before, all_before = _batch_count("1.0"), _batch_count("+Inf")
    async with running_stage(batched_stage) as (_, channel):
        stub = tts_pb2_grpc.SynthesizerStub(channel)
        together = await asyncio.gather(*(_collect(stub, text=t) for t in texts))
    assert _batch_count("+Inf") - all_before > _batch_count("1.0") - single_before  # some batch held > 1
    for a, b in zip(alone, together, strict=True):
        b = pcm_of(b)
        assert a.size == b.size  # trimmed by the predicted durations: no neighbour's padding
        assert np.abs(a.astype(np.int32) - b).max() <= 64  # float32 sums differ slightly by batch shape


async def test_a_full_queue_is_resource_exhausted_and_the_service_recovers(tts_models):
    stage = create_stage(tts_settings(tts_models, serving={"max_queue_size": 1}))
    async with running_stage(stage) as (_, channel):
        stub = tts_pb2_grpc.SynthesizerStub(channel)
        results = await asyncio.gather(*(_collect(stub, text="Here is a sentence to keep the queue busy.")
                                         for _ in range(8)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert errors and all(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for e in errors)
        assert all("queue full" in e.details() for e in errors)
        assert len(errors) < 8  # the ones that got in were served
        assert pcm_of(await _collect(stub, text="Still serving.")).size > 0
