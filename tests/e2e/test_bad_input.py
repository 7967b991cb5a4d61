"""The bad-input matrix: every public RPC of the running stack, one row per bad input. Each row names the
status code and a piece of the message that names the bad value; after each row a good request to the same
service is served. Multiplexed ``<Method>Calls`` rows check that the bad call fails alone. ``voxpipe talk`` /
``transcribe`` rows run the CLI on bad files."""

from __future__ import annotations

import asyncio
import io
import struct
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf

from protos import (
    asr_pb2,
    asr_pb2_grpc,
    assistant_pb2,
    assistant_pb2_grpc,
    common_pb2,
    nlp_pb2,
    nlp_pb2_grpc,
    recommender_pb2,
    recommender_pb2_grpc,
    tts_pb2,
    tts_pb2_grpc,
)

pytestmark = [pytest.mark.models]
ROOT = Path(__file__).resolve().parents[2]
C = grpc.StatusCode
NAN, INF = float("nan"), float("inf")


def wav(samples: np.ndarray, rate: int = 16_000, subtype: str = "PCM_16") -> bytes:
    out = io.BytesIO()
    sf.write(out, samples, rate, format="WAV", subtype=subtype)
    return out.getvalue()


SPEECH_1S = (np.sin(np.arange(16_000) / 16_000 * 2 * np.pi * 220) * 3000).astype("<i2")
STEREO = wav(np.zeros((1600, 2), np.float32))
FLOAT_WAV = wav(np.zeros(1600, np.float32), subtype="FLOAT")
TRUNCATED_WAV = wav(np.zeros(1600, np.float32))[:30]
RIFF_GARBAGE = b"RIFF" + struct.pack("<I", 1000) + b"WAVEjunk" + b"\x01" * 64
HUGE = "x" * 100_000


def rc(**kw) -> asr_pb2.RecognitionConfig:
    kw.setdefault("encoding", common_pb2.LINEAR16)
    kw.setdefault("sample_rate_hz", 16_000)
    return asr_pb2.RecognitionConfig(**kw)


def converse_config(**kw) -> assistant_pb2.ConverseRequest:
    audio = kw.pop("audio", rc())
    return assistant_pb2.ConverseRequest(config=assistant_pb2.ConverseConfig(audio=audio, **kw))


AUDIO = assistant_pb2.ConverseRequest(audio=np.zeros(1600, "<i2").tobytes())


def control(action: int) -> assistant_pb2.ConverseRequest:
    return assistant_pb2.ConverseRequest(control=assistant_pb2.ConverseControl(action=action))


# name -> (requests, code, part of the message)
CONVERSE = {
    "audio before config": ([AUDIO], C.INVALID_ARGUMENT, "must carry config, got audio"),
    "empty first message": ([assistant_pb2.ConverseRequest()], C.INVALID_ARGUMENT, "an empty message"),
    "absent audio config": ([assistant_pb2.ConverseRequest(config=assistant_pb2.ConverseConfig())],
                            C.INVALID_ARGUMENT, "audio.encoding"),
    "unknown encoding": ([converse_config(audio=rc(encoding=99))], C.INVALID_ARGUMENT, "99"),
    "wrong sample rate": ([converse_config(audio=rc(sample_rate_hz=1000))], C.INVALID_ARGUMENT, "1000"),
    "config twice": ([converse_config(), converse_config()], C.FAILED_PRECONDITION, "config may only be sent once"),
    "unknown control": ([converse_config(), control(42)], C.INVALID_ARGUMENT, "control.action=42"),
    "empty message after config": ([converse_config(), assistant_pb2.ConverseRequest()], C.INVALID_ARGUMENT,
                                   "empty ConverseRequest"),
    "odd byte count": ([converse_config(), assistant_pb2.ConverseRequest(audio=b"\x01\x02\x03")],
                       C.INVALID_ARGUMENT, "odd"),
    "stereo WAV": ([converse_config(), assistant_pb2.ConverseRequest(audio=STEREO)], C.INVALID_ARGUMENT, "channels=2"),
    "float WAV (not PCM16)": ([converse_config(), assistant_pb2.ConverseRequest(audio=FLOAT_WAV)],
                              C.INVALID_ARGUMENT, "format 3"),
    "budget too small": ([converse_config(budget_ms=50)], C.INVALID_ARGUMENT, "budget_ms=50"),
    "output rate": ([converse_config(output_sample_rate_hz=100)], C.INVALID_ARGUMENT, "output_sample_rate_hz=100"),
    "unknown voice": ([converse_config(voice="nobody")], C.NOT_FOUND, "nobody"),
    "huge voice": ([converse_config(voice=HUGE)], C.INVALID_ARGUMENT, "config.voice has 100000 characters"),
    "bad session id": ([converse_config(session_id="a b/c")], C.INVALID_ARGUMENT, "session_id"),
    "huge language code": ([converse_config(audio=rc(language_code=HUGE))], C.INVALID_ARGUMENT, "language_code"),
    "unknown language": ([converse_config(audio=rc(language_code="fr-FR"))], C.INVALID_ARGUMENT, "fr-FR"),
    "NaN speech threshold": ([converse_config(audio=rc(endpointing=asr_pb2.EndpointingConfig(speech_threshold=NAN)))],
                             C.INVALID_ARGUMENT, "speech_threshold=nan"),
}

