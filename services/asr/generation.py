"""Whisper on the engine layer: the encoder's batch function and the decoder as a generation engine.

* :func:`encoder_batch_fn` — log-mels [80, F] in (F frames: the utterance's encoder window), one
  :class:`EncodedUtterance` (cross-attention K/V of every decoder layer, split into heads) out per item;
  on a GPU the K/V stay device tensors.
* :class:`OnnxWhisperGenerator` — the CPU decoder: each slot keeps its self-attention cache in host
  memory; a step pads the active slots' caches to the longest, runs the ONNX decoder step once for the
  active slots of each window, and stores the new K/V. The GPU decoder is
  ``generation_torch.TorchWhisperGenerator``.
* :func:`create_generators` picks the implementation by the model's backend; :func:`transcribe` runs one
  clip through both engines synchronously (the build's golden check, benchmarks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engines.base import Engine
from engines.generation import GenerationEngine
from engines.models.whisper_spec import GreedyRule
from engines.repository import ResolvedModel, create_engines
from services.asr.decoding import DecodeResult, SlotState, rule_from_config
from services.asr.features import log_mel, window_frames

ENCODER_MODEL = "whisper-tiny-en-encoder"
DECODER_MODEL = "whisper-tiny-en-decoder"
VAD_MODEL = "silero-vad"


@dataclass(frozen=True, slots=True)
class EncodedUtterance:
    """Cross-attention K/V of one utterance: keys [L, H, D/H, S], values [L, H, S, D/H] (host or device)."""

    cross_key: Any
    cross_value: Any


def by_window(sizes: Sequence[int]) -> list[list[int]]:
    """Indices of ``sizes`` grouped by equal size (first-seen order): the rows that can share one call."""
    groups: dict[int, list[int]] = {}
    for i, size in enumerate(sizes):
        groups.setdefault(size, []).append(i)
    return list(groups.values())


def encoder_batch_fn(engine: Engine) -> Callable[[list[np.ndarray]], list[EncodedUtterance]]:
    """Batch function: log-mels [80, F] -> cross K/V per item (left on the device by a GPU engine); one
    encoder call per window in the batch."""

    def run(mels: list[np.ndarray]) -> list[EncodedUtterance]:
        results: list[EncodedUtterance | None] = [None] * len(mels)
        for group in by_window([m.shape[1] for m in mels]):
            out = engine.run({"mel": np.stack([mels[i] for i in group])}, device_outputs=("cross_key", "cross_value"))
            for row, i in enumerate(group):
                results[i] = EncodedUtterance(out["cross_key"][row], out["cross_value"][row])
        return results  # type: ignore[return-value]

    return run


class OnnxWhisperGenerator(GenerationEngine[EncodedUtterance, DecodeResult]):
    """The Whisper decoder on ONNX Runtime (CPU): host caches per slot, one decoder call per step."""

    def __init__(self, engine: Engine, rule: GreedyRule, slots: int) -> None:
        self.engine = engine
        self.rule = rule
        self.slots = slots
        past = next(s for s in engine.inputs if s.name == "past_key")
        self.n_layers, self.n_state = past.dims[1], past.dims[3]
        self._keys = np.zeros((slots, self.n_layers, rule.capacity, self.n_state), np.float32)
        self._values = np.zeros_like(self._keys)
        self._cross: dict[int, EncodedUtterance] = {}
        self._state: dict[int, SlotState] = {}
        self._next: dict[int, int] = {}
        # Per window: the stacked cross K/V (~18 MB a row for 30 s) of the sequences that stepped last, kept
        # while the same sequences step together.
        self._stacked: dict[int, tuple[tuple[EncodedUtterance, ...], dict[str, np.ndarray]]] = {}

    def prefill(self, batch: Sequence[tuple[int, EncodedUtterance]]) -> None:
        for slot, encoded in batch:
            self._cross[slot] = encoded
            self._state[slot] = SlotState(self.rule)
            self._next[slot] = self.rule.prompt[0]

    def release(self, slot: int) -> None:
        self._cross.pop(slot, None)
        self._state.pop(slot, None)
        self._next.pop(slot, None)

    def step(self, active: Sequence[int]) -> dict[int, DecodeResult]:
        finished: dict[int, DecodeResult] = {}
        for group in by_window([self._window(s) for s in active]):
            finished.update(self._step([active[i] for i in group]))
        return finished

    def _window(self, slot: int) -> int:
        return self._cross[slot].cross_value.shape[2]  # [L, H, S, D/H]

    def _step(self, active: Sequence[int]) -> dict[int, DecodeResult]:
        """One decoder call for slots of the same window."""
        positions = np.array([self._state[s].position for s in active], dtype=np.int64)
        longest = int(positions.max())
        rows = list(active)
        feeds = {
            "tokens": np.array([[self._next[s]] for s in active], dtype=np.int64),
            "positions": positions,
            # Rows pad to the longest cache; padding is masked by ``positions`` inside the graph.
            "past_key": self._keys[rows, :, :longest], "past_value": self._values[rows, :, :longest],
            **self._cross_feeds(active),
        }
        out = self.engine.run(feeds)
        finished = {}
        for row, slot in enumerate(active):
            position = int(positions[row])
            self._keys[slot, :, position] = out["new_key"][row, :, 0]
            self._values[slot, :, position] = out["new_value"][row, :, 0]
            self._next[slot] = int(out["next_token"][row])
            state = self._state[slot]
            if state.advance(int(out["token"][row]), float(out["prob"][row]), float(out["no_speech_prob"][row]),
                             float(out["log_norm"][row]), out["hidden"][row].copy()):
                finished[slot] = state.result()
        return finished

    def _cross_feeds(self, active: Sequence[int]) -> dict[str, np.ndarray]:
        """The active slots' (of one window) cross K/V stacked per layer."""
        key = tuple(self._cross[s] for s in active)  # held, so identities cannot be recycled meanwhile
        window = self._window(active[0])
        held, stacked = self._stacked.get(window, ((), {}))
        if len(key) == len(held) and all(a is b for a, b in zip(key, held, strict=True)):
            return stacked
        feeds = {}
        for layer in range(self.n_layers):
            for kind in ("key", "value"):
                arrays = [getattr(self._cross[s], f"cross_{kind}")[layer] for s in active]
                feeds[f"cross_{kind}_{layer}"] = arrays[0][None] if len(arrays) == 1 else np.stack(arrays)
        self._stacked[window] = (key, feeds)
        return feeds


