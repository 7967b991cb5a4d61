"""One engine call for many sentences: pad to a batch, run, cut each item back to its own length.

Items whose scales differ cannot share a call (``scales`` is one [3] tensor per call), so a batch is
grouped by scales first. Each item is trimmed to the graph's ``output_lengths`` (the decoder's own
``y_lengths`` times the hop), so no item carries the padding of a longer neighbour.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from engines.base import Engine

PAD_ID = 0


@dataclass(frozen=True)
class SentenceItem:
    """One sentence for the engine: phoneme ids and its (noise, length, noise_w) scales."""

    ids: Sequence[int]
    scales: tuple[float, float, float]


def make_batch_fn(engine: Engine) -> Callable[[list[SentenceItem]], list[np.ndarray]]:
    """The batcher's ``batch_fn`` for one engine instance: float32 audio per item, trimmed."""

    def run(items: list[SentenceItem]) -> list[np.ndarray]:
        results: list[np.ndarray | None] = [None] * len(items)
        groups: dict[tuple[float, float, float], list[int]] = {}
        for index, item in enumerate(items):
            groups.setdefault(item.scales, []).append(index)
        for scales, indices in groups.items():
            audio = run_group(engine, [items[i].ids for i in indices], scales)
            for i, a in zip(indices, audio, strict=True):
                results[i] = a
        return results  # type: ignore[return-value]

    return run


def run_group(engine: Engine, ids: Sequence[Sequence[int]], scales: tuple[float, float, float]) -> list[np.ndarray]:
    """Run sentences that share scales as one padded batch; returns each item's own samples."""
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    batch = np.full((len(ids), int(lengths.max())), PAD_ID, dtype=np.int64)
    for row, x in enumerate(ids):
        batch[row, : len(x)] = x
    out = engine.run({"input": batch, "input_lengths": lengths, "scales": np.array(scales, dtype=np.float32)})
    audio, out_lengths = out["output"], out["output_lengths"]
    return [audio[row, 0, 0, : int(out_lengths[row])].copy() for row in range(len(ids))]
