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
from services.asr.decoding import DecodeResult, DecodingSpec, Hypothesis, StepInput, StepOutput, collate_steps, split_steps
from services.asr.features import log_mel

ENCODER_MODEL = "whisper-tiny-en-encoder"
DECODER_MODEL = "whisper-tiny-en-decoder"
VAD_MODEL = "silero-vad"


@dataclass(frozen=True, slots=True)
class EncoderOutput:
    """Cross-attention K/V of one utterance, [L, S, D] each."""

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


def decoder_batch_fn(engine: Engine) -> Callable[[list[StepInput]], list[StepOutput]]:
    """Batch function: one decoder step for each hypothesis, rows at any position."""

    def run(items: list[StepInput]) -> list[StepOutput]:
        return split_steps(engine.run(collate_steps(items)))

    return run


def transcribe(encoder: Engine, decoder: Engine, spec: DecodingSpec, audio_16k: np.ndarray) -> DecodeResult:
    """Greedy transcription of one clip (<= 30 s, 16 kHz float32), unbatched."""
    enc = encoder_batch_fn(encoder)([log_mel(audio_16k)])[0]
    step = decoder_batch_fn(decoder)
    hyp = Hypothesis(spec, enc.cross_key, enc.cross_value)
    while not hyp.done:
        hyp.advance(step([hyp.step_input()])[0])
    return hyp.result()