STREAMING_RECOGNIZE = {
    "audio before config": ([asr_pb2.StreamingRecognizeRequest(audio=b"\0\0")], C.INVALID_ARGUMENT,
                            "must carry config, got audio"),
    "config twice": ([asr_pb2.StreamingRecognizeRequest(config=rc())] * 2, C.FAILED_PRECONDITION, "already sent"),
    "negative phrase boost": ([asr_pb2.StreamingRecognizeRequest(config=rc(phrases=[
        asr_pb2.SpeechPhrase(phrase="Gattaca"), asr_pb2.SpeechPhrase(phrase="Heathers", boost=-2)]))],
        C.INVALID_ARGUMENT, "phrases[1].boost=-2.0"),
    "unknown control": ([asr_pb2.StreamingRecognizeRequest(config=rc()), asr_pb2.StreamingRecognizeRequest(
        control=asr_pb2.RecognizerControl(action=7))], C.INVALID_ARGUMENT, "control.action=7"),
    "Inf interim interval": ([asr_pb2.StreamingRecognizeRequest(config=rc(interim_interval_ms=50))],
                             C.INVALID_ARGUMENT, "interim_interval_ms=50"),
}

RECOGNIZE = {
    "absent config": (asr_pb2.RecognizeRequest(audio=b"\0\0"), C.INVALID_ARGUMENT, "config is required"),
    "wrong sample rate": (asr_pb2.RecognizeRequest(config=rc(sample_rate_hz=7), audio=b"\0\0"), C.INVALID_ARGUMENT,
                          "sample_rate_hz=7"),
    "stereo WAV": (asr_pb2.RecognizeRequest(config=rc(), audio=STEREO), C.INVALID_ARGUMENT, "channels=2"),
    "float WAV (not PCM16)": (asr_pb2.RecognizeRequest(config=rc(), audio=FLOAT_WAV), C.INVALID_ARGUMENT, "format 3"),
    "truncated WAV": (asr_pb2.RecognizeRequest(config=rc(), audio=TRUNCATED_WAV), C.INVALID_ARGUMENT, "WAV"),
    "corrupt WAV header": (asr_pb2.RecognizeRequest(config=rc(), audio=RIFF_GARBAGE), C.INVALID_ARGUMENT, "WAV"),
    "WAV rate differs from config": (asr_pb2.RecognizeRequest(config=rc(), audio=wav(np.zeros(800), 8000)),
                                     C.INVALID_ARGUMENT, "8000"),
    "odd byte count": (asr_pb2.RecognizeRequest(config=rc(), audio=b"\0\0\0"), C.INVALID_ARGUMENT, "odd"),
    "over-long audio": (asr_pb2.RecognizeRequest(config=rc(sample_rate_hz=8000), audio=b"\0\0" * 8000 * 601),
                        C.OUT_OF_RANGE, "max_audio_s"),
    "empty phrase": (asr_pb2.RecognizeRequest(config=rc(phrases=[asr_pb2.SpeechPhrase(phrase=" ")])),
                     C.INVALID_ARGUMENT, "phrases[0].phrase=' '"),
    "huge phrase": (asr_pb2.RecognizeRequest(config=rc(phrases=[asr_pb2.SpeechPhrase(phrase=HUGE)])),
                    C.INVALID_ARGUMENT, "1..100 characters"),
    "NaN phrase boost": (asr_pb2.RecognizeRequest(config=rc(phrases=[asr_pb2.SpeechPhrase(phrase="Gattaca", boost=NAN)])),
                         C.INVALID_ARGUMENT, "phrases[0].boost=nan"),
    "phrase boost too high": (asr_pb2.RecognizeRequest(
        config=rc(phrases=[asr_pb2.SpeechPhrase(phrase="Gattaca", boost=50)])), C.INVALID_ARGUMENT, "boost=50.0"),
    "too many phrases": (asr_pb2.RecognizeRequest(config=rc(phrases=[asr_pb2.SpeechPhrase(phrase="Gattaca")] * 1001)),
                         C.INVALID_ARGUMENT, "1001 entries"),
    "huge language code": (asr_pb2.RecognizeRequest(config=rc(language_code=HUGE)), C.INVALID_ARGUMENT,
                           "language_code"),
}

