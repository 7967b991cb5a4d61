"""Utterances -> intent, entities and embedding, independent of gRPC (the servicer is a thin edge).

The whole of it is the dynamic batcher's batch function and runs on the engine instance's worker thread:
entity rules and fuzzy titles, the title-free text, one MiniLM pass, the intent head. The event loop only
validates, submits and answers, and a request crosses to a worker thread once, in its batch (a thread
hand-off costs ~0.2 ms of CPU on the 2-core VM).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from services.nlp.entities import Found
from services.nlp.extract import EntityExtractor
from services.nlp.intents import IntentClassifier, IntentResult

# What a title is replaced by in the text that is embedded (see services.nlp.intents).
TITLE_PLACEHOLDER = "a movie"

# Texts -> one L2-normalised embedding each (a synchronous batch function, services.nlp.encoder).
EmbedMany = Callable[[list[str]], list[np.ndarray]]


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


def understand_batch(extractor: EntityExtractor, classifier: IntentClassifier, embed_many: EmbedMany,
                     texts: list[str]) -> list[Understanding]:
    """Batch function: understand already-validated, normalised texts.

    One encoder pass over the title-free text: the intent head reads it (titles would dominate a short
    utterance's embedding) and the recommender gets it as the query; titles reach it as item ids.
    """
    entities = [extractor.extract(t) for t in texts]
    embeddings = embed_many([intent_text(t, e) for t, e in zip(texts, entities, strict=True)])
    intents = classifier.classify(np.stack(embeddings))
    return [Understanding(intent=i, entities=e, embedding=emb, normalized_text=t)
            for i, e, emb, t in zip(intents, entities, embeddings, texts, strict=True)]
