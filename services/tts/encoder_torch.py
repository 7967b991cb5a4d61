"""The voice's encoder on the PyTorch backend in two CUDA-graph phases (the GPU path for first audio).

The encoder's output length depends on the durations it predicts, so it cannot be one static graph. It is
two: phase 1 (text encoder and duration predictor) per (batch, phonemes) bucket, then one small copy to the
host of the frame counts, then phase 2 (alignment, prior sampling, flow) per (batch, phonemes, frames)
bucket, reading phase 1's outputs in place. Each phase is ~hundreds of small kernels that eager PyTorch
launches one by one from Python; a graph replay launches them at once. Padded rows and phonemes are masked
by the model (a zero-length row gets no frames), frames are padded to a power of two. Batches past the
largest bucket run eagerly through the engine.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from engines.config import bucket_for
from engines.torch import TorchEngine

MIN_FRAMES = 64


def frame_bucket(frames: int) -> int:
    """The next power of two holding ``frames`` (at least ``MIN_FRAMES``)."""
    return max(MIN_FRAMES, 1 << max(0, frames - 1).bit_length())


class TorchVoiceEncoder:
    """Runs like an engine (``run(inputs, device_outputs)``): z stays on the device, lengths come back.

    One runner per engine instance: the graphs it captures (in the engine's graph cache) read this runner's
    static inputs, so warm-up and serving must go through the same runner.
    """

    def __init__(self, engine: TorchEngine) -> None:
        import torch

        self._torch = torch
        self.engine = engine
        self.module = engine.module
        self.name = engine.name
        self.hop = self.module.hop_length
        self.batch_buckets = engine.serving.batch_buckets
        self.id_buckets = engine.serving.length_buckets
        self._static: dict[tuple[int, int], list[Any]] = {}

    def _inputs(self, batch: int, ids: int) -> list[Any]:
        if (batch, ids) not in self._static:
            torch, dev = self._torch, self.engine.torch_device
            self._static[(batch, ids)] = [torch.zeros((batch, ids), dtype=torch.int64, device=dev),
                                          torch.zeros(batch, dtype=torch.int64, device=dev),
                                          torch.zeros(3, dtype=torch.float32, device=dev)]
        return self._static[(batch, ids)]

    def _phase(self, key: tuple, fn) -> tuple[Any, ...]:
        """Replay the graph of ``key`` (captured on first use); without graphs (a CPU), just compute."""
        graphs = self.engine.graphs
        if graphs is None:
            return tuple(fn())
        return graphs.replay(key) if key in graphs else graphs.capture(key, fn)

    def _durations(self, batch: int, ids: int) -> tuple[Any, ...]:
        static = self._inputs(batch, ids)
        return self._phase(("durations", batch, ids), lambda: self.module.durations(*static))

    def _latents(self, batch: int, ids: int, frames: int, first: tuple[Any, ...]) -> Any:
        """Phase 2 on phase 1's outputs ``first`` (with graphs: the static outputs of its graph)."""
        scales = self._inputs(batch, ids)[2]
        return self._phase(("latents", batch, ids, frames), lambda: (self.module.latents(*first, scales, frames),))[0]

    def close(self) -> None:
        self.engine.close()

    def warmup(self) -> None:
        """Capture phase 1 per bucket and phase 2 for the frame counts speech of that many phonemes has
        (a half to eight frames a phoneme id), largest first so smaller graphs reuse the memory."""
        if self.engine.graphs is None:
            return
        with self._torch.inference_mode(), self.engine.stream_context():
            for batch in sorted(self.batch_buckets, reverse=True):
                for ids in sorted(self.id_buckets, reverse=True):
                    first = self._durations(batch, ids)
                    frames = frame_bucket(8 * ids)
                    while frames >= max(MIN_FRAMES, ids // 2):
                        self._latents(batch, ids, frames, first)
                        frames //= 2
        self.engine.synchronize()

    def run(self, inputs: Mapping[str, Any], *, device_outputs: Collection[str] = ()) -> dict[str, Any]:
        ids, lengths, scales = (np.asarray(inputs[k]) for k in ("input", "input_lengths", "scales"))
        rows, width = ids.shape
        if not self.batch_buckets or rows > self.batch_buckets[-1] or width > self.id_buckets[-1]:
            return self.engine.run(inputs, device_outputs=device_outputs)
        torch = self._torch
        batch, padded = bucket_for(rows, self.batch_buckets), bucket_for(width, self.id_buckets)
        with torch.inference_mode(), self.engine.stream_context():
            static = self._inputs(batch, padded)
            for target, value in zip(static, (ids, lengths, scales), strict=True):
                target.zero_()
                target[tuple(slice(0, n) for n in value.shape)].copy_(torch.from_numpy(np.ascontiguousarray(value)))
            first = self._durations(batch, padded)
            w_ceil = first[3]
            samples = self.module.samples(w_ceil[:rows], self.hop).cpu().numpy()  # the one sync between phases
            frames = int(samples.max()) // self.hop
            z = self._latents(batch, padded, frame_bucket(frames), first)[:rows, :, :frames].clone()
            durations = w_ceil[:rows, :, :width].float().cpu().numpy()
        self.engine.synchronize()
        return {"z": z, "durations": durations, "output_lengths": samples}
