"""Sentence embeddings: ``tokenizers`` word pieces -> the MiniLM engine.

Tokenisation never runs on the event loop (it is part of the batch function on a CPU, of the batcher's
host work on a GPU). Sequences longer than ``max_seq_tokens`` word pieces (256, recorded by the build)
are truncated: the embedding then describes the first ~200 words, which the normalised-text limit of 2000
characters makes rare. On a CPU a batch runs as length groups (cost is proportional to padded tokens);
on a GPU as one batch, which the engine pads to its length bucket.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from engines.base import Engine
from engines.errors import BatchShapeError


def load_tokenizer(folder: Path, max_seq_tokens: int) -> Tokenizer:
    """The model's ``tokenizer.json`` with truncation at ``max_seq_tokens`` and no padding."""
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_seq_tokens)
    tokenizer.no_padding()
    return tokenizer


def tokenize(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Word-piece ids of each text (with [CLS] and [SEP], truncated)."""
    return [e.ids for e in tokenizer.encode_batch(texts)]


def collate(tokenizer: Tokenizer, texts: list[str]) -> dict[str, np.ndarray]:
    """Token ids and attention mask, right-padded with 0 to the longest sequence of the batch."""
    return _pad(tokenize(tokenizer, texts))


def _pad(sequences: list[list[int]]) -> dict[str, np.ndarray]:
    width = max(len(s) for s in sequences)
    ids = np.zeros((len(sequences), width), dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def length_groups(lengths: list[int], *, max_waste: float = 0.25, min_group: int = 4) -> list[list[int]]:
    """Split indexes, sorted by length, into runs whose padding stays under ``max_waste`` of their tokens.

    On a CPU the cost is proportional to padded tokens, so one batch of lengths 5..40 padded to 40 wastes
    most of its work; a new group starts when adding the next (longer) sequence would exceed the waste
    bound, but never before ``min_group`` items (each run has a fixed overhead).
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    for i in order:
        candidate = [*current, i]
        padded = lengths[i] * len(candidate)
        waste = 1.0 - sum(lengths[j] for j in candidate) / padded
        if current and len(current) >= min_group and waste > max_waste:
            groups.append(current)
            candidate = [i]
        current = candidate
    if current:
        groups.append(current)
    return groups


def embed_ids(engine: Engine, ids: list[list[int]]) -> list[np.ndarray]:
    """One L2-normalised float32 [384] vector per id sequence; CPU engines run length groups
    (see :func:`length_groups`), GPU engines one batch. Results keep input order."""
    groups = [list(range(len(ids)))] if engine.device == "cuda" else length_groups([len(s) for s in ids])
    out: list[np.ndarray | None] = [None] * len(ids)
    for group in groups:
        emb = engine.run(_pad([ids[i] for i in group]))["embedding"]
        if emb.shape[0] != len(group):
            raise BatchShapeError(f"{engine.name}: {emb.shape[0]} embeddings for {len(group)} texts")
        for row, i in enumerate(group):
            out[i] = emb[row]
    return out  # type: ignore[return-value]


def embed_batch(engine: Engine, tokenizer: Tokenizer, texts: list[str]) -> list[np.ndarray]:
    """Batch function over texts: tokenise, then :func:`embed_ids`."""
    return embed_ids(engine, tokenize(tokenizer, texts))
