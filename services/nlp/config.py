"""The NLP stage's options (the ``[nlp]`` section of the stack TOML)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class NlpConfig:
    """How the NLP stage embeds and classifies (serving settings are the model's: ``[models.minilm]``)."""

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

    def __post_init__(self) -> None:
        for name in ("max_text_chars", "max_entity_words"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.5 <= self.title_min_score <= 1.0:
            raise ValueError(f"title_min_score must be in 0.5..1.0, got {self.title_min_score}")
