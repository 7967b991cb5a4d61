"""The NLP stage on a real gRPC server: intents, entities, embedding, batching and every bad-input case."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from protos import nlp_pb2, nlp_pb2_grpc
from services.nlp import create_stage
from tests.helpers import running_stage
from tests.stage.nlp_fixtures import nlp_models_fixture, nlp_settings  # noqa: F401

pytestmark = pytest.mark.models


@pytest.fixture(name="nlp")
async def nlp_fixture(nlp_models):
    async with running_stage(create_stage(nlp_settings(nlp_models))) as (server, channel):
        yield nlp_pb2_grpc.UnderstanderStub(channel), server


async def _understand(stub, text: str, session_id: str = "") -> nlp_pb2.UnderstandResponse:
    return await stub.Understand(nlp_pb2.UnderstandRequest(text=text, session_id=session_id), timeout=10)


async def test_recommend_with_genre_and_decade(nlp):
    stub, _ = nlp
    reply = await _understand(stub, "Recommend a scary movie from the nineties", "s-1")
    assert reply.intent == "recommend"
    assert 0.0 < reply.confidence <= 1.0
    found = {(e.type, e.value) for e in reply.entities}
    assert {("genre", "Horror"), ("decade", "1990")} <= found
    genre = next(e for e in reply.entities if e.type == "genre")
    assert reply.normalized_text[genre.start:genre.end] == genre.text == "scary"
    emb = np.array(reply.embedding)
    assert emb.shape == (384,) and abs(np.linalg.norm(emb) - 1.0) < 1e-4


async def test_rate_with_asr_style_title_and_stars(nlp):
    stub, _ = nlp
    reply = await _understand(stub, "give the god father four stars")
    assert reply.intent == "rate"
    titles = [e for e in reply.entities if e.type == "title"]
    assert [t.value for t in titles] == ["Godfather, The"] and titles[0].item_id == 127
    assert ("rating", "4") in {(e.type, e.value) for e in reply.entities}


async def test_similar_to_and_out_of_domain_unknown(nlp):
    stub, _ = nlp
    similar = await _understand(stub, "something like far go")
    assert similar.intent == "similar_to"
    assert [e.item_id for e in similar.entities if e.type == "title"] == [100]
    weather = await _understand(stub, "what is the weather going to be in berlin")
    assert weather.intent == "unknown"


async def test_embedding_matches_batch_of_one_under_concurrency(nlp):
    """Padding inside a batch must not change a sentence's embedding."""
    stub, _ = nlp
    texts = ["hi", "recommend me a long science fiction film from the eighties with robots and space",
             "i loved fargo", "more"] * 4
    alone = [np.array((await _understand(stub, t)).embedding) for t in texts[:4]]
    together = await asyncio.gather(*(_understand(stub, t) for t in texts))
    for i, reply in enumerate(together):
        assert float(np.dot(alone[i % 4], reply.embedding)) > 0.99999


@pytest.mark.parametrize(
    ("text", "session_id", "needle"),
    [
        ("", "", "text is empty"),
        ("   \t\n ", "", "text is empty"),
        ("x" * 2001, "", "2001 characters"),
        ("recommend a comedy", "bad id with spaces", "session_id="),
        ("recommend a comedy", "s" * 129, "session_id="),
        ("\x00\x1b\u200b", "", "no words"),
        ("🎬🍿😀", "", "no words"),
    ],
)
async def test_bad_input_is_invalid_argument_and_server_keeps_serving(nlp, text, session_id, needle):
    stub, _ = nlp
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _understand(stub, text, session_id)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in err.value.details()
    assert (await _understand(stub, "hello")).intent == "greeting"


async def test_control_characters_and_emoji_are_removed_not_fatal(nlp):
    stub, _ = nlp
    reply = await _understand(stub, "recommend\x00 a\u200b comedy 🎬\x1b[0m please")
    assert reply.normalized_text == "recommend a comedy [0m please"
    assert reply.intent == "recommend"
    assert ("genre", "Comedy") in {(e.type, e.value) for e in reply.entities}


async def test_text_at_the_limit_is_accepted_and_long_token_runs_are_truncated(nlp):
    stub, _ = nlp
    text = ("recommend a comedy " * 200)[:2000]
    reply = await _understand(stub, text)
    assert len(reply.embedding) == 384
    assert reply.intent == "recommend"
