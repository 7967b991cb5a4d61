"""Batch functions for the voice's engines: pad to a batch, run, cut each item back to its own length.

- Encoder (text -> latents): items whose scales differ cannot share a call (``scales`` is one [3]
  tensor per call), so a batch is grouped by scales first. Each item's latents are cut to its own
  frame count, read from the graph's ``output_lengths`` (the decoder mask's ``y_lengths`` times the hop),
  so no item carries the padding of a longer neighbour.
- Decoder (latents -> audio): windows of latents are zero-padded to the longest and each output is cut
  to ``frames * hop`` samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engines.base import Engine

PAD_ID = 0


@dataclass(frozen=True)
class SentenceItem:
    """One sentence for the encoder: phoneme ids and its (noise, length, noise_w) scales."""

    ids: Sequence[int]
    scales: tuple[float, float, float]


def voice_encoder(engine: Engine) -> Any:
    """What runs the voice's encoder: on the PyTorch backend with shape buckets, the two-phase runner (CUDA
    graphs on a GPU); else the engine itself."""
    if engine.serving.backend == "torch" and engine.serving.batch_buckets and engine.serving.length_buckets:
        from services.tts.encoder_torch import TorchVoiceEncoder

        return TorchVoiceEncoder(engine)  # type: ignore[arg-type]
    return engine


def make_encoder_fn(engine: Engine, hop_length: int) -> Callable[[list[SentenceItem]], list[np.ndarray]]:
    """The encoder batcher's ``batch_fn``: latents [192, frames] per item, trimmed."""

    def run(items: list[SentenceItem]) -> list[np.ndarray]:
        results: list[np.ndarray | None] = [None] * len(items)
        groups: dict[tuple[float, float, float], list[int]] = {}
        for index, item in enumerate(items):
            groups.setdefault(item.scales, []).append(index)
        for scales, indices in groups.items():
            latents = encode_group(engine, [items[i].ids for i in indices], scales, hop_length)
            for i, z in zip(indices, latents, strict=True):
                results[i] = z
        return results  # type: ignore[return-value]

    return run


def make_decoder_fn(engine: Engine, hop_length: int) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    """The decoder batcher's ``batch_fn``: float32 audio per latent window, trimmed."""

    def run(items: list[np.ndarray]) -> list[np.ndarray]:
        return decode_group(engine, items, hop_length)

    return run


def _pad_ids(ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    batch = np.full((len(ids), int(lengths.max())), PAD_ID, dtype=np.int64)
    for row, x in enumerate(ids):
        batch[row, : len(x)] = x
    return batch, lengths


def encode_group(engine: Engine, ids: Sequence[Sequence[int]], scales: tuple[float, float, float],
                 hop_length: int) -> list[Any]:
    """Sentences that share scales as one padded encoder batch; each item's own latents [192, frames]
    (a host array, or a device tensor on a GPU engine: latents never leave the device between the two)."""
    batch, lengths = _pad_ids(ids)
    out = engine.run({"input": batch, "input_lengths": lengths, "scales": np.array(scales, dtype=np.float32)},
                     device_outputs=("z",))
    z, samples = out["z"], out["output_lengths"]
    return [_own(z[row, :, : int(samples[row]) // hop_length]) for row in range(len(ids))]


def decode_group(engine: Engine, latents: Sequence[Any], hop_length: int) -> list[np.ndarray]:
    """Latent windows [192, n] as one zero-padded decoder batch; each item's own audio (n * hop samples)."""
    frames = [int(z.shape[-1]) for z in latents]
    audio = engine.run({"z": _stack_padded(latents, max(frames))})["output"]
    return [audio[row, 0, 0, : n * hop_length].copy() for row, n in enumerate(frames)]


def _own(view: Any) -> Any:
    """A copy that does not keep the whole batch alive (numpy or torch)."""
    return view.clone() if hasattr(view, "clone") else view.copy()


def _stack_padded(latents: Sequence[Any], frames: int) -> Any:
    """[B, C, frames], each item zero-padded on the right (numpy, or torch on the items' device)."""
    first = latents[0]
    if isinstance(first, np.ndarray):
        batch = np.zeros((len(latents), first.shape[0], frames), dtype=np.float32)
    else:
        batch = first.new_zeros((len(latents), first.shape[0], frames))
    for row, z in enumerate(latents):
        batch[row, :, : z.shape[-1]] = z
    return batch


def run_group(engine: Engine, ids: Sequence[Sequence[int]], scales: tuple[float, float, float]) -> list[np.ndarray]:
    """The whole (unsplit) voice graph on sentences that share scales; each item's own samples."""
    batch, lengths = _pad_ids(ids)
    out = engine.run({"input": batch, "input_lengths": lengths, "scales": np.array(scales, dtype=np.float32)})
    audio, out_lengths = out["output"], out["output_lengths"]
    return [audio[row, 0, 0, : int(out_lengths[row])].copy() for row in range(len(ids))]
