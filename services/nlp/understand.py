"""Utterances -> intent, entities and embedding, independent of gRPC (the servicer is a thin edge).

Three steps: :func:`prepare` (entity rules and fuzzy titles, the title-free text, its word pieces), one
MiniLM pass over a batch, and :func:`finish` (the intent head). On a CPU all three are the dynamic
batcher's batch function on the engine instance's worker thread (:func:`understand_batch`): a request
crosses to a worker thread once, in its batch (a thread hand-off costs ~0.2 ms of CPU on the 2-core VM).
On a GPU, :func:`prepare` runs per request in the batcher's host threads and the batch function is
MiniLM plus the intent head, so the GPU instance's thread does no string work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.nlp.entities import Found
from services.nlp.extract import EntityExtractor
from services.nlp.intents import IntentClassifier, IntentData, IntentResult

# What a title is replaced by in the text that is embedded (see services.nlp.intents).
TITLE_PLACEHOLDER = "a movie"

# Token ids -> one L2-normalised embedding each (a synchronous batch function, services.nlp.encoder).
EmbedIds = Callable[[list[list[int]]], list[np.ndarray]]
Tokenize = Callable[[list[str]], list[list[int]]]


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


@dataclass(frozen=True, slots=True)
class Prepared:
    """An utterance ready for the encoder: its entities and the word pieces of its title-free text."""

    text: str
    entities: list[Found]
    ids: list[int]


def prepare(extractor: EntityExtractor, tokenize: Tokenize, texts: list[str]) -> list[Prepared]:
    """Entities, and the word pieces of the text the encoder sees (titles replaced by a placeholder).

    One encoder pass over the title-free text: the intent head reads it (titles would dominate a short
    utterance's embedding) and the recommender gets it as the query; titles reach it as item ids.
    """
    entities = [extractor.extract(t) for t in texts]
    ids = tokenize([intent_text(t, e) for t, e in zip(texts, entities, strict=True)])
    return [Prepared(t, e, i) for t, e, i in zip(texts, entities, ids, strict=True)]


def finish(classifier: IntentClassifier, prepared: list[Prepared], embeddings: list[np.ndarray]) -> list[Understanding]:
    """The intent head over the embeddings, and the results."""
    intents = classifier.classify(np.stack(embeddings))
    return [Understanding(intent=i, entities=p.entities, embedding=emb, normalized_text=p.text)
            for i, p, emb in zip(intents, prepared, embeddings, strict=True)]


def understand_batch(extractor: EntityExtractor, classifier: IntentClassifier, tokenize: Tokenize,
                     embed_ids: EmbedIds, texts: list[str]) -> list[Understanding]:
    """Batch function (CPU): understand already-validated, normalised texts, all on this thread."""
    prepared = prepare(extractor, tokenize, texts)
    return finish(classifier, prepared, embed_ids([p.ids for p in prepared]))


def understand_prepared(classifier: IntentClassifier, embed_ids: EmbedIds,
                        prepared: list[Prepared]) -> list[Understanding]:
    """Batch function (GPU): the encoder and the intent head over prepared utterances."""
    return finish(classifier, prepared, embed_ids([p.ids for p in prepared]))


def fit_classifier(path: Path, extractor: EntityExtractor, embed_many) -> IntentClassifier:
    """Fit the intent head on ``path``'s examples (titles masked as at run time), in batches of 32."""
    data = IntentData.load(path)

    def embed(texts: list[str]) -> np.ndarray:
        masked = [intent_text(t, extractor.extract(t)) for t in texts]
        return np.concatenate([np.stack(embed_many(masked[i:i + 32])) for i in range(0, len(masked), 32)])

    examples = {intent: embed(texts) for intent, texts in data.examples.items()}
    ood = embed(data.out_of_domain) if data.out_of_domain else np.zeros((0, 384), dtype=np.float32)
    return IntentClassifier().fit(examples, ood)
