"""The recommender stage: ``voxpipe.v1.Recommender`` (Recommend, Feedback, MarkShown, GetItems) over the ONNX graph."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import numpy as np

from protos import recommender_pb2, recommender_pb2_grpc
from services.common import InvalidArgumentError, deadline_of
from services.common.calls import CallServer
from services.common.catalog import ItemFilter, display_title, spoken_title
from services.common.ids import validate_session_id
from services.recommender import ranking
from services.recommender.sessions import Session

if TYPE_CHECKING:
    from services.recommender.stage import RecommenderStage


log = logging.getLogger(__name__)

class RecommenderServicer(recommender_pb2_grpc.RecommenderServicer):
    """Validation at the edge; ranking through the batcher; sessions in memory."""

    def __init__(self, stage: RecommenderStage) -> None:
        self._stage = stage
        self._calls = CallServer(stage.name, stage.service_names[0], "Recommend", self.Recommend,
                                 recommender_pb2.RecommendCallReply)

    async def RecommendCalls(self, request_iterator, context: grpc.aio.ServicerContext
                             ) -> AsyncIterator[recommender_pb2.RecommendCallReply]:
        async for reply in self._calls.serve(request_iterator):
            yield reply

    async def Recommend(self, request: recommender_pb2.RecommendRequest, context: grpc.aio.ServicerContext
                        ) -> recommender_pb2.RecommendResponse:
        st = self._stage
        session_id = validate_session_id(request.session_id)
        if not 1 <= request.k <= st.config.max_k:
            raise InvalidArgumentError(f"k={request.k} is outside 1..{st.config.max_k}")
        query = self._query(request.query_embedding)
        catalog = st.catalog
        similar_row = None
        if request.similar_to_item_id < 0:
            raise InvalidArgumentError(f"similar_to_item_id={request.similar_to_item_id} is invalid: ids are positive")
        if request.similar_to_item_id > 0:
            similar_row = catalog.row(request.similar_to_item_id, field="similar_to_item_id")
        f = request.filters
        item_filter = ItemFilter.of(f)
        if len(f.exclude_item_ids) > st.config.max_exclude_item_ids:
            raise InvalidArgumentError(f"filters.exclude_item_ids has {len(f.exclude_item_ids)} ids, more than the "
                                       f"limit of {st.config.max_exclude_item_ids} (max_exclude_item_ids)")
        exclude = {catalog.row(i, field="filters.exclude_item_ids") for i in f.exclude_item_ids}
        session = st.sessions.get_or_create(session_id) if session_id else None
        if f.exclude_seen and session is not None:
            exclude |= session.seen()
        if similar_row is not None:
            exclude.add(similar_row)
        genres = list(f.genres)
        allowed = catalog.mask(item_filter, exclude_rows=exclude)
        if not allowed.any():
            return recommender_pb2.RecommendResponse(strategy="", empty_reason=_empty_reason(f, exclude))

        strategy, picked = await self._rank(request, session, query, similar_row, allowed, context)
        liked = [r for r, s in session.ratings.items() if s >= ranking.LIKED_MIN_STARS] if session else []
        items = [self._item(row, score, strategy, genres, liked, similar_row) for row, score in picked]
        if session is not None and not request.preview:
            st.sessions.add_shown(session, [row for row, _ in picked])
        reason = "" if items else _empty_reason(f, exclude)
        return recommender_pb2.RecommendResponse(items=items, strategy=strategy, empty_reason=reason)

    async def _rank(self, request, session: Session | None, query: np.ndarray | None, similar_row: int | None,
                    allowed: np.ndarray, context) -> tuple[str, list[tuple[int, float]]]:
        st = self._stage
        k = request.k
        if request.popularity_only:
            return "popularity", ranking.popularity_top(st.catalog, allowed, k)
        if similar_row is not None:
            strategy, vec = "similar", ranking.similar_query(st.blocks, st.blend, st.catalog, similar_row)
        elif session is not None and session.vector is not None:
            strategy, vec = "personalised", ranking.personal_query(st.blocks, st.blend, session.vector, query)
        elif query is not None:
            strategy, vec = "query", ranking.text_query(st.blocks, st.blend, query)
        else:
            return "popularity", ranking.popularity_top(st.catalog, allowed, k)
        scores, rows = await st.batcher.submit((vec, allowed), deadline_s=deadline_of(context))
        return strategy, ranking.top_allowed(scores, rows, k)

    def _query(self, values) -> np.ndarray | None:
        if not len(values):
            return None
        dim = self._stage.blocks.text.stop - self._stage.blocks.text.start
        if len(values) != dim:
            raise InvalidArgumentError(f"query_embedding has {len(values)} values, expected {dim} (or none)")
        q = np.asarray(values, dtype=np.float32)
        norm = float(np.linalg.norm(q))
        if not math.isfinite(norm) or norm == 0.0:
            raise InvalidArgumentError("query_embedding must be finite and non-zero (an L2-normalised NLP embedding)")
        return q / norm

    def _item(self, row: int, score: float, strategy: str, genres: list[str], liked: list[int],
              similar_row: int | None) -> recommender_pb2.Item:
        catalog = self._stage.catalog
        item = catalog.items[row]
        what = ranking.describe(item, genres)
        if strategy == "similar" and similar_row is not None:
            reason = f"similar to {spoken_title(catalog.items[similar_row].title)}"
        elif strategy == "personalised":
            source = ranking.because_you_liked(catalog, row, liked)
            reason = f"because you liked {source}" if source else f"a {what} that fits your ratings"
        elif strategy == "query":
            reason = f"{what} matching your request"
        else:
            reason = f"popular {what}"
        return recommender_pb2.Item(item_id=item.item_id, title=display_title(item.title), year=item.year,
                                    genres=list(item.genres), score=score, reason=reason)

    async def Feedback(self, request: recommender_pb2.FeedbackRequest, context: grpc.aio.ServicerContext
                       ) -> recommender_pb2.FeedbackResponse:
        st = self._stage
        session_id = validate_session_id(request.session_id, required=True)
        row = st.catalog.row(request.item_id)
        rating = request.rating
        if not math.isfinite(rating) or not 1.0 <= rating <= 5.0:
            raise InvalidArgumentError(f"rating={rating} is outside 1..5 stars")
        session = st.sessions.get_or_create(session_id)
        st.sessions.add_rating(session, row, float(rating))
        # Fold-in now (a 64x64 solve, microseconds) so the very next Recommend already reflects it.
        session.vector = ranking.session_vector(st.catalog, session)
        return recommender_pb2.FeedbackResponse(ratings_in_session=len(session.ratings))

    async def MarkShown(self, request: recommender_pb2.MarkShownRequest, context: grpc.aio.ServicerContext
                        ) -> recommender_pb2.MarkShownResponse:
        st = self._stage
        session_id = validate_session_id(request.session_id, required=True)
        if not 1 <= len(request.item_ids) <= st.config.max_k:
            raise InvalidArgumentError(f"item_ids has {len(request.item_ids)} ids; 1..{st.config.max_k} are accepted")
        rows = [st.catalog.row(i, field="item_ids") for i in request.item_ids]
        session = st.sessions.get_or_create(session_id)
        st.sessions.add_shown(session, rows)
        return recommender_pb2.MarkShownResponse(shown_in_session=len(session.shown))

    async def GetItems(self, request: recommender_pb2.GetItemsRequest, context: grpc.aio.ServicerContext
                       ) -> recommender_pb2.GetItemsResponse:
        st = self._stage
        if len(request.item_ids) > st.config.max_get_items:
            raise InvalidArgumentError(f"item_ids has {len(request.item_ids)} ids, more than {st.config.max_get_items}")
        rows = [st.catalog.row(i, field="item_ids") for i in request.item_ids]
        items = []
        for row in rows:
            item = st.catalog.items[row]
            items.append(recommender_pb2.Item(item_id=item.item_id, title=display_title(item.title),
                                              year=item.year, genres=list(item.genres)))
        return recommender_pb2.GetItemsResponse(items=items)


def _empty_reason(f: recommender_pb2.Filters, exclude: set[int]) -> str:
    parts = []
    if f.genres:
        parts.append("genres " + "/".join(f.genres))
    if f.year_min or f.year_max:
        parts.append(f"years {f.year_min or '…'}–{f.year_max or '…'}")
    if exclude:
        parts.append(f"{len(exclude)} excluded or already seen")
    return "no movie matches the filters" + (f" ({', '.join(parts)})" if parts else "")
