"""The recommender stage's options (the ``[recommender]`` section of the stack TOML)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class RecommenderConfig:
    """Sessions, limits and batching of the recommender stage."""

    model: str = "recommender"
    max_k: int = 50  # the graph's TopK; requests ask for 1..max_k
    # Sessions live in memory: dropped after this much idle time, and at most this many are kept; when a new
    # session would exceed the cap, the least recently used one is evicted (its ratings are forgotten).
    session_ttl_s: float = 1_800.0
    max_sessions: int = 10_000
    # Per-session bounds (oldest dropped first), so one long session cannot grow without limit.
    max_ratings_per_session: int = 500
    max_shown_per_session: int = 1_000
    max_get_items: int = 100
    # Batching across requests (one batch = one MatMul + TopK over the catalogue). No queue delay: compute
    # is ~0.2 ms, so a window only adds latency (asyncio timers round it up to >= 1 ms); under load requests
    # still batch while the worker is busy (docs/bench/recommender.md).
    max_batch_size: int = 32
    max_queue_delay_us: int = 0
    max_queue_size: int = 1_024
    instances: int = 1
    intra_op_threads: int = 1

    def __post_init__(self) -> None:
        for name in ("max_k", "max_sessions", "max_ratings_per_session", "max_shown_per_session", "max_get_items",
                     "max_batch_size", "max_queue_size", "instances", "intra_op_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.session_ttl_s <= 0:
            raise ValueError(f"session_ttl_s must be > 0, got {self.session_ttl_s}")
        if self.max_queue_delay_us < 0:
            raise ValueError(f"max_queue_delay_us must be >= 0, got {self.max_queue_delay_us}")
