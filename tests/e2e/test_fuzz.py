"""Property-based fuzzing of every public RPC of the running stack with ``hypothesis``: generated request
messages (any field values, NaN and Inf floats, odd strings, random audio bytes, messages in any order) and
raw random bytes as the request. Whatever comes in, the answer is OK or a status the client can act on:
never INTERNAL or UNKNOWN, never a hang past the deadline, and every stage still SERVING afterwards.

The examples are derandomised (the same in every CI run); ``VOXPIPE_FUZZ_EXAMPLES`` sets how many per RPC
(default 25) for a longer run.
"""

from __future__ import annotations

import os

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protos import (
    asr_pb2,
    assistant_pb2,
    common_pb2,
    nlp_pb2,
    recommender_pb2,
    tts_pb2,
)

pytestmark = [pytest.mark.models, pytest.mark.slow]
EXAMPLES = int(os.environ.get("VOXPIPE_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
NOT_ACCEPTABLE = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}
TIMEOUT_S = 30.0

u32 = st.integers(0, 2**32 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)
f32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
text = st.text(max_size=300)
short = st.text(max_size=80)
encoding = st.one_of(st.sampled_from([common_pb2.LINEAR16, 0]), i32)
rate = st.one_of(st.sampled_from([8000, 16000, 22050, 44100, 48000]), u32)
audio = st.binary(max_size=6400)

endpointing = st.builds(asr_pb2.EndpointingConfig, silence_ms=u32, speech_threshold=f32, min_speech_ms=u32)
recognition = st.builds(asr_pb2.RecognitionConfig, encoding=encoding, sample_rate_hz=rate, language_code=short,
                        interim_results=st.booleans(), interim_interval_ms=u32, endpointing=endpointing)
converse_config = st.builds(assistant_pb2.ConverseConfig, audio=recognition, session_id=short, voice=short,
                            output_sample_rate_hz=u32, budget_ms=u32, barge_in_on_speech=st.booleans())
converse_request = st.one_of(
    st.builds(assistant_pb2.ConverseRequest, config=converse_config),
    st.builds(assistant_pb2.ConverseRequest, audio=audio),
    st.builds(lambda a: assistant_pb2.ConverseRequest(control=assistant_pb2.ConverseControl(action=a)), i32),
    st.just(assistant_pb2.ConverseRequest()))
# Mostly a well-formed opening (so the fuzz reaches past the config check), sometimes anything at all.
converse_stream = st.one_of(
    st.tuples(st.builds(assistant_pb2.ConverseRequest, config=converse_config),
              st.lists(converse_request, max_size=6)).map(lambda t: [t[0], *t[1]]),
    st.lists(converse_request, max_size=6))
recognize_stream = st.lists(st.one_of(
    st.builds(asr_pb2.StreamingRecognizeRequest, config=recognition),
    st.builds(asr_pb2.StreamingRecognizeRequest, audio=audio),
    st.builds(lambda a: asr_pb2.StreamingRecognizeRequest(control=asr_pb2.RecognizerControl(action=a)), i32)),
    max_size=6)
filters = st.builds(recommender_pb2.Filters, genres=st.lists(short, max_size=5), year_min=u32, year_max=u32,
                    exclude_seen=st.booleans(), exclude_item_ids=st.lists(i32, max_size=20))

# method path, request strategy (a message, a list of messages for client streams, or raw bytes), stage
UNARY = {
    "/voxpipe.v1.Recognizer/Recognize": ("asr", st.builds(asr_pb2.RecognizeRequest, config=recognition, audio=audio)),
    "/voxpipe.v1.Understander/Understand": ("nlp", st.builds(nlp_pb2.UnderstandRequest, text=text, session_id=short)),
    "/voxpipe.v1.Recommender/Recommend": ("recommender", st.builds(
        recommender_pb2.RecommendRequest, session_id=short, query_embedding=st.lists(f32, max_size=400), filters=filters,
        k=u32, similar_to_item_id=i32, popularity_only=st.booleans())),
    "/voxpipe.v1.Recommender/Feedback": ("recommender", st.builds(
        recommender_pb2.FeedbackRequest, session_id=short, item_id=i32, rating=f32)),
    "/voxpipe.v1.Recommender/GetItems": ("recommender", st.builds(
        recommender_pb2.GetItemsRequest, item_ids=st.lists(i32, max_size=50))),
    "/voxpipe.v1.Synthesizer/ListVoices": ("tts", st.just(tts_pb2.ListVoicesRequest())),
}
SERVER_STREAMING = {
    "/voxpipe.v1.Synthesizer/Synthesize": ("tts", st.builds(
        tts_pb2.SynthesizeRequest, text=st.text(max_size=120), voice=short, sample_rate_hz=rate, length_scale=f32)),
}
CLIENT_STREAMING = {
    "/voxpipe.v1.Assistant/Converse": ("orchestrator", converse_stream),
    "/voxpipe.v1.Recognizer/StreamingRecognize": ("asr", recognize_stream),
}


def header() -> st.SearchStrategy:
    return st.builds(common_pb2.CallHeader, call_id=st.integers(0, 2**64 - 1), timeout_ms=u32)


CALLS = {
    "/voxpipe.v1.Understander/UnderstandCalls": ("nlp", st.lists(st.builds(
        nlp_pb2.UnderstandCall, header=header(), request=UNARY["/voxpipe.v1.Understander/Understand"][1]), max_size=4)),
    "/voxpipe.v1.Recommender/RecommendCalls": ("recommender", st.lists(st.builds(
        recommender_pb2.RecommendCall, header=header(), request=UNARY["/voxpipe.v1.Recommender/Recommend"][1]),
        max_size=4)),
    "/voxpipe.v1.Synthesizer/SynthesizeCalls": ("tts", st.lists(st.builds(
        tts_pb2.SynthesizeCall, header=header(), request=SERVER_STREAMING["/voxpipe.v1.Synthesizer/Synthesize"][1]),
        max_size=3)),
}


def serialize(message) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


@pytest.fixture(scope="module")
def channels(stack):
    opened = {stage: grpc.insecure_channel(address) for stage, address in stack.addresses.items()}
    yield opened
    for channel in opened.values():
        channel.close()


def acceptable(error: grpc.RpcError, what: str) -> None:
    assert error.code() not in NOT_ACCEPTABLE, f"{what}: {error.code().name}: {error.details()}"


def run(channels, path: str, kind: str, request) -> None:
    stage = {**UNARY, **SERVER_STREAMING, **CLIENT_STREAMING, **CALLS}[path][0]
    channel = channels[stage]
    identity = dict(request_serializer=serialize, response_deserializer=lambda b: b)
    try:
        if kind == "unary":
            channel.unary_unary(path, **identity)(request, timeout=TIMEOUT_S)
        elif kind == "server_streaming":
            list(channel.unary_stream(path, **identity)(request, timeout=TIMEOUT_S))
        else:
            list(channel.stream_stream(path, **identity)(iter(request), timeout=TIMEOUT_S))
    except grpc.RpcError as e:
        acceptable(e, f"{path} {request!r:.300}")


def kind_of(path: str) -> str:
    if path in UNARY:
        return "unary"
    return "server_streaming" if path in SERVER_STREAMING else "streaming"


@pytest.mark.parametrize("path", sorted({**UNARY, **SERVER_STREAMING, **CLIENT_STREAMING, **CALLS}))
def test_generated_requests_never_get_internal_or_hang(channels, path):
    strategy = {**UNARY, **SERVER_STREAMING, **CLIENT_STREAMING, **CALLS}[path][1]

    @FUZZ
    @given(strategy)
    def check(request) -> None:
        run(channels, path, kind_of(path), request)

    check()


@pytest.mark.parametrize("path", sorted({**UNARY, **SERVER_STREAMING, **CLIENT_STREAMING, **CALLS}))
def test_random_bytes_as_the_request_never_get_internal_or_hang(channels, path):
    raw = st.binary(max_size=600)
    streaming = kind_of(path) == "streaming"

    @FUZZ
    @given(st.lists(raw, min_size=1, max_size=4) if streaming else raw)
    def check(request) -> None:
        run(channels, path, kind_of(path), request)

    check()


def test_every_stage_is_still_serving_after_the_fuzzing(channels):
    for stage, channel in channels.items():
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, stage
