"""The NLP stage's options (the ``[nlp]`` section of the stack TOML)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class NlpConfig:
    """How the NLP stage embeds, classifies and batches."""

    model: str = "minilm"
    # Raw text limit (the proto's 1..2000 characters); longer -> INVALID_ARGUMENT. Word pieces beyond the
    # model's 256 are truncated (documented in docs/bench/nlp.md).
    max_text_chars: int = 2_000
    # Empty = the packaged services/nlp/data/intents.json.
    intents_path: str = ""
    # Entities are looked for in the first this-many words only (a spoken turn is far shorter; matching a
    # 2000-character text in full costs ~130 ms of Python).
    max_entity_words: int = 64
    # Fuzzy title match floor (rapidfuzz Indel similarity, 0..1) for non-exact matches.
    title_min_score: float = 0.88
    # Batching across requests (one batch = one or more length-grouped ONNX runs). No queue delay: a lone
    # request should not wait (asyncio rounds short timers up to ~1 ms), and under load requests pile up
    # while the engine is busy, so batches form anyway (docs/bench/nlp.md compares 0 and 500 us).
    max_batch_size: int = 32
    max_queue_delay_us: int = 0
    max_queue_size: int = 512
    # Two single-threaded sessions run two batches at once; on 2 cores that beats one 2-thread session by
    # ~25 % at concurrency 32 (ORT's per-operator thread hand-offs cost more than the small matmuls gain).
    instances: int = 2
    intra_op_threads: int = 1

    def __post_init__(self) -> None:
        for name in ("max_text_chars", "max_entity_words", "max_batch_size", "max_queue_size", "instances", "intra_op_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_queue_delay_us < 0:
            raise ValueError(f"max_queue_delay_us must be >= 0, got {self.max_queue_delay_us}")
        if not 0.5 <= self.title_min_score <= 1.0:
            raise ValueError(f"title_min_score must be in 0.5..1.0, got {self.title_min_score}")