UNDERSTAND = {
    "empty text": (nlp_pb2.UnderstandRequest(text=""), C.INVALID_ARGUMENT, "text"),
    "only punctuation": (nlp_pb2.UnderstandRequest(text="?!... --"), C.INVALID_ARGUMENT, "text"),
    "control characters": (nlp_pb2.UnderstandRequest(text="\x00\x07\x1b"), C.INVALID_ARGUMENT, "text"),
    "only emoji": (nlp_pb2.UnderstandRequest(text="🎬🍿"), C.INVALID_ARGUMENT, "text"),
    "huge text": (nlp_pb2.UnderstandRequest(text=HUGE), C.INVALID_ARGUMENT, "text"),
    "bad session id": (nlp_pb2.UnderstandRequest(text="a comedy", session_id="x" * 500), C.INVALID_ARGUMENT,
                       "session_id"),
}

RECOMMEND = {
    "k over the limit": (recommender_pb2.RecommendRequest(k=100_000), C.INVALID_ARGUMENT, "k=100000"),
    "NaN embedding": (recommender_pb2.RecommendRequest(k=3, query_embedding=[NAN] * 384), C.INVALID_ARGUMENT,
                      "query_embedding must be finite"),
    "Inf embedding": (recommender_pb2.RecommendRequest(k=3, query_embedding=[INF] * 384), C.INVALID_ARGUMENT,
                      "query_embedding must be finite"),
    "wrong embedding size": (recommender_pb2.RecommendRequest(k=3, query_embedding=[0.1] * 7), C.INVALID_ARGUMENT,
                             "7"),
    "unknown similar item": (recommender_pb2.RecommendRequest(k=3, similar_to_item_id=99_999), C.NOT_FOUND, "99999"),
    "unknown genre": (recommender_pb2.RecommendRequest(k=3, filters=recommender_pb2.Filters(genres=["Jazzercise"])),
                      C.INVALID_ARGUMENT, "Jazzercise"),
    "huge genre": (recommender_pb2.RecommendRequest(k=3, filters=recommender_pb2.Filters(genres=[HUGE])),
                   C.INVALID_ARGUMENT, "genre"),
    "years reversed": (recommender_pb2.RecommendRequest(k=3, filters=recommender_pb2.Filters(year_min=1999,
                                                                                            year_max=1980)),
                       C.INVALID_ARGUMENT, "1999"),
}

FEEDBACK = {
    "NaN rating": (recommender_pb2.FeedbackRequest(session_id="s1", item_id=1, rating=NAN), C.INVALID_ARGUMENT, "nan"),
    "rating out of range": (recommender_pb2.FeedbackRequest(session_id="s1", item_id=1, rating=9), C.INVALID_ARGUMENT,
                            "rating=9"),
    "unknown item": (recommender_pb2.FeedbackRequest(session_id="s1", item_id=5000, rating=4), C.NOT_FOUND, "5000"),
    "absent session": (recommender_pb2.FeedbackRequest(item_id=1, rating=4), C.INVALID_ARGUMENT, "session_id"),
}

GET_ITEMS = {
    "an id in a gap of the catalogue": (recommender_pb2.GetItemsRequest(item_ids=[267]), C.NOT_FOUND, "267"),
    "negative id": (recommender_pb2.GetItemsRequest(item_ids=[-4]), C.INVALID_ARGUMENT, "item_ids=-4"),
    "too many ids": (recommender_pb2.GetItemsRequest(item_ids=list(range(1, 100_001))), C.INVALID_ARGUMENT,
                     "item_ids"),
}

