"""Messages that do not decode (a string that is not UTF-8) on the real NLP server: INVALID_ARGUMENT for that
request, never INTERNAL; on a multiplexed stream only that call fails and its neighbours are answered."""

from __future__ import annotations

import grpc
import pytest

from protos import common_pb2, nlp_pb2
from services.nlp import create_stage
from tests.helpers import running_stage
from tests.stage.nlp_fixtures import nlp_models_fixture, nlp_settings  # noqa: F401

pytestmark = [pytest.mark.models]

_NOT_UTF8 = b"hel\xffo"  # as long as "hello", so every length prefix stays right


def _raw(message, text: str = "hello") -> bytes:
    data = message.SerializeToString()
    assert text.encode() in data
    return data.replace(text.encode(), _NOT_UTF8)


def _call(call_id: int, text: str) -> nlp_pb2.UnderstandCall:
    return nlp_pb2.UnderstandCall(header=common_pb2.CallHeader(call_id=call_id, timeout_ms=10_000),
                                  request=nlp_pb2.UnderstandRequest(text=text))


async def test_a_unary_request_that_is_not_utf8_is_invalid_argument_and_the_next_is_served(nlp_models):
    async with running_stage(create_stage(nlp_settings(nlp_models))) as (_, channel):
        understand = channel.unary_unary("/voxpipe.v1.Understander/Understand", request_serializer=bytes,
                                         response_deserializer=nlp_pb2.UnderstandResponse.FromString)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await understand(_raw(nlp_pb2.UnderstandRequest(text="hello")), timeout=10)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "UTF-8" in err.value.details()
        good = await understand(nlp_pb2.UnderstandRequest(text="recommend a comedy").SerializeToString(), timeout=10)
        assert good.intent == "recommend"


async def test_one_bad_call_on_a_multiplexed_stream_fails_alone(nlp_models):
    async with running_stage(create_stage(nlp_settings(nlp_models))) as (_, channel):
        stream = channel.stream_stream("/voxpipe.v1.Understander/UnderstandCalls", request_serializer=bytes,
                                       response_deserializer=nlp_pb2.UnderstandCallReply.FromString)
        messages = [_call(1, "recommend a comedy").SerializeToString(), _raw(_call(2, "hello")),
                    _call(3, "recommend a thriller").SerializeToString()]
        call = stream(iter(messages), timeout=30)
        replies = {}
        async for reply in call:
            replies[reply.status.call_id] = reply
            if len(replies) == 3:
                break
        call.cancel()
        assert replies[2].status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert "UTF-8" in replies[2].status.message
        assert replies[1].status.code == 0 and replies[1].response.intent == "recommend"
        assert replies[3].status.code == 0 and replies[3].response.intent == "recommend"


async def test_a_bad_message_without_a_readable_call_id_ends_only_its_stream(nlp_models):
    async with running_stage(create_stage(nlp_settings(nlp_models))) as (_, channel):
        stream = channel.stream_stream("/voxpipe.v1.Understander/UnderstandCalls", request_serializer=bytes,
                                       response_deserializer=nlp_pb2.UnderstandCallReply.FromString)
        call = stream(iter([b"\x0a\xff\xff"]), timeout=10)  # a header whose length runs past the message
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in call:
                pass
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        understand = channel.unary_unary("/voxpipe.v1.Understander/Understand",
                                          request_serializer=nlp_pb2.UnderstandRequest.SerializeToString,
                                          response_deserializer=nlp_pb2.UnderstandResponse.FromString)
        assert (await understand(nlp_pb2.UnderstandRequest(text="recommend a comedy"), timeout=10)).intent
