"""A local copy of the recommender's popularity list: the answer of last resort when the budget is gone.

Filled from ``Recommend(popularity_only=True)`` when the orchestrator starts (and refreshed in the
background), so a turn that cannot afford the recommender still names real, popular movies that match
its genre and year filters.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import grpc

from orchestrator import replies
from protos import recommender_pb2
from services.common.catalog import ItemFilter

log = logging.getLogger(__name__)


class PopularityCache:
    """Most popular catalogue items, filtered locally."""

    def __init__(self, size: int = 50) -> None:
        self.size = size
        self.items: list[recommender_pb2.Item] = []

    async def refresh(self, stub, timeout_s: float = 5.0) -> bool:
        """Fetch the list from the recommender; False (and the old list kept) if it is not reachable."""
        try:
            request = recommender_pb2.RecommendRequest(k=min(self.size, 50), popularity_only=True)
            reply = await stub.Recommend(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as e:
            log.warning("popularity list not refreshed: %s %s", e.code().name, e.details())
            return False
        self.items = list(reply.items)
        return True

    def answer(self, filters: recommender_pb2.Filters, k: int, *, seen: frozenset[int] = frozenset()
               ) -> recommender_pb2.RecommendResponse:
        """Top ``k`` cached items that pass ``filters`` and are not in ``seen``."""
        rule = ItemFilter.of(filters)
        rule = replace(rule, excluded=rule.excluded | seen)
        picked = [i for i in self.items if rule.admits(i.item_id, i.year, i.genres)][:k]
        reason = "" if picked else (replies.UNAVAILABLE_REASON if not self.items
                                    else "no popular movie matches the filters")
        return recommender_pb2.RecommendResponse(items=picked, strategy="popularity", empty_reason=reason)
