"""In-memory sessions: ratings and shown items per session id, with an idle TTL and a count cap (LRU).

Behaviour at the cap: creating a session when ``max_sessions`` exist evicts the least recently used one
(its ratings are forgotten; a later request with that id starts afresh). Expired sessions (idle longer
than ``ttl_s``) are dropped lazily on every access, oldest first, so memory is bounded without a
background task. All access happens on the event loop thread, so no locking is needed.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Session:
    """One user's conversation state."""

    ratings: OrderedDict[int, float] = field(default_factory=OrderedDict)  # item row -> stars, oldest first
    shown: OrderedDict[int, None] = field(default_factory=OrderedDict)  # item rows already recommended
    vector: np.ndarray | None = None  # fold-in of the ratings; None until there are liked/disliked items
    last_access_s: float = 0.0

    def seen(self) -> set[int]:
        """Rated or shown item rows."""
        return set(self.ratings) | set(self.shown)


class SessionStore:
    """Sessions keyed by id (see the module docstring)."""

    def __init__(self, *, ttl_s: float, max_sessions: int, max_ratings: int, max_shown: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self.max_ratings = max_ratings
        self.max_shown = max_shown
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self.evicted = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: str) -> bool:
        self._expire()
        return session_id in self._sessions

    def get(self, session_id: str) -> Session | None:
        """The live session, refreshed as most recently used; None if absent or expired."""
        self._expire()
        session = self._sessions.get(session_id)
        if session is not None:
            session.last_access_s = self._clock()
            self._sessions.move_to_end(session_id)
        return session

    def get_or_create(self, session_id: str) -> Session:
        """The session, created if needed (evicting the least recently used one at the cap)."""
        session = self.get(session_id)
        if session is None:
            while len(self._sessions) >= self.max_sessions:
                self._sessions.popitem(last=False)
                self.evicted += 1
            session = Session(last_access_s=self._clock())
            self._sessions[session_id] = session
        return session

    def add_rating(self, session: Session, row: int, stars: float) -> None:
        """Record (or replace) a rating, dropping the oldest beyond ``max_ratings``."""
        session.ratings.pop(row, None)
        session.ratings[row] = stars
        while len(session.ratings) > self.max_ratings:
            session.ratings.popitem(last=False)

    def add_shown(self, session: Session, rows: list[int]) -> None:
        """Remember recommended rows, dropping the oldest beyond ``max_shown``."""
        for row in rows:
            session.shown.pop(row, None)
            session.shown[row] = None
        while len(session.shown) > self.max_shown:
            session.shown.popitem(last=False)

    def _expire(self) -> None:
        cutoff = self._clock() - self.ttl_s
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if oldest.last_access_s >= cutoff:
                break
            self._sessions.popitem(last=False)
            self.expired += 1