SYNTHESIZE = {
    "empty text": (tts_pb2.SynthesizeRequest(text=""), C.INVALID_ARGUMENT, "text"),
    "only punctuation": (tts_pb2.SynthesizeRequest(text="?!... --"), C.INVALID_ARGUMENT, "text"),
    "control characters": (tts_pb2.SynthesizeRequest(text="\x00\x07\x1b"), C.INVALID_ARGUMENT, "text"),
    "only emoji": (tts_pb2.SynthesizeRequest(text="🎬🍿"), C.INVALID_ARGUMENT, "text"),
    "huge text": (tts_pb2.SynthesizeRequest(text=HUGE), C.INVALID_ARGUMENT, "text"),
    "unknown voice": (tts_pb2.SynthesizeRequest(text="Hello.", voice="nobody"), C.NOT_FOUND, "nobody"),
    "huge voice": (tts_pb2.SynthesizeRequest(text="Hello.", voice=HUGE), C.INVALID_ARGUMENT,
                   "voice has 100000 characters"),
    "sample rate": (tts_pb2.SynthesizeRequest(text="Hello.", sample_rate_hz=100), C.INVALID_ARGUMENT,
                    "sample_rate_hz=100"),
    "NaN length scale": (tts_pb2.SynthesizeRequest(text="Hello.", length_scale=NAN), C.INVALID_ARGUMENT, "nan"),
    "Inf length scale": (tts_pb2.SynthesizeRequest(text="Hello.", length_scale=INF), C.INVALID_ARGUMENT, "inf"),
    "negative length scale": (tts_pb2.SynthesizeRequest(text="Hello.", length_scale=-1), C.INVALID_ARGUMENT, "-1"),
}


async def expect(code, fragment: str, coro) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await asyncio.wait_for(coro, 30)
    assert err.value.code() == code, err.value.details()
    assert fragment.lower() in err.value.details().lower(), err.value.details()
    assert len(err.value.details()) <= 1000


async def drain(call) -> list:
    return [r async for r in call]


@pytest.fixture
async def channels(stack):
    opened = {stage: grpc.aio.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)])
              for stage, address in stack.addresses.items()}
    yield opened
    for channel in opened.values():
        await channel.close()


@pytest.mark.parametrize("case", sorted(CONVERSE))
async def test_converse(channels, case):
    requests, code, fragment = CONVERSE[case]
    stub = assistant_pb2_grpc.AssistantStub(channels["orchestrator"])
    await expect(code, fragment, drain(stub.Converse(iter([*requests, AUDIO]), timeout=20)))
    await served(channels, "orchestrator")


@pytest.mark.parametrize("case", sorted(STREAMING_RECOGNIZE))
async def test_streaming_recognize(channels, case):
    requests, code, fragment = STREAMING_RECOGNIZE[case]
    stub = asr_pb2_grpc.RecognizerStub(channels["asr"])
    await expect(code, fragment, drain(stub.StreamingRecognize(iter(requests), timeout=20)))
    good = [asr_pb2.StreamingRecognizeRequest(config=rc()), asr_pb2.StreamingRecognizeRequest(audio=b"\0\0" * 1600)]
    results = await asyncio.wait_for(drain(stub.StreamingRecognize(iter(good), timeout=20)), 30)
    assert results[-1].result.is_final


@pytest.mark.parametrize("case", sorted(RECOGNIZE))
async def test_recognize(channels, case):
    request, code, fragment = RECOGNIZE[case]
    stub = asr_pb2_grpc.RecognizerStub(channels["asr"])
    await expect(code, fragment, stub.Recognize(request, timeout=20))
    await served(channels, "asr")


@pytest.mark.parametrize("case", sorted(UNDERSTAND))
async def test_understand(channels, case):
    request, code, fragment = UNDERSTAND[case]
    stub = nlp_pb2_grpc.UnderstanderStub(channels["nlp"])
    await expect(code, fragment, stub.Understand(request, timeout=10))
    await served(channels, "nlp")


@pytest.mark.parametrize("case", sorted(RECOMMEND))
async def test_recommend(channels, case):
    request, code, fragment = RECOMMEND[case]
    stub = recommender_pb2_grpc.RecommenderStub(channels["recommender"])
    await expect(code, fragment, stub.Recommend(request, timeout=10))
    await served(channels, "recommender")


@pytest.mark.parametrize("case", sorted(FEEDBACK))
async def test_feedback(channels, case):
    request, code, fragment = FEEDBACK[case]
    stub = recommender_pb2_grpc.RecommenderStub(channels["recommender"])
    await expect(code, fragment, stub.Feedback(request, timeout=10))
    good = recommender_pb2.FeedbackRequest(session_id="s1", item_id=1, rating=4)
    assert (await stub.Feedback(good, timeout=10)).ratings_in_session >= 1


