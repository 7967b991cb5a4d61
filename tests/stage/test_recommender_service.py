"""The recommender stage on a real gRPC server: strategies, filters, feedback fold-in, bad input."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from protos import recommender_pb2 as pb
from protos import recommender_pb2_grpc
from services.recommender import create_stage
from tests.helpers import running_stage
from tests.stage.recommender_fixtures import rec_models_fixture, rec_settings  # noqa: F401

pytestmark = pytest.mark.models

FARGO, TOY_STORY, STAR_WARS, RETURN_OF_THE_JEDI, EMPIRE = 100, 1, 50, 181, 172


@pytest.fixture(name="rec")
async def rec_fixture(rec_models):
    async with running_stage(create_stage(rec_settings(rec_models))) as (server, channel):
        yield recommender_pb2_grpc.RecommenderStub(channel)


async def _recommend(stub, **kw) -> pb.RecommendResponse:
    filters = kw.pop("filters", None)
    return await stub.Recommend(pb.RecommendRequest(k=kw.pop("k", 10), filters=filters, **kw), timeout=10)


def _embedding(seed: int = 0) -> list[float]:
    v = np.random.default_rng(seed).normal(size=384)
    return list(v / np.linalg.norm(v))


async def test_no_session_no_query_is_popularity_with_reasons(rec):
    reply = await _recommend(rec, k=5)
    assert reply.strategy == "popularity" and len(reply.items) == 5
    assert reply.items[0].item_id == STAR_WARS  # the most-rated movie in ML-100K
    assert all(i.reason.startswith("popular ") for i in reply.items)
    assert reply.items[0].reason == "popular 70s action film"


async def test_popularity_reason_uses_the_filtered_genre_and_decade(rec):
    reply = await _recommend(rec, k=3, popularity_only=True,
                             filters=pb.Filters(genres=["Comedy"], year_min=1990, year_max=1999))
    assert reply.strategy == "popularity"
    assert all("Comedy" in i.genres and 1990 <= i.year <= 1999 for i in reply.items)
    assert reply.items[0].reason == "popular 90s comedy"


async def test_filters_are_respected_for_every_strategy(rec):
    filters = pb.Filters(genres=["Horror", "Sci-Fi"], year_min=1980, year_max=1989, exclude_item_ids=[183])
    await rec.Feedback(pb.FeedbackRequest(session_id="filt", item_id=STAR_WARS, rating=5), timeout=10)
    for kw in ({"query_embedding": _embedding()}, {"similar_to_item_id": STAR_WARS},
               {"session_id": "filt"}, {"popularity_only": True}):
        reply = await _recommend(rec, k=20, filters=filters, **kw)
        assert reply.items, kw
        for item in reply.items:
            assert {"Horror", "Sci-Fi"} & set(item.genres) and 1980 <= item.year <= 1989, (kw, item)
            assert item.item_id != 183


async def test_feedback_changes_the_next_recommendation(rec):
    before = await _recommend(rec, session_id="fb-1", k=10, query_embedding=_embedding(1))
    assert before.strategy == "query"
    reply = await rec.Feedback(pb.FeedbackRequest(session_id="fb-1", item_id=TOY_STORY, rating=5), timeout=10)
    assert reply.ratings_in_session == 1
    after = await _recommend(rec, session_id="fb-1", k=10, query_embedding=_embedding(1))
    assert after.strategy == "personalised"
    assert [i.item_id for i in after.items] != [i.item_id for i in before.items]
    assert all(i.reason == "because you liked Toy Story" for i in after.items)
    # A second rating moves the list again.
    await rec.Feedback(pb.FeedbackRequest(session_id="fb-1", item_id=FARGO, rating=5), timeout=10)
    again = await _recommend(rec, session_id="fb-1", k=10, query_embedding=_embedding(1))
    assert [i.item_id for i in again.items] != [i.item_id for i in after.items]
    assert {i.reason for i in again.items} <= {"because you liked Toy Story", "because you liked Fargo"}


async def test_dislike_pushes_similar_items_down(rec):
    liked = await _recommend(rec, session_id="dis-0", k=1)  # creates nothing personal yet
    assert liked.strategy == "popularity"
    await rec.Feedback(pb.FeedbackRequest(session_id="dis-1", item_id=STAR_WARS, rating=5), timeout=10)
    fan = await _recommend(rec, session_id="dis-1", k=20)
    await rec.Feedback(pb.FeedbackRequest(session_id="dis-2", item_id=STAR_WARS, rating=1), timeout=10)
    hater = await _recommend(rec, session_id="dis-2", k=20)
    assert RETURN_OF_THE_JEDI in [i.item_id for i in fan.items]
    assert RETURN_OF_THE_JEDI not in [i.item_id for i in hater.items]


async def test_exclude_seen_drops_rated_and_shown_items(rec):
    await rec.Feedback(pb.FeedbackRequest(session_id="seen", item_id=STAR_WARS, rating=5), timeout=10)
    first = await _recommend(rec, session_id="seen", k=10, filters=pb.Filters(exclude_seen=True))
    second = await _recommend(rec, session_id="seen", k=10, filters=pb.Filters(exclude_seen=True))
    ids1, ids2 = {i.item_id for i in first.items}, {i.item_id for i in second.items}
    assert STAR_WARS not in ids1 | ids2
    assert not ids1 & ids2 and len(ids2) == 10


async def test_a_preview_is_not_shown_until_marked(rec):
    # The orchestrator's speculative turns ask with preview; MarkShown records the answer once it is given.
    seen = pb.Filters(exclude_seen=True)
    preview = await _recommend(rec, session_id="preview", k=5, filters=seen, preview=True)
    again = await _recommend(rec, session_id="preview", k=5, filters=seen, preview=True)
    assert [i.item_id for i in preview.items] == [i.item_id for i in again.items]
    marked = await rec.MarkShown(pb.MarkShownRequest(session_id="preview", item_ids=[i.item_id for i in preview.items]),
                                 timeout=10)
    assert marked.shown_in_session == 5
    after = await _recommend(rec, session_id="preview", k=5, filters=seen)
    assert not {i.item_id for i in after.items} & {i.item_id for i in preview.items}


async def test_similar_to_is_item_item_and_excludes_the_item(rec):
    reply = await _recommend(rec, k=5, similar_to_item_id=STAR_WARS)
    assert reply.strategy == "similar"
    ids = [i.item_id for i in reply.items]
    assert STAR_WARS not in ids and {RETURN_OF_THE_JEDI, EMPIRE} <= set(ids)
    assert reply.items[0].reason == "similar to Star Wars"


async def test_empty_after_filters_is_an_empty_list_with_a_reason(rec):
    reply = await _recommend(rec, k=5, filters=pb.Filters(genres=["Western"], year_min=1920, year_max=1925))
    assert list(reply.items) == [] and "no movie matches the filters" in reply.empty_reason
    assert "Western" in reply.empty_reason


async def test_get_items_returns_display_titles(rec):
    reply = await rec.GetItems(pb.GetItemsRequest(item_ids=[127, FARGO]), timeout=10)
    assert [(i.item_id, i.title, i.year) for i in reply.items] == [(127, "The Godfather", 1972), (100, "Fargo", 1996)]
    assert list(reply.items[1].genres) == ["Crime", "Drama", "Thriller"]


async def test_concurrent_requests_are_batched_and_each_gets_its_own_result(rec):
    replies = await asyncio.gather(*(_recommend(rec, k=3, similar_to_item_id=i) for i in (1, 50, 100, 127) * 8))
    by_item: dict[int, list[int]] = {}
    for item, reply in zip((1, 50, 100, 127) * 8, replies, strict=True):
        ids = [i.item_id for i in reply.items]
        assert item not in ids
        assert by_item.setdefault(item, ids) == ids


@pytest.mark.parametrize(("call", "code", "needle"), [
    ("Recommend", grpc.StatusCode.INVALID_ARGUMENT, "k=0 is outside 1..50"),
    ("Recommend_k51", grpc.StatusCode.INVALID_ARGUMENT, "k=51 is outside 1..50"),
    ("Recommend_dim", grpc.StatusCode.INVALID_ARGUMENT, "query_embedding has 100 values, expected 384"),
    ("Recommend_nan", grpc.StatusCode.INVALID_ARGUMENT, "finite and non-zero"),
    ("Recommend_similar", grpc.StatusCode.NOT_FOUND, "similar_to_item_id=99999 is not in the catalogue"),
    ("Recommend_genre", grpc.StatusCode.INVALID_ARGUMENT, "unknown genre(s) ['Space Opera']"),
    ("Recommend_years", grpc.StatusCode.INVALID_ARGUMENT, "year_min=2000 is after filters.year_max=1990"),
    ("Recommend_exclude", grpc.StatusCode.NOT_FOUND, "filters.exclude_item_ids=5000"),
    ("Recommend_session", grpc.StatusCode.INVALID_ARGUMENT, "session_id="),
    ("Feedback_item", grpc.StatusCode.INVALID_ARGUMENT, "item_id=0 is invalid"),
    ("Feedback_unknown", grpc.StatusCode.NOT_FOUND, "item_id=1683 is not in the catalogue"),
    ("Feedback_rating", grpc.StatusCode.INVALID_ARGUMENT, "rating=6.0 is outside 1..5"),
    ("Feedback_zero", grpc.StatusCode.INVALID_ARGUMENT, "rating=0.0 is outside 1..5"),
    ("Feedback_session", grpc.StatusCode.INVALID_ARGUMENT, "session_id is required"),
    ("MarkShown_session", grpc.StatusCode.INVALID_ARGUMENT, "session_id is required"),
    ("MarkShown_none", grpc.StatusCode.INVALID_ARGUMENT, "item_ids has 0 ids; 1..50 are accepted"),
    ("MarkShown_many", grpc.StatusCode.INVALID_ARGUMENT, "item_ids has 51 ids; 1..50 are accepted"),
    ("MarkShown_unknown", grpc.StatusCode.NOT_FOUND, "item_ids=4242 is not in the catalogue"),
    ("GetItems", grpc.StatusCode.NOT_FOUND, "item_ids=4242"),
    # 267 lies inside 1..1682 but has no usable MovieLens entry: say so, not "outside the range".
    ("GetItems_gap", grpc.StatusCode.NOT_FOUND, "item_ids=267"),
    ("Recommend_budget", grpc.StatusCode.INVALID_ARGUMENT, "x-voxpipe-budget-ms='-5' must be a number"),
])
async def test_bad_input_gets_a_clear_status_and_the_server_keeps_serving(rec, call, code, needle):
    requests = {
        "Recommend": lambda: _recommend(rec, k=0),
        "Recommend_k51": lambda: _recommend(rec, k=51),
        "Recommend_dim": lambda: _recommend(rec, query_embedding=[0.1] * 100),
        "Recommend_nan": lambda: _recommend(rec, query_embedding=[float("nan")] * 384),
        "Recommend_similar": lambda: _recommend(rec, similar_to_item_id=99999),
        "Recommend_genre": lambda: _recommend(rec, filters=pb.Filters(genres=["Space Opera"])),
        "Recommend_years": lambda: _recommend(rec, filters=pb.Filters(year_min=2000, year_max=1990)),
        "Recommend_exclude": lambda: _recommend(rec, filters=pb.Filters(exclude_item_ids=[5000])),
        "Recommend_session": lambda: _recommend(rec, session_id="not valid!"),
        "Feedback_item": lambda: rec.Feedback(pb.FeedbackRequest(session_id="s", item_id=0, rating=3), timeout=10),
        "Feedback_unknown": lambda: rec.Feedback(pb.FeedbackRequest(session_id="s", item_id=1683, rating=3), timeout=10),
        "Feedback_rating": lambda: rec.Feedback(pb.FeedbackRequest(session_id="s", item_id=1, rating=6), timeout=10),
        "Feedback_zero": lambda: rec.Feedback(pb.FeedbackRequest(session_id="s", item_id=1, rating=0), timeout=10),
        "Feedback_session": lambda: rec.Feedback(pb.FeedbackRequest(item_id=1, rating=3), timeout=10),
        "MarkShown_session": lambda: rec.MarkShown(pb.MarkShownRequest(item_ids=[1]), timeout=10),
        "MarkShown_none": lambda: rec.MarkShown(pb.MarkShownRequest(session_id="s"), timeout=10),
        "MarkShown_many": lambda: rec.MarkShown(pb.MarkShownRequest(session_id="s", item_ids=[1] * 51), timeout=10),
        "MarkShown_unknown": lambda: rec.MarkShown(pb.MarkShownRequest(session_id="s", item_ids=[1, 4242]), timeout=10),
        "GetItems": lambda: rec.GetItems(pb.GetItemsRequest(item_ids=[1, 4242]), timeout=10),
        "GetItems_gap": lambda: rec.GetItems(pb.GetItemsRequest(item_ids=[267]), timeout=10),
        "Recommend_budget": lambda: rec.Recommend(pb.RecommendRequest(k=3, query_embedding=[0.1] * 384), timeout=10,
                                                  metadata=[("x-voxpipe-budget-ms", "-5")]),
    }
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await requests[call]()
    assert err.value.code() == code
    assert needle in err.value.details()
    if call == "GetItems_gap":
        assert "1..1682" not in err.value.details() or "gaps" in err.value.details()
    assert (await _recommend(rec, k=1)).items


async def test_recommend_calls_honour_a_tiny_timeout_and_refuse_a_negative_budget(rec):
    """As NLP and TTS do (one deadline rule, services/common/deadline.py); the neighbour call is answered."""
    from protos import common_pb2

    def call(call_id: int, timeout_ms: float = 10_000.0, budget: str | None = None) -> pb.RecommendCall:
        metadata = {} if budget is None else {"x-voxpipe-budget-ms": budget}
        return pb.RecommendCall(header=common_pb2.CallHeader(call_id=call_id, timeout_ms=timeout_ms, metadata=metadata),
                                request=pb.RecommendRequest(k=3, query_embedding=[0.1] * 384))

    replies = {}
    stream = rec.RecommendCalls(iter([call(1, timeout_ms=1e-6), call(2, budget="-5"), call(3)]), timeout=30)
    async for reply in stream:
        if reply.status.done:
            replies[reply.status.call_id] = reply.status
        if len(replies) == 3:
            break
    stream.cancel()
    assert replies[1].code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0], replies[1]
    assert replies[2].code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "x-voxpipe-budget-ms='-5'" in replies[2].message
    assert replies[3].code == 0
