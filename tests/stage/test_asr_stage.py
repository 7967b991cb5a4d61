"""The ASR stage on a real server (port 0): golden tokens, streaming, Recognize, every bad input."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf
import soxr
from rapidfuzz import fuzz

from protos import asr_pb2, asr_pb2_grpc, common_pb2
from services.asr import AsrConfig, AsrStage
from services.common import StageSettings
from tests.helpers import running_stage

pytestmark = [pytest.mark.models]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "asr"
REFERENCES = {r["file"]: r["text"] for r in json.loads((FIXTURES / "references.json").read_text())}
MULTI = json.loads((FIXTURES / "multi.json").read_text())


@pytest.fixture
def asr_root(models_dir) -> Path:
    return models_dir("asr")


def _stage(root: Path, **config) -> AsrStage:
    # Greedy transcripts: whether the catalogue is there to boost depends on which models other tests built
    # (phrase boosting has its own tests, test_asr_boosting.py).
    config.setdefault("default_phrases", "")
    return AsrStage(StageSettings(name="asr", models_dir=root), AsrConfig(**config))


def _pcm(name: str) -> np.ndarray:
    audio, rate = sf.read(FIXTURES / name, dtype="int16")
    assert rate == 16_000
    return audio


def _config(rate: int = 16_000, **kw) -> asr_pb2.RecognitionConfig:
    return asr_pb2.RecognitionConfig(encoding=common_pb2.LINEAR16, sample_rate_hz=rate, **kw)


def _similar(text: str, reference: str) -> float:
    norm = lambda s: "".join(c for c in s.lower() if c.isalnum() or c == " ").split()  # noqa: E731
    return fuzz.ratio(" ".join(norm(text)), " ".join(norm(reference)))


async def _requests(config, chunks, *, delay_s: float = 0.0, controls: dict[int, int] | None = None):
    yield asr_pb2.StreamingRecognizeRequest(config=config)
    for i, chunk in enumerate(chunks):
        yield asr_pb2.StreamingRecognizeRequest(audio=chunk)
        if controls and i in controls:
            yield asr_pb2.StreamingRecognizeRequest(control=asr_pb2.RecognizerControl(action=controls[i]))
        if delay_s:
            await asyncio.sleep(delay_s)


def _chunks(pcm: np.ndarray, samples: int = 1600) -> list[bytes]:
    return [pcm[i:i + samples].tobytes() for i in range(0, len(pcm), samples)]


def test_golden_tokens_equal_faster_whisper(asr_root):
    from engines.build.asr_golden import compare_fixtures

    results = compare_fixtures(asr_root / "whisper-tiny-en-encoder", asr_root / "whisper-tiny-en-decoder",
                               asr_root / "whisper-tiny-en-ct2", sorted(FIXTURES.glob("*.wav")))
    assert len(results) == len(list(FIXTURES.glob("*.wav")))
    for r in results:
        assert r["ours"] == r["reference"], r["file"]
        assert r["ours"], f"{r['file']}: empty transcript"


def test_utterances_of_different_windows_step_together_as_they_decode_alone(asr_root):
    """The CPU decoder runs one call per window in a step; each sequence decodes as it does alone."""
    from engines.repository import ModelRepository, create_engines
    from services.asr.features import log_mel
    from services.asr.generation import DECODER_MODEL, ENCODER_MODEL, create_generators, encoder_batch_fn

    repo = ModelRepository(asr_root)
    encode = encoder_batch_fn(create_engines(repo.resolve(ENCODER_MODEL))[0])
    generator = create_generators(repo.resolve(DECODER_MODEL))[0]
    audio = [sf.read(FIXTURES / name, dtype="float32")[0] for name in ("q00.wav", "q01.wav", "q02.wav")]
    mels = [log_mel(audio[0], 1000), log_mel(audio[1]), log_mel(audio[2], 1000)]
    encoded = encode(mels)  # one batch, two windows
    assert [e.cross_value.shape[2] for e in encoded] == [500, 1500, 500]

    def decode(slots: list[int]) -> dict[int, tuple[int, ...]]:
        generator.prefill([(s, encoded[s]) for s in slots])
        done: dict[int, tuple[int, ...]] = {}
        while len(done) < len(slots):
            done.update({s: r.tokens for s, r in generator.step([s for s in slots if s not in done]).items()})
        for s in slots:
            generator.release(s)
        return done

    together = decode([0, 1, 2])
    alone = {s: decode([s])[s] for s in range(3)}
    assert together == alone and all(alone.values())


async def test_streaming_interim_and_final_over_two_utterances(asr_root):
    pcm = _pcm(MULTI["file"])
    async with running_stage(_stage(asr_root)) as (_, channel):
        stub = asr_pb2_grpc.RecognizerStub(channel)
        # 100 ms chunks at real-time pace: interims appear while each utterance grows.
        calls = stub.StreamingRecognize(_requests(_config(interim_results=True, interim_interval_ms=300),
                                                  _chunks(pcm), delay_s=0.1))
        results = [r.result async for r in calls]
    finals = [r for r in results if r.is_final]
    interims = [r for r in results if not r.is_final]
    assert [f.utterance_index for f in finals] == [0, 1]
    assert all(f.endpoint_reason == asr_pb2.VAD_SILENCE for f in finals)
    for final, reference in zip(finals, MULTI["texts"], strict=True):
        assert _similar(final.text, reference) >= 60, (final.text, reference)
        assert 0.0 <= final.confidence <= 1.0 and final.stability == 1.0 and final.latency_ms >= 0
    # The clip: 0.5 s silence, utterance, 1.2 s gap, utterance, 0.5 s silence.
    assert 0.2 < finals[0].start_s < 0.8 < finals[0].end_s < finals[1].start_s < finals[1].end_s <= len(pcm) / 16_000
    assert interims, "no interim results while speaking"
    for interim in interims:
        final = finals[interim.utterance_index]
        assert results.index(interim) < results.index(final), "interim after its final"
        assert interim.start_s == final.start_s and interim.text


async def test_speculative_results_precede_their_final_and_are_withdrawn_when_speech_resumes(asr_root):
    q00, q01 = _pcm("q00.wav"), _pcm("q01.wav")
    pause, tail = np.zeros(int(1.5 * 16_000), np.int16), np.zeros(int(3.5 * 16_000), np.int16)
    # Endpoint after 3 s of silence: the 1.5 s pause is a hesitation, not the end of the question, and long
    # enough for the early final decode (~1 s on a loaded 2-core machine) to be sent before speech resumes.
    async with running_stage(_stage(asr_root, silence_ms=3000)) as (_, channel):
        stub = asr_pb2_grpc.RecognizerStub(channel)
        calls = stub.StreamingRecognize(_requests(_config(speculative_results=True),
                                                  _chunks(np.concatenate([q00, pause, q01, tail])), delay_s=0.1))
        results = [r.result async for r in calls]
    kinds = [("withdrawn" if r.withdrawn else "speculative") if r.speculative else "final" if r.is_final else "interim"
             for r in results]
    assert kinds == ["speculative", "withdrawn", "speculative", "final"], results
    first, _, second, final = results
    assert {r.utterance_index for r in results} == {0} and not final.speculative
    assert _similar(first.text, REFERENCES["q00.wav"]) >= 60, first.text
    assert second.text == final.text and second.end_s == final.end_s  # the final is the speculative decode
    assert _similar(final.text, f"{REFERENCES['q00.wav']} {REFERENCES['q01.wav']}") >= 60, final.text
    assert not results[1].text


@pytest.mark.parametrize(("stream_silence_ms", "answer_ms", "reason"), [
    (5000, 200, asr_pb2.VAD_SILENCE),      # a complete question: it ends now, not after 5 s of silence
    (2000, 10_000, asr_pb2.END_OF_STREAM),  # an unfinished one: no end after 2 s; the stream's end ends it
])
async def test_a_speculative_result_answered_with_an_utterance_silence(asr_root, stream_silence_ms, answer_ms, reason):
    speculative = asyncio.Event()
    answer = asr_pb2.StreamingRecognizeRequest(control=asr_pb2.RecognizerControl(
        action=asr_pb2.RecognizerControl.SET_UTTERANCE_SILENCE, silence_ms=answer_ms, utterance_index=0))

    async def requests():
        yield asr_pb2.StreamingRecognizeRequest(config=_config(speculative_results=True))
        answered = False
        # Real time: the early decode (at 180 ms of silence) has ~1.8 s before a 2 s endpoint on a loaded machine.
        for chunk in _chunks(np.concatenate([_pcm("q00.wav"), np.zeros(3 * 16_000, np.int16)])):
            yield asr_pb2.StreamingRecognizeRequest(audio=chunk)
            if speculative.is_set() and not answered:
                answered = True
                yield answer
            await asyncio.sleep(0.1)
        if not answered:
            await speculative.wait()
            yield answer
        await asyncio.sleep(1.0)  # time to end the utterance, if it ends, before the stream does

    async with running_stage(_stage(asr_root, silence_ms=stream_silence_ms)) as (_, channel):
        results = []
        async for response in asr_pb2_grpc.RecognizerStub(channel).StreamingRecognize(requests()):
            results.append(response.result)
            if response.result.speculative or response.result.is_final:
                speculative.set()  # a final first fails below rather than hanging here
    assert [r.speculative for r in results] == [True, False], results
    first, final = results
    assert final.endpoint_reason == reason and final.text == first.text, results


async def test_client_end_of_utterance_and_end_of_stream(asr_root):
    q00, q01 = _pcm("q00.wav"), _pcm("q01.wav")
    chunks_a, chunks_b = _chunks(q00), _chunks(q01)
    async with running_stage(_stage(asr_root, silence_ms=2000)) as (_, channel):
        stub = asr_pb2_grpc.RecognizerStub(channel)
        # No trailing silence long enough for the VAD: the client ends the first utterance itself,
        # the second one ends with the stream.
        reqs = _requests(_config(), chunks_a + chunks_b,
                         controls={len(chunks_a) - 1: asr_pb2.RecognizerControl.END_OF_UTTERANCE})
        finals = [r.result async for r in stub.StreamingRecognize(reqs)]
    assert [(f.utterance_index, f.endpoint_reason) for f in finals] == [
        (0, asr_pb2.CLIENT_END_OF_UTTERANCE), (1, asr_pb2.END_OF_STREAM)]
    assert _similar(finals[0].text, REFERENCES["q00.wav"]) >= 60, finals[0].text
    assert _similar(finals[1].text, REFERENCES["q01.wav"]) >= 60, finals[1].text
    assert finals[0].end_s <= finals[1].start_s


async def test_recognize_at_other_sample_rates(asr_root):
    pcm = _pcm(MULTI["file"])
    async with running_stage(_stage(asr_root)) as (_, channel):
        stub = asr_pb2_grpc.RecognizerStub(channel)
        for rate in (16_000, 8_000, 44_100):
            audio = soxr.resample(pcm.astype(np.float32) / 32768, 16_000, rate)
            data = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
            response = await stub.Recognize(asr_pb2.RecognizeRequest(config=_config(rate), audio=data))
            texts = [r.text for r in response.results]
            assert len(texts) == 2, (rate, texts)
            for text, reference in zip(texts, MULTI["texts"], strict=True):
                assert _similar(text, reference) >= 60, (rate, text)
            assert [r.utterance_index for r in response.results] == [0, 1]


async def test_a_long_recognize_shares_the_event_loop_with_streams(asr_root, monkeypatch):
    # Recognize parsed, converted and segmented a whole clip (up to 600 s) inside one step of the event loop,
    # stalling every stream on the process. Now it is fed to a stream session piece by piece: between two
    # pieces the loop serves everyone else, and a stream beside it gets its interims and finals as usual.
    from services.asr import endpointing

    loop_turns, turns_at_push = 0, []

    async def count_loop_turns() -> None:
        nonlocal loop_turns
        while True:
            loop_turns += 1
            await asyncio.sleep(0)

    push = endpointing.Endpointer.push
    monkeypatch.setattr(endpointing.Endpointer, "push", lambda self, prob: turns_at_push.append(loop_turns)
                        or push(self, prob))
    noise = np.random.default_rng(0).normal(0, 30, 16_000 * 300).astype("<i2").tobytes()  # 300 s, no speech
    pcm = _pcm(MULTI["file"])
    async with running_stage(_stage(asr_root)) as (_, channel):
        stub = asr_pb2_grpc.RecognizerStub(channel)
        counter = asyncio.create_task(count_loop_turns())
        long = await stub.Recognize(asr_pb2.RecognizeRequest(config=_config(), audio=noise))
        turns_during_recognize = turns_at_push[-1] - turns_at_push[0]
        recognize = stub.Recognize(asr_pb2.RecognizeRequest(config=_config(), audio=noise))  # runs from here
        calls = stub.StreamingRecognize(_requests(_config(interim_results=True, interim_interval_ms=300),
                                                  _chunks(pcm), delay_s=0.1))
        results = [r.result async for r in calls]
        await recognize
        counter.cancel()
    assert [(r.is_final, r.text) for r in long.results] == [(True, "")]
    assert turns_during_recognize >= 100, turns_during_recognize  # 150 pieces of 2 s; 0 when done in one step
    finals = [r for r in results if r.is_final]
    assert [f.utterance_index for f in finals] == [0, 1]
    assert any(not r.is_final for r in results), "no interim results beside the long Recognize"
    for final, reference in zip(finals, MULTI["texts"], strict=True):
        assert _similar(final.text, reference) >= 60, (final.text, reference)


def _stereo_wav() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros((1600, 2), np.float32), 16_000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


_SILENCE_1S = np.zeros(16_000, "<i2").tobytes()
_C = asr_pb2.StreamingRecognizeRequest
_BAD_STREAMS = {
    "audio before config": ([_C(audio=_SILENCE_1S)], grpc.StatusCode.INVALID_ARGUMENT, "must carry config, got audio"),
    "control before config": ([_C(control=asr_pb2.RecognizerControl(action=1))], grpc.StatusCode.INVALID_ARGUMENT,
                              "must carry config, got control"),
    "unsupported encoding": ([_C(config=asr_pb2.RecognitionConfig(sample_rate_hz=16_000))],
                             grpc.StatusCode.INVALID_ARGUMENT, "encoding=AUDIO_ENCODING_UNSPECIFIED"),
    "rate too low": ([_C(config=_config(4_000))], grpc.StatusCode.INVALID_ARGUMENT,
                     "sample_rate_hz=4000 is outside 8000..48000"),
    "rate too high": ([_C(config=_config(96_000))], grpc.StatusCode.INVALID_ARGUMENT, "sample_rate_hz=96000"),
    "odd byte count": ([_C(config=_config()), _C(audio=b"\x00" * 3201)], grpc.StatusCode.INVALID_ARGUMENT,
                       "3201 bytes, an odd count"),
    "stereo": ([_C(config=_config()), _C(audio=_stereo_wav())], grpc.StatusCode.INVALID_ARGUMENT, "channels=2"),
    "unknown language": ([_C(config=_config(language_code="fr-FR"))], grpc.StatusCode.INVALID_ARGUMENT,
                         "language_code='fr-FR'"),
    "too long": ([_C(config=_config())] + [_C(audio=_SILENCE_1S)] * 4, grpc.StatusCode.OUT_OF_RANGE,
                 "max_audio_s=3"),
    "second config": ([_C(config=_config()), _C(config=_config())], grpc.StatusCode.FAILED_PRECONDITION,
                      "config was already sent"),
    "unspecified control": ([_C(config=_config()), _C(control=asr_pb2.RecognizerControl())],
                            grpc.StatusCode.INVALID_ARGUMENT, "control.action=0"),
    "utterance silence too short": ([_C(config=_config()), _C(control=asr_pb2.RecognizerControl(
        action=asr_pb2.RecognizerControl.SET_UTTERANCE_SILENCE, silence_ms=10))], grpc.StatusCode.INVALID_ARGUMENT,
        "control.silence_ms=10 is outside 50..10000"),
    "utterance not started": ([_C(config=_config()), _C(control=asr_pb2.RecognizerControl(
        action=asr_pb2.RecognizerControl.SET_UTTERANCE_SILENCE, silence_ms=200, utterance_index=3))],
        grpc.StatusCode.INVALID_ARGUMENT, "control.utterance_index=3 has not started"),
}
_BAD_UNARY = {
    "no config": (asr_pb2.RecognizeRequest(audio=_SILENCE_1S), grpc.StatusCode.INVALID_ARGUMENT, "config is required"),
    "unsupported encoding": (asr_pb2.RecognizeRequest(config=asr_pb2.RecognitionConfig(sample_rate_hz=16_000)),
                             grpc.StatusCode.INVALID_ARGUMENT, "encoding=AUDIO_ENCODING_UNSPECIFIED"),
    "rate": (asr_pb2.RecognizeRequest(config=_config(50_000)), grpc.StatusCode.INVALID_ARGUMENT, "sample_rate_hz=50000"),
    "odd byte count": (asr_pb2.RecognizeRequest(config=_config(), audio=b"\x00" * 5), grpc.StatusCode.INVALID_ARGUMENT,
                       "5 bytes, an odd count"),
    "stereo": (asr_pb2.RecognizeRequest(config=_config(), audio=_stereo_wav()), grpc.StatusCode.INVALID_ARGUMENT,
               "channels=2"),
    "unknown language": (asr_pb2.RecognizeRequest(config=_config(language_code="xx"), audio=_SILENCE_1S),
                         grpc.StatusCode.INVALID_ARGUMENT, "language_code='xx'"),
    "too long": (asr_pb2.RecognizeRequest(config=_config(), audio=_SILENCE_1S * 4), grpc.StatusCode.OUT_OF_RANGE,
                 "over max_audio_s=3"),
}


async def _stream(requests: list[asr_pb2.StreamingRecognizeRequest]):
    for r in requests:
        yield r


async def test_bad_inputs_get_named_errors_and_the_service_keeps_serving(asr_root):
    async with running_stage(_stage(asr_root, max_audio_s=3.0)) as (_, channel):
        stub = asr_pb2_grpc.RecognizerStub(channel)
        for case, (requests, code, message) in _BAD_STREAMS.items():
            with pytest.raises(grpc.aio.AioRpcError) as info:
                [r async for r in stub.StreamingRecognize(_stream(requests))]
            assert info.value.code() == code, case
            assert message in info.value.details(), (case, info.value.details())
        for case, (request, code, message) in _BAD_UNARY.items():
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Recognize(request)
            assert info.value.code() == code, case
            assert message in info.value.details(), (case, info.value.details())
        # Empty audio is defined, not an error: one empty final result.
        results = [r.result async for r in stub.StreamingRecognize(_stream([_C(config=_config()), _C(audio=b"")]))]
        assert [(r.is_final, r.text, r.endpoint_reason) for r in results] == [(True, "", asr_pb2.END_OF_STREAM)]
        silent = [r.result async for r in stub.StreamingRecognize(_stream([_C(config=_config()), _C(audio=_SILENCE_1S)]))]
        assert [(r.is_final, r.text) for r in silent] == [(True, "")]
        eou = [r.result async for r in stub.StreamingRecognize(_stream(
            [_C(config=_config()), _C(control=asr_pb2.RecognizerControl(action=1)), _C(audio=_SILENCE_1S)]))]
        assert [(r.text, r.endpoint_reason) for r in eou] == [("", asr_pb2.CLIENT_END_OF_UTTERANCE)]
        response = await stub.Recognize(asr_pb2.RecognizeRequest(config=_config(), audio=b""))
        assert [(r.is_final, r.text) for r in response.results] == [(True, "")]
        # Still serving after every error above.
        response = await stub.Recognize(asr_pb2.RecognizeRequest(config=_config(), audio=_pcm("q01.wav").tobytes()))
        assert _similar(response.results[0].text, REFERENCES["q01.wav"]) >= 60


async def test_transcribe_client_json(asr_root, capsys):
    from clients.api import load_audio
    from clients.transcribe import TranscribeOptions, transcribe

    pcm, rate = load_audio(FIXTURES / MULTI["file"])
    async with running_stage(_stage(asr_root)) as (server, _):
        for stream in (False, True):
            options = TranscribeOptions(address=server.address, audio=FIXTURES / MULTI["file"], stream=stream,
                                        as_json=True, speed=0.0, interim=True, silence_ms=0, timeout_s=60.0)
            assert await transcribe(options, pcm, rate) == 0
            lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
            assert [line["utterance_index"] for line in lines] == [0, 1], lines
            for line, reference in zip(lines, MULTI["texts"], strict=True):
                assert _similar(line["text"], reference) >= 60 and line["start_s"] < line["end_s"]


@pytest.mark.parametrize(("budget", "code", "message"), [
    ("1", grpc.StatusCode.DEADLINE_EXCEEDED, "deadline"),
    ("0", grpc.StatusCode.DEADLINE_EXCEEDED, "deadline"),
    ("0.001", grpc.StatusCode.DEADLINE_EXCEEDED, "deadline"),
    ("-5", grpc.StatusCode.INVALID_ARGUMENT, "x-voxpipe-budget-ms='-5' must be a number of milliseconds >= 0"),
    ("soon", grpc.StatusCode.INVALID_ARGUMENT, "x-voxpipe-budget-ms='soon'"),
])
async def test_recognize_with_a_spent_or_bad_budget_says_so(asr_root, budget, code, message):
    # Once INTERNAL ("ExceptionGroup: unhandled errors in a TaskGroup") for a budget of 1, 0, 0.001 or -5 ms.
    speech = next(p for p in sorted(FIXTURES.glob("*.wav")) if p.name in REFERENCES).read_bytes()
    async with running_stage(_stage(asr_root)) as (_, channel):
        stub = asr_pb2_grpc.RecognizerStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Recognize(asr_pb2.RecognizeRequest(config=_config(), audio=speech),
                                 metadata=[("x-voxpipe-budget-ms", budget)], timeout=30)
        assert info.value.code() == code and message in info.value.details(), info.value.details()
        assert (await stub.Recognize(asr_pb2.RecognizeRequest(config=_config(), audio=speech), timeout=30)).results


async def test_a_stream_sent_faster_than_real_time_is_held_to_its_lead_then_refused_past_max_audio(asr_root):
    """Silence written as fast as gRPC takes it: ASR reads no further than ``stream_max_lead_s`` ahead of real
    time (plus gRPC's 64 KiB window, ~2 s of audio), so the writer waits; past ``max_audio_s`` the stream ends
    with OUT_OF_RANGE, the writer sees that status, and the stage serves the next stream."""
    async with running_stage(_stage(asr_root, stream_max_lead_s=1.0, max_audio_s=6.0)) as (_, channel):
        stub = asr_pb2_grpc.RecognizerStub(channel)
        call = stub.StreamingRecognize()
        await call.write(_C(config=_config()))
        started, sent_s, accepted_at_1s = asyncio.get_running_loop().time(), 0.0, None
        with pytest.raises((grpc.aio.AioRpcError, asyncio.InvalidStateError)):  # the latter: written after the end
            while sent_s < 60:
                await call.write(_C(audio=_SILENCE_1S[:3200]))
                sent_s += 0.1
                if accepted_at_1s is None and asyncio.get_running_loop().time() - started >= 1.0:
                    accepted_at_1s = sent_s
        assert await call.code() == grpc.StatusCode.OUT_OF_RANGE, await call.details()
        assert "max_audio_s=6" in await call.details()
        assert accepted_at_1s is not None and accepted_at_1s < 5.0  # unpaced, all 6 s went in at once
        assert sent_s < 10.0
        results = [r.result async for r in stub.StreamingRecognize(_stream([_C(config=_config()), _C(audio=_SILENCE_1S)]))]
        assert [(r.is_final, r.text) for r in results] == [(True, "")]