@pytest.mark.parametrize("case", sorted(GET_ITEMS))
async def test_get_items(channels, case):
    request, code, fragment = GET_ITEMS[case]
    stub = recommender_pb2_grpc.RecommenderStub(channels["recommender"])
    await expect(code, fragment, stub.GetItems(request, timeout=10))
    assert (await stub.GetItems(recommender_pb2.GetItemsRequest(item_ids=[1]), timeout=10)).items[0].item_id == 1


@pytest.mark.parametrize("case", sorted(SYNTHESIZE))
async def test_synthesize(channels, case):
    request, code, fragment = SYNTHESIZE[case]
    stub = tts_pb2_grpc.SynthesizerStub(channels["tts"])
    await expect(code, fragment, drain(stub.Synthesize(request, timeout=20)))
    await served(channels, "tts")


def header(call_id: int) -> common_pb2.CallHeader:
    return common_pb2.CallHeader(call_id=call_id, timeout_ms=10_000)


MULTIPLEXED = {
    "UnderstandCalls": ("nlp", "/voxpipe.v1.Understander/UnderstandCalls", nlp_pb2.UnderstandCallReply,
                        lambda i, bad: nlp_pb2.UnderstandCall(header=header(i), request=nlp_pb2.UnderstandRequest(
                            text="?!" if bad else "recommend a comedy"))),
    "RecommendCalls": ("recommender", "/voxpipe.v1.Recommender/RecommendCalls", recommender_pb2.RecommendCallReply,
                       lambda i, bad: recommender_pb2.RecommendCall(header=header(i), request=recommender_pb2.
                                                                    RecommendRequest(k=100_000 if bad else 3))),
    "SynthesizeCalls": ("tts", "/voxpipe.v1.Synthesizer/SynthesizeCalls", tts_pb2.SynthesizeCallReply,
                        lambda i, bad: tts_pb2.SynthesizeCall(header=header(i), request=tts_pb2.SynthesizeRequest(
                            text="\x00" if bad else "Okay."))),
}


@pytest.mark.parametrize("method", sorted(MULTIPLEXED))
async def test_a_bad_call_on_a_multiplexed_stream_fails_alone(channels, method):
    stage, path, reply_type, make = MULTIPLEXED[method]
    stream = channels[stage].stream_stream(path, request_serializer=lambda m: m.SerializeToString(),
                                           response_deserializer=reply_type.FromString)
    call = stream(iter([make(1, False), make(2, True), make(3, False)]), timeout=30)
    status: dict[int, int] = {}
    messages: dict[int, str] = {}

    async def read() -> None:
        async for reply in call:
            if reply.status.call_id and (reply.status.code or reply.status.call_id not in status):
                status[reply.status.call_id] = reply.status.code
                messages[reply.status.call_id] = reply.status.message
            finished = [i for i in (1, 3) if i in status]
            if 2 in status and len(finished) == 2:
                return

    await asyncio.wait_for(read(), 30)
    call.cancel()
    assert status[2] == C.INVALID_ARGUMENT.value[0], messages
    assert status[1] == status[3] == 0, messages


def test_list_voices_answers_with_the_default_voice(stack):
    with grpc.insecure_channel(stack.addresses["tts"]) as channel:
        voices = tts_pb2_grpc.SynthesizerStub(channel).ListVoices(tts_pb2.ListVoicesRequest(), timeout=10)
    assert voices.default_voice in {v.name for v in voices.voices}


BAD_FILES = {
    "not audio at all": (b"this is not a wav file" * 10, "WAV"),
    "truncated WAV": (TRUNCATED_WAV, "WAV"),
    "empty file": (b"", "is empty"),
    "missing file": (None, "no such file"),
}