def create_generators(model: ResolvedModel) -> list[GenerationEngine[EncodedUtterance, DecodeResult]]:
    """One generation engine per instance of the decoder model, on its backend."""
    rule = rule_from_config(model.config)
    slots = model.serving.batching.max_batch_size
    engines = create_engines(model)
    if model.serving.backend == "torch":
        from services.asr.generation_torch import TorchWhisperGenerator

        return [TorchWhisperGenerator(e, rule, slots) for e in engines]  # type: ignore[arg-type]
    return [OnnxWhisperGenerator(e, rule, slots) for e in engines]


def transcribe(encoder: Engine, generator: GenerationEngine[EncodedUtterance, DecodeResult],
               audio_16k: np.ndarray, windows_s: tuple[float, ...] = (30.0,)) -> DecodeResult:
    """Greedy transcription of one clip (<= 30 s, 16 kHz float32) in slot 0, unbatched, in the shortest of
    ``windows_s`` it fills at most half of (``features.window_frames``)."""
    encoded = encoder_batch_fn(encoder)([log_mel(audio_16k, window_frames(len(audio_16k), windows_s))])[0]
    generator.prefill([(0, encoded)])
    try:
        while not (finished := generator.step([0])):
            pass
    finally:
        generator.release(0)
    return finished[0]
