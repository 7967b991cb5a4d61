"""MovieLens-100K: loading, the leave-last-out split, implicit ALS, and HR@10 / NDCG@10 evaluation.

Pure NumPy and deterministic (seeded initialisation, fixed iteration order), so a rebuild gives the same
factors. Implicit ALS (Hu, Koren & Volinsky 2008): every rating is an observed interaction with preference
1 and confidence ``1 + alpha``; unobserved pairs have preference 0 and confidence 1. The user/item solves
use the ``YᵀY + Yᵤᵀ(Cᵤ - I)Yᵤ`` identity so each costs O(f² · nnz + f³).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True, kw_only=True)
class Ratings:
    """All ratings as parallel arrays; user and item indexes are 0-based (MovieLens id - 1)."""

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    timestamp: np.ndarray
    n_users: int
    n_items: int


@dataclass(frozen=True, kw_only=True)
class AlsParams:
    """Implicit-ALS hyper-parameters, chosen on a validation split (each user's second-to-last rating)."""

    factors: int = 64
    regularization: float = 20.0
    alpha: float = 5.0
    iterations: int = 10
    seed: int = 0


def load_ratings(inter_file: Path) -> Ratings:
    """Read recbole's ``ml-100k.inter`` (user_id, item_id, rating, timestamp; tab separated, one header)."""
    raw = np.loadtxt(inter_file, skiprows=1, dtype=np.int64, delimiter="\t")
    user, item, rating, ts = raw.T
    return Ratings(user=user - 1, item=item - 1, rating=rating.astype(np.float32), timestamp=ts,
                   n_users=int(user.max()), n_items=int(item.max()))


def leave_last_out(r: Ratings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train mask over ratings, test user indexes, test item indexes): each user's latest rating is held out.

    Ties in timestamp are broken by item index so the split is deterministic.
    """
    order = np.lexsort((r.item, r.timestamp, r.user))
    last = np.zeros(len(order), dtype=bool)
    users_sorted = r.user[order]
    is_last = np.r_[users_sorted[1:] != users_sorted[:-1], True]
    last[order[is_last]] = True
    return ~last, r.user[order[is_last]], r.item[order[is_last]]


def interactions(r: Ratings, mask: np.ndarray | None = None) -> np.ndarray:
    """Dense binary user x item matrix of the (masked) ratings (943 x 1682 fits easily)."""
    x = np.zeros((r.n_users, r.n_items), dtype=np.float32)
    m = slice(None) if mask is None else mask
    x[r.user[m], r.item[m]] = 1.0
    return x


def train_als(x: np.ndarray, params: AlsParams) -> tuple[np.ndarray, np.ndarray]:
    """Implicit ALS on binary ``x``; returns (user factors [U, f], item factors [I, f]) as float32.

    Runs with one BLAS thread: thousands of 64x64 solves gain nothing from threads, and on a busy 2-core
    machine OpenBLAS's spinning threads made training 6x slower (2.7 s vs 17 s).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _train_als(x, params)


def _train_als(x: np.ndarray, params: AlsParams) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(params.seed)
    users = rng.normal(0.0, 0.01, (x.shape[0], params.factors))
    items = rng.normal(0.0, 0.01, (x.shape[1], params.factors))
    reg = params.regularization * np.eye(params.factors)
    rows_u = [np.flatnonzero(row) for row in x]
    rows_i = [np.flatnonzero(col) for col in x.T]
    for _ in range(params.iterations):
        _solve_side(users, items, rows_u, params.alpha, reg)
        _solve_side(items, users, rows_i, params.alpha, reg)
    return users.astype(np.float32), items.astype(np.float32)


def _solve_side(target: np.ndarray, fixed: np.ndarray, rows: list[np.ndarray], alpha: float,
                reg: np.ndarray) -> None:
    gram = fixed.T @ fixed + reg
    for a, idx in enumerate(rows):
        if len(idx) == 0:
            target[a] = 0.0
            continue
        f = fixed[idx]
        target[a] = np.linalg.solve(gram + alpha * (f.T @ f), (1.0 + alpha) * f.sum(axis=0))


def hit_rate_ndcg(scores: np.ndarray, seen: np.ndarray, test_items: np.ndarray, k: int = 10) -> tuple[float, float]:
    """HR@k and NDCG@k of ``scores`` [U, I] with each user's training items excluded from the ranking."""
    s = np.where(seen > 0, -np.inf, scores)
    top = np.argpartition(-s, k, axis=1)[:, :k]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(s, top, axis=1), axis=1), axis=1)
    hits = top == test_items[:, None]
    hr = float(hits.any(axis=1).mean())
    ndcg = float((hits / np.log2(np.arange(2, k + 2))[None, :]).sum(axis=1).mean())
    return hr, ndcg
