"""Silero VAD on engines: per-stream recurrent state, and a batch function that runs many streams' frames.

Silero (v5+, ONNX) takes 512 new samples at 16 kHz preceded by the previous 64 samples of context,
and a recurrent ``state`` [2, B, 128] (batch on axis 1). A :class:`VadJob` carries one stream's
consecutive frames; the batch function advances all jobs of a batch one frame at a time, so frames of
different streams share each engine call while each stream's frames stay in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engines.base import Engine
from services.asr.endpointing import FRAME_SAMPLES

CONTEXT_SAMPLES = 64
_SR = np.array(16_000, dtype=np.int64)


@dataclass(slots=True)
class VadState:
    """One stream's recurrent state and trailing context."""

    state: np.ndarray
    context: np.ndarray

    @classmethod
    def initial(cls) -> VadState:
        return cls(np.zeros((2, 1, 128), np.float32), np.zeros(CONTEXT_SAMPLES, np.float32))


@dataclass(frozen=True, slots=True)
class VadJob:
    """Consecutive 512-sample frames [n, 512] of one stream, and its state before them."""

    frames: np.ndarray
    state: VadState


@dataclass(frozen=True, slots=True)
class VadResult:
    probs: np.ndarray  # [n]
    state: VadState


def vad_batch_fn(engine: Engine) -> Callable[[list[VadJob]], list[VadResult]]:
    """Batch function over jobs of possibly different lengths."""

    def run(jobs: list[VadJob]) -> list[VadResult]:
        states = [job.state.state for job in jobs]
        contexts = [job.state.context for job in jobs]
        probs = [np.zeros(len(job.frames), np.float32) for job in jobs]
        for step in range(max(len(job.frames) for job in jobs)):
            rows = [i for i, job in enumerate(jobs) if step < len(job.frames)]
            window = np.stack([np.concatenate([contexts[i], jobs[i].frames[step]]) for i in rows])
            state = np.concatenate([states[i] for i in rows], axis=1)
            out = engine.run({"input": window, "state": state, "sr": _SR})
            for k, i in enumerate(rows):
                probs[i][step] = out["output"][k, 0]
                states[i] = out["stateN"][:, k:k + 1]
                contexts[i] = window[k, -CONTEXT_SAMPLES:]
        return [VadResult(p, VadState(np.ascontiguousarray(s), c.copy()))
                for p, s, c in zip(probs, states, contexts, strict=True)]

    return run


def frames_of(samples: np.ndarray) -> np.ndarray:
    """Whole 512-sample frames of ``samples`` as [n, 512] (the remainder is the caller's to keep)."""
    n = len(samples) // FRAME_SAMPLES
    return samples[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES)
