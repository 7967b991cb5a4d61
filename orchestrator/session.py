"""Dialogue context the orchestrator keeps per session: the last request and the last answer, for "more" and
"I loved it". Ratings and everything a session has seen are the recommender's (it leaves them out of later
answers); the orchestrator does not keep a second copy."""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from protos import recommender_pb2


@dataclass
class SessionState:
    session_id: str
    last_filters: recommender_pb2.Filters | None = None
    last_embedding: list[float] = field(default_factory=list)
    last_similar_to: int = 0
    last_items: list[recommender_pb2.Item] = field(default_factory=list)  # the last answer's movies
    touched_s: float = field(default_factory=time.monotonic)
    version: int = 0  # counts answers remembered: a speculative turn commits only if none came in meanwhile

    def remember(self, filters: recommender_pb2.Filters, embedding: list[float], similar_to: int,
                 items: list[recommender_pb2.Item]) -> None:
        """The last answer's request and movies, for "more" and "I loved it"."""
        self.last_filters = recommender_pb2.Filters()
        self.last_filters.CopyFrom(filters)
        self.last_embedding = list(embedding)
        self.last_similar_to = similar_to
        self.last_items = list(items)
        self.version += 1

    @property
    def last_item_ids(self) -> frozenset[int]:
        """What the popularity fallback leaves out when the recommender cannot be asked: the last answer."""
        return frozenset(i.item_id for i in self.last_items)


class SessionStore:
    """In-memory sessions with a TTL and a cap; at the cap the least recently used session is evicted."""

    def __init__(self, *, max_sessions: int = 10_000, ttl_s: float = 3600.0) -> None:
        self._sessions: OrderedDict[str, SessionState] = OrderedDict()
        self.max_sessions = max_sessions
        self.ttl_s = ttl_s

    def get_or_create(self, session_id: str = "") -> SessionState:
        """The session named ``session_id`` (a new one if unknown or empty)."""
        now = time.monotonic()
        self._expire(now)
        if session_id and session_id in self._sessions:
            state = self._sessions.pop(session_id)
        else:
            state = SessionState(session_id=session_id or uuid.uuid4().hex[:16])
        state.touched_s = now
        self._sessions[state.session_id] = state
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return state

    def __len__(self) -> int:
        return len(self._sessions)

    def _expire(self, now: float) -> None:
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if now - oldest.touched_s <= self.ttl_s:
                break
            self._sessions.popitem(last=False)
