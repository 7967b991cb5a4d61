"""The recommender stage's options (the ``[recommender]`` section of the stack TOML)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class RecommenderConfig:
    """Sessions and limits of the recommender stage (serving settings are the model's: ``[models.recommender]``)."""

    model: str = "recommender"
    max_k: int = 50  # the graph's TopK; requests ask for 1..max_k
    # Sessions live in memory: dropped after [stack] session_ttl_s of idle time, and at most this many are kept;
    # when a new session would exceed the cap, the least recently used one is evicted (its ratings are forgotten).
    max_sessions: int = 10_000
    # Per-session bounds (oldest dropped first), so one long session cannot grow without limit.
    max_ratings_per_session: int = 500
    max_shown_per_session: int = 1_000
    max_get_items: int = 100
    max_exclude_item_ids: int = 2_000  # filters.exclude_item_ids per request (the catalogue has 1,682 films)

    def __post_init__(self) -> None:
        for name in ("max_k", "max_sessions", "max_ratings_per_session", "max_shown_per_session", "max_get_items",
                     "max_exclude_item_ids"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
