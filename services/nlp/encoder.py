"""Sentence embeddings: ``tokenizers`` word pieces -> the MiniLM ONNX engine, padded to the batch's longest.

Tokenisation happens inside the batch function, i.e. on the engine instance's worker thread, so the event
loop never runs it. Sequences longer than ``max_seq_tokens`` word pieces (256, recorded by the build) are
truncated: the embedding then describes the first ~200 words, which the normalised-text limit of 2000
characters makes rare.
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


def collate(tokenizer: Tokenizer, texts: list[str]) -> dict[str, np.ndarray]:
    """Token ids and attention mask, right-padded with 0 to the longest sequence of the batch."""
    encodings = tokenizer.encode_batch(texts)
    width = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(texts), width), dtype=np.int64)
    mask = np.zeros((len(texts), width), dtype=np.int64)
    for row, enc in enumerate(encodings):
        ids[row, : len(enc.ids)] = enc.ids
        mask[row, : len(enc.ids)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def embed_batch(engine: Engine, tokenizer: Tokenizer, texts: list[str]) -> list[np.ndarray]:
    """Batch function for the ``DynamicBatcher``: one L2-normalised float32 [384] vector per text."""
    out = engine.run(collate(tokenizer, texts))["embedding"]
    if out.shape[0] != len(texts):
        raise BatchShapeError(f"{engine.name}: {out.shape[0]} embeddings for {len(texts)} texts")
    return list(out)
