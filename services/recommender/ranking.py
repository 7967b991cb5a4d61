"""Strategies as query vectors for the one serving graph, the batch function, fold-in and reasons.

The graph scores ``query · item`` over four blocks of the item matrix (see engines/build/recommender.py):
ALS factors, normalised factors, text embedding, popularity. A strategy is just how the blocks are filled:

- ``personalised``: fold-in user vector in the factor block (+ the query embedding in the text block when
  the user also asked for something);
- ``query`` (cold start): the NLP query embedding in the text block plus a small popularity prior;
- ``similar``: the item's normalised factors and its text embedding (item-item cosine);
- ``popularity``: no graph at all, a precomputed most-rated list under the same filters (cheap degraded mode).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.base import Engine
from engines.errors import BatchShapeError
from services.common.catalog import CatalogItem, spoken_title
from services.recommender.catalog import Catalog
from services.recommender.sessions import Session

LIKED_MIN_STARS = 3.5  # >= liked (preference 1); <= DISLIKED_MAX_STARS disliked (preference 0); 3 is neutral
DISLIKED_MAX_STARS = 2.5
MASKED = -1e29  # the graph writes -1e30 for disallowed items

_GENRE_NOUN = {"Action": "action film", "Adventure": "adventure", "Animation": "animated film",
               "Children's": "family film", "Comedy": "comedy", "Crime": "crime film", "Documentary": "documentary",
               "Drama": "drama", "Fantasy": "fantasy", "Film-Noir": "film noir", "Horror": "horror film",
               "Musical": "musical", "Mystery": "mystery", "Romance": "romance", "Sci-Fi": "sci-fi film",
               "Thriller": "thriller", "War": "war film", "Western": "western"}


@dataclass(frozen=True, slots=True)
class Blocks:
    """Column ranges of the query vector (from the model's metadata)."""

    cf: slice
    cf_normalized: slice
    text: slice
    popularity: int
    dim: int

    @classmethod
    def from_metadata(cls, meta: dict) -> Blocks:
        b = meta["blocks"]
        return cls(cf=slice(*b["cf"]), cf_normalized=slice(*b["cf_normalized"]), text=slice(*b["text"]),
                   popularity=b["popularity"][0], dim=int(meta["query_dim"]))


def fold_in(items: np.ndarray, gram: np.ndarray, liked: np.ndarray, disliked: np.ndarray, *,
            alpha: float, regularization: float) -> np.ndarray:
    """A user vector from a handful of items, exactly as one ALS user step would compute it (the build's
    evaluation folds in held-out users with this same function).

    ``liked`` items get preference 1, ``disliked`` preference 0, both with confidence ``1 + alpha``
    (a disliked item is strong evidence of "not this"). ``gram`` is ``itemsᵀ items``.
    """
    f = items.shape[1]
    a = gram + regularization * np.eye(f, dtype=np.float64)
    b = np.zeros(f, dtype=np.float64)
    for idx, pref in ((liked, 1.0), (disliked, 0.0)):
        if len(idx):
            v = items[idx].astype(np.float64)
            a += alpha * (v.T @ v)
            b += (1.0 + alpha) * pref * v.sum(axis=0)
    return np.linalg.solve(a, b).astype(np.float32)


def session_vector(catalog: Catalog, session: Session) -> np.ndarray | None:
    """Fold-in of the session's liked/disliked ratings (None when it has neither)."""
    liked = np.array([r for r, s in session.ratings.items() if s >= LIKED_MIN_STARS], dtype=np.int64)
    disliked = np.array([r for r, s in session.ratings.items() if s <= DISLIKED_MAX_STARS], dtype=np.int64)
    if not len(liked) and not len(disliked):
        return None
    return fold_in(catalog.factors, catalog.gram, liked, disliked,
                   alpha=catalog.alpha, regularization=catalog.regularization)


def personal_query(blocks: Blocks, blend: dict, user: np.ndarray, query: np.ndarray | None) -> np.ndarray:
    q = np.zeros(blocks.dim, dtype=np.float32)
    q[blocks.cf] = blend["personal_cf"] * user
    if query is not None:
        q[blocks.text] = blend["personal_query"] * query
    return q


def text_query(blocks: Blocks, blend: dict, query: np.ndarray) -> np.ndarray:
    q = np.zeros(blocks.dim, dtype=np.float32)
    q[blocks.text] = blend["query_text"] * query
    q[blocks.popularity] = blend["query_popularity"]
    return q


def similar_query(blocks: Blocks, blend: dict, catalog: Catalog, row: int) -> np.ndarray:
    q = np.zeros(blocks.dim, dtype=np.float32)
    q[blocks.cf_normalized] = blend["similar_cf"] * catalog.factors_normalized[row]
    q[blocks.text] = blend["similar_text"] * catalog.text[row]
    q[blocks.popularity] = blend["similar_popularity"]
    return q


def score_batch(engine: Engine, items: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Batch function: stack (query, allowed) pairs, run the graph, split into (scores, rows) per item."""
    out = engine.run({"query": np.stack([q for q, _ in items]), "allowed": np.stack([a for _, a in items])})
    scores, rows = out["scores"], out["item_index"]
    if scores.shape[0] != len(items):
        raise BatchShapeError(f"{engine.name}: {scores.shape[0]} results for {len(items)} requests")
    return [(scores[i], rows[i]) for i in range(len(items))]


def top_allowed(scores: np.ndarray, rows: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The first ``k`` (row, score) pairs the mask allowed."""
    return [(int(r), float(s)) for s, r in zip(scores, rows, strict=True) if s > MASKED][:k]


def popularity_top(catalog: Catalog, allowed: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Most-rated allowed items (no graph), scored by the popularity prior."""
    order = catalog.popularity_order[allowed[catalog.popularity_order]][:k]
    return [(int(r), float(catalog.popularity_score[r])) for r in order]


def decade_label(year: int) -> str:
    """"90s" for 1994, "1920s" style for older decades where "20s" would be ambiguous."""
    if not year:
        return ""
    decade = year // 10 * 10
    return f"{decade % 100:02d}s" if decade >= 1930 else f"{decade}s"


def describe(item: CatalogItem, genres: list[str]) -> str:
    """"90s comedy": decade plus the filtered genre the item has (else its first genre)."""
    genre = next((g for g in genres if g in item.genres), next((g for g in item.genres if g in _GENRE_NOUN), ""))
    noun = _GENRE_NOUN.get(genre, "film")
    return f"{decade_label(item.year)} {noun}".strip()


def because_you_liked(catalog: Catalog, row: int, liked_rows: list[int]) -> str | None:
    """Title of the liked item closest (factor cosine) to ``row``; None if nothing was liked."""
    if not liked_rows:
        return None
    sims = catalog.factors_normalized[liked_rows] @ catalog.factors_normalized[row]
    return spoken_title(catalog.items[liked_rows[int(np.argmax(sims))]].title)
