"""One utterance -> intent, entities and embedding, independent of gRPC (the servicer is a thin edge)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from services.nlp.entities import Found
from services.nlp.extract import EntityExtractor
from services.nlp.intents import IntentClassifier, IntentResult

# What a title is replaced by in the text the intent head sees (see services.nlp.intents).
TITLE_PLACEHOLDER = "a movie"

# (text, absolute monotonic deadline or None) -> L2-normalised embedding.
Embed = Callable[[str, float | None], Awaitable[np.ndarray]]


@dataclass(frozen=True, slots=True)
class Understanding:
    """The result for one utterance."""

    intent: IntentResult
    entities: list[Found]
    embedding: np.ndarray
    normalized_text: str


def intent_text(text: str, entities: list[Found]) -> str:
    """``text`` with every title span replaced by ``TITLE_PLACEHOLDER``."""
    out = text
    for e in sorted((e for e in entities if e.type == "title"), key=lambda e: -e.start):
        out = out[: e.start] + TITLE_PLACEHOLDER + out[e.end:]
    return out


class UnderstandingPipeline:
    """Entities (rules + fuzzy titles), embeddings (batched engine) and the intent head."""

    def __init__(self, extractor: EntityExtractor, classifier: IntentClassifier, embed: Embed) -> None:
        self.extractor = extractor
        self.classifier = classifier
        self._embed = embed

    async def understand(self, normalized_text: str, *, deadline_s: float | None = None) -> Understanding:
        """Understand already-validated, normalised text within ``deadline_s`` (``time.monotonic()``)."""
        # Entity rules + rapidfuzz take ~1 ms of pure Python: off the event loop.
        entities = await asyncio.to_thread(self.extractor.extract, normalized_text)
        masked = intent_text(normalized_text, entities)
        if masked == normalized_text:
            embedding = for_intent = await self._embed(normalized_text, deadline_s)
        else:
            # Submitted together so the batcher runs them in one padded batch.
            async with asyncio.TaskGroup() as tg:
                whole = tg.create_task(self._embed(normalized_text, deadline_s))
                title_free = tg.create_task(self._embed(masked, deadline_s))
            embedding, for_intent = whole.result(), title_free.result()
        intent = self.classifier.classify(for_intent[None, :])[0]
        return Understanding(intent=intent, entities=entities, embedding=embedding, normalized_text=normalized_text)