@pytest.mark.parametrize("command", ["talk", "transcribe"])
@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_the_cli_names_a_bad_file_and_exits_nonzero(stack, tmp_path, command, case):
    data, fragment = BAD_FILES[case]
    path = tmp_path / "bad.wav"
    if data is not None:
        path.write_bytes(data)
    address = stack.orchestrator if command == "talk" else stack.addresses["asr"]
    done = subprocess.run([sys.executable, "-m", "clients.cli", command, str(path), "--address", address],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert fragment.lower() in (done.stdout + done.stderr).lower(), (done.stdout, done.stderr)


# Oversized messages on every hop. A request one byte over the servers' 16 MiB limit is refused by gRPC with
# RESOURCE_EXHAUSTED; one just under reaches the service, which answers by its own rule; the next is served.
LIMIT = 16 * 1024 * 1024


def sized(make, size: int):
    """``make(n)`` with ``n`` chosen so that the serialized message is ``size`` bytes (or one less: audio comes
    in whole samples)."""
    n = size
    for _ in range(8):
        got = make(n).ByteSize()
        if size - 1 <= got <= size:
            return make(n)
        n += size - got
    raise AssertionError(f"could not size the message to {size} bytes")


OVERSIZED = {
    # Converse: the audio goes on to ASR in a message of the same size (the orchestrator -> ASR hop); at 8 kHz
    # 16 MiB is ~1,049 s of audio, over max_audio_s, which ASR says and the orchestrator passes through.
    "Converse": ("orchestrator", lambda n: assistant_pb2.ConverseRequest(audio=b"\0" * (n - (n % 2))),
                 C.OUT_OF_RANGE, "max_audio_s"),
    "Recognize": ("asr", lambda n: asr_pb2.RecognizeRequest(config=rc(sample_rate_hz=8000), audio=b"\0" * (n - n % 2)),
                  C.OUT_OF_RANGE, "max_audio_s"),
    "Understand": ("nlp", lambda n: nlp_pb2.UnderstandRequest(text="a" * n), C.INVALID_ARGUMENT, "max_text_chars"),
    "Recommend": ("recommender", lambda n: recommender_pb2.RecommendRequest(
        k=3, filters=recommender_pb2.Filters(exclude_item_ids=[1] * n)), C.INVALID_ARGUMENT, "exclude_item_ids"),
    "Synthesize": ("tts", lambda n: tts_pb2.SynthesizeRequest(text="a" * n), C.INVALID_ARGUMENT, "max_text_chars"),
}


async def call_oversized(channels, method: str, request):
    stage = OVERSIZED[method][0]
    if method == "Converse":
        stub = assistant_pb2_grpc.AssistantStub(channels[stage])
        return await drain(stub.Converse(iter([converse_config(audio=rc(sample_rate_hz=8000)), request]), timeout=60))
    if method == "Recognize":
        return await asr_pb2_grpc.RecognizerStub(channels[stage]).Recognize(request, timeout=60)
    if method == "Understand":
        return await nlp_pb2_grpc.UnderstanderStub(channels[stage]).Understand(request, timeout=60)
    if method == "Recommend":
        return await recommender_pb2_grpc.RecommenderStub(channels[stage]).Recommend(request, timeout=60)
    return await drain(tts_pb2_grpc.SynthesizerStub(channels[stage]).Synthesize(request, timeout=60))


@pytest.mark.parametrize("method", sorted(OVERSIZED))
async def test_oversized_messages_just_under_and_over_the_limit(channels, method):
    stage, make, under_code, under_fragment = OVERSIZED[method]
    await expect(C.RESOURCE_EXHAUSTED, "larger than max", call_oversized(channels, method, sized(make, LIMIT + 2)))
    await expect(under_code, under_fragment, call_oversized(channels, method, sized(make, LIMIT - 8)))
    await served(channels, stage)


async def served(channels, stage: str) -> None:
    """A good request to ``stage`` gets its answer."""
    if stage == "orchestrator":
        stub = assistant_pb2_grpc.AssistantStub(channels[stage])
        events = await asyncio.wait_for(drain(stub.Converse(iter([converse_config(), AUDIO]), timeout=20)), 30)
        assert events[0].WhichOneof("event") == "session"
    elif stage == "asr":
        stub = asr_pb2_grpc.RecognizerStub(channels[stage])
        good = await stub.Recognize(asr_pb2.RecognizeRequest(config=rc(), audio=SPEECH_1S.tobytes()), timeout=20)
        assert good.results and good.results[-1].is_final
    elif stage == "nlp":
        stub = nlp_pb2_grpc.UnderstanderStub(channels[stage])
        assert (await stub.Understand(nlp_pb2.UnderstandRequest(text="recommend a comedy"), timeout=10)).intent
    elif stage == "recommender":
        stub = recommender_pb2_grpc.RecommenderStub(channels[stage])
        assert (await stub.Recommend(recommender_pb2.RecommendRequest(k=3), timeout=10)).items
    else:
        stub = tts_pb2_grpc.SynthesizerStub(channels[stage])
        chunks = await asyncio.wait_for(drain(stub.Synthesize(tts_pb2.SynthesizeRequest(text="Okay."), timeout=20)), 30)
        assert chunks[-1].last and any(c.audio for c in chunks)
