"""Whisper on engines: batch functions for the encoder and decoder, and a synchronous transcriber.

The batch functions are what the service's dynamic batchers call (one per engine instance); the
synchronous :func:`transcribe` is the same pipeline without batching, used by the build's golden
check and the benchmark's component timings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engines.base import Engine
from engines.config import ModelConfig
from engines.errors import ModelConfigError
from services.asr.decoding import (
    DecodeResult,
    DecodingSpec,
    Hypothesis,
    StepInput,
    StepOutput,
    collate_steps,
    split_steps,
    stack_cross,
)
from services.asr.features import log_mel

ENCODER_MODEL = "whisper-tiny-en-encoder"
DECODER_MODEL = "whisper-tiny-en-decoder"
VAD_MODEL = "silero-vad"


@dataclass(frozen=True, slots=True)
class EncoderOutput:
    """Cross-attention K/V of one utterance, split into heads: keys [L, H, D/H, S], values [L, H, S, D/H]."""

    cross_key: np.ndarray
    cross_value: np.ndarray


def spec_from_config(config: ModelConfig) -> DecodingSpec:
    """The decoding spec the build stored in the decoder's config metadata."""
    try:
        raw = config.metadata["decoding"]
        return DecodingSpec(**{**raw, "suppress_ids": tuple(raw["suppress_ids"]),
                               "suppress_ids_begin": tuple(raw["suppress_ids_begin"])})
    except (KeyError, TypeError) as e:
        raise ModelConfigError(f"{config.name}: config metadata lacks a valid 'decoding' block ({e}); rebuild") from e


def encoder_batch_fn(engine: Engine) -> Callable[[list[np.ndarray]], list[EncoderOutput]]:
    """Batch function: mels [80, 3000] -> cross K/V per item."""

    def run(mels: list[np.ndarray]) -> list[EncoderOutput]:
        out = engine.run({"mel": np.stack(mels).astype(np.float32, copy=False)})
        keys, values = out["cross_key"], out["cross_value"]
        return [EncoderOutput(keys[i], values[i]) for i in range(len(mels))]

    return run


def encoder_audio_batch_fn(engine: Engine) -> Callable[[list[np.ndarray]], list[EncoderOutput]]:
    """Batch function: 16 kHz clips -> log-mel (on the engine's thread) -> cross K/V per item."""
    encode = encoder_batch_fn(engine)

    def run(clips: list[np.ndarray]) -> list[EncoderOutput]:
        return encode([log_mel(c) for c in clips])

    return run


def decoder_batch_fn(engine: Engine) -> Callable[[list[StepInput]], list[StepOutput]]:
    """Batch function: one decoder step for each hypothesis, rows at any position.

    Streams decoding together send the same set of hypotheses step after step; the stacked cross K/V
    (~18 MB per row) is kept from the previous batch and reused while the set is unchanged. The
    originals are held too, so their ids cannot be recycled while they are the cache key.
    """
    cached: dict[str, object] = {"sources": (), "stacked": None}

    def run(items: list[StepInput]) -> list[StepOutput]:
        cross = None
        if len(items) > 1:
            sources = tuple(it.cross_key for it in items)
            previous = cached["sources"]
            if len(previous) != len(sources) or any(a is not b for a, b in zip(previous, sources, strict=False)):
                cached["stacked"], cached["sources"] = stack_cross(items), sources
            cross = cached["stacked"]
        else:
            cached["sources"], cached["stacked"] = (), None
        return split_steps(engine.run(collate_steps(items, cross=cross)))

    return run


def transcribe(encoder: Engine, decoder: Engine, spec: DecodingSpec, audio_16k: np.ndarray) -> DecodeResult:
    """Greedy transcription of one clip (<= 30 s, 16 kHz float32), unbatched."""
    enc = encoder_batch_fn(encoder)([log_mel(audio_16k)])[0]
    step = decoder_batch_fn(decoder)
    hyp = Hypothesis(spec, enc.cross_key, enc.cross_value)
    while not hyp.done:
        hyp.advance(step([hyp.step_input()])[0])
    return hyp.result()
