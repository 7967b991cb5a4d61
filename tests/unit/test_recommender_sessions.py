"""Session store (TTL, LRU cap, per-session bounds), fold-in and ranking helpers — no model needed."""

from __future__ import annotations

import numpy as np
import pytest

from engines.build.recommender_train import AlsParams, hit_rate_ndcg, train_als
from services.recommender.ranking import decade_label, fold_in, top_allowed
from services.recommender.sessions import SessionStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _store(clock: Clock, **kw) -> SessionStore:
    args = {"ttl_s": 60.0, "max_sessions": 3, "max_ratings": 4, "max_shown": 5} | kw
    return SessionStore(clock=clock, **args)


def test_sessions_expire_after_idle_ttl():
    clock = Clock()
    store = _store(clock)
    store.get_or_create("a")
    clock.now += 59
    assert store.get("a") is not None  # access refreshes
    clock.now += 59
    assert "a" in store
    clock.now += 61
    assert store.get("a") is None and len(store) == 0 and store.expired == 1


def test_cap_evicts_least_recently_used():
    clock = Clock()
    store = _store(clock)
    for sid in ("a", "b", "c"):
        store.get_or_create(sid)
        clock.now += 1
    store.get("a")  # a is now the most recent
    store.get_or_create("d")
    assert "b" not in store and {"a", "c", "d"} == {s for s in "abcd" if s in store}
    assert len(store) == 3 and store.evicted == 1


def test_per_session_ratings_and_shown_are_bounded_oldest_first():
    store = _store(Clock())
    s = store.get_or_create("a")
    for row in range(6):
        store.add_rating(s, row, 4.0)
    assert list(s.ratings) == [2, 3, 4, 5]
    store.add_rating(s, 3, 1.0)  # re-rating moves it to the newest
    assert list(s.ratings) == [2, 4, 5, 3] and s.ratings[3] == 1.0
    store.add_shown(s, list(range(10)))
    assert list(s.shown) == [5, 6, 7, 8, 9]
    assert s.seen() == {2, 3, 4, 5, 6, 7, 8, 9}


def _toy_interactions(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Two taste groups over 40 items: users 0..29 like items 0..19, users 30..59 like 20..39.
    x = np.zeros((60, 40), dtype=np.float32)
    for u in range(60):
        group = 0 if u < 30 else 20
        x[u, group + rng.choice(20, size=8, replace=False)] = 1
    return x


def test_als_is_deterministic_and_fold_in_recovers_the_taste_group():
    x = _toy_interactions()
    params = AlsParams(factors=8, regularization=1.0, alpha=10.0, iterations=8, seed=3)
    _, v1 = train_als(x, params)
    _, v2 = train_als(x, params)
    assert np.array_equal(v1, v2)
    gram = v1.T.astype(np.float64) @ v1
    user = fold_in(v1, gram, np.array([0, 1, 2]), np.zeros(0, dtype=np.int64),
                   alpha=params.alpha, regularization=params.regularization)
    scores = v1 @ user
    assert scores[:20].mean() > scores[20:].mean() + 0.2
    disliker = fold_in(v1, gram, np.zeros(0, dtype=np.int64), np.array([0, 1, 2]),
                       alpha=params.alpha, regularization=params.regularization)
    assert (v1 @ disliker)[:20].mean() < scores[:20].mean()


def test_hit_rate_ndcg_excludes_seen_and_ranks():
    scores = np.array([[0.9, 0.8, 0.1], [0.1, 0.2, 0.3]])
    seen = np.array([[1, 0, 0], [0, 0, 0]])
    hr, ndcg = hit_rate_ndcg(scores, seen, np.array([1, 0]), k=1)
    assert hr == 0.5 and ndcg == pytest.approx(0.5)


def test_top_allowed_drops_masked_entries():
    scores = np.array([3.0, 2.0, -1e30, -1e30], dtype=np.float32)
    assert top_allowed(scores, np.array([7, 3, 1, 2]), 3) == [(7, 3.0), (3, 2.0)]


def test_decade_label():
    assert decade_label(1994) == "90s" and decade_label(1977) == "70s" and decade_label(1922) == "1920s"
