"""Greedy Whisper decoding with a self-attention KV cache, one hypothesis per utterance.

A :class:`Hypothesis` is a small state machine: ``step_input()`` says what the decoder must run
next, ``advance()`` takes the decoder's output. The driver (a synchronous loop in the build's golden
check, the dynamic batcher in the service) decides how steps of many hypotheses are batched.

The rules follow CTranslate2's Whisper ``generate`` as faster-whisper calls it for an English-only
model with ``without_timestamps=True``, ``beam_size=1``, ``temperature=0``: prompt
``<|startoftranscript|><|notimestamps|>``; the model's ``suppress_ids`` masked at every step and
``suppress_ids_begin`` at the first generated token; stop at ``<|endoftext|>`` or 224 new tokens;
no timestamp rules. The no-speech probability is read at the ``<|startoftranscript|>`` step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, kw_only=True)
class DecodingSpec:
    """Token ids and limits of one Whisper model (stored in the decoder's config metadata)."""

    sot: int
    eot: int
    no_timestamps: int
    no_speech: int
    vocab_size: int
    n_layers: int
    n_state: int
    suppress_ids: tuple[int, ...]
    suppress_ids_begin: tuple[int, ...]
    max_new_tokens: int = 224

    @property
    def prompt(self) -> tuple[int, ...]:
        return (self.sot, self.no_timestamps)

    def masks(self) -> tuple[np.ndarray, np.ndarray]:
        """Boolean vocab masks: tokens suppressed at every step, and additionally at the first step."""
        always = np.zeros(self.vocab_size, dtype=bool)
        always[list(self.suppress_ids)] = True
        first = always.copy()
        first[list(self.suppress_ids_begin)] = True
        return always, first


@dataclass(frozen=True, slots=True)
class StepInput:
    """What one decoder step needs for one hypothesis."""

    token: int
    position: int
    past_key: np.ndarray  # [L, position, D]
    past_value: np.ndarray
    cross_key: np.ndarray  # [L, H, D/H, S] (transposed per head)
    cross_value: np.ndarray  # [L, H, S, D/H]


@dataclass(frozen=True, slots=True)
class StepOutput:
    """The decoder's answer for one hypothesis."""

    logits: np.ndarray  # [V]
    new_key: np.ndarray  # [L, 1, D]
    new_value: np.ndarray


@dataclass(frozen=True, kw_only=True)
class DecodeResult:
    """A finished hypothesis."""

    tokens: tuple[int, ...]
    token_probs: tuple[float, ...]
    no_speech_prob: float
    eot_prob: float = 1.0

    @property
    def confidence(self) -> float:
        """Mean probability of the emitted text tokens (1.0 when there are none)."""
        return float(np.mean(self.token_probs)) if self.token_probs else 1.0

    @property
    def avg_logprob(self) -> float:
        """Mean log-probability of the tokens including the end token, as faster-whisper reports it."""
        return float(np.mean(np.log(np.maximum(self.token_probs + (self.eot_prob,), 1e-30))))


class Hypothesis:
    """Greedy decoding state of one utterance (see the module docstring)."""

    def __init__(self, spec: DecodingSpec, cross_key: np.ndarray, cross_value: np.ndarray,
                 masks: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.spec = spec
        self.cross_key = cross_key
        self.cross_value = cross_value
        self._mask_always, self._mask_first = masks or spec.masks()
        capacity = len(spec.prompt) + spec.max_new_tokens
        self._keys = np.zeros((spec.n_layers, capacity, spec.n_state), dtype=np.float32)
        self._values = np.zeros_like(self._keys)
        self._fed: list[int] = []
        self.tokens: list[int] = []
        self.token_probs: list[float] = []
        self.no_speech_prob = 0.0
        self._eot_prob = 1.0
        self.done = False

    @property
    def position(self) -> int:
        return len(self._fed)

    def step_input(self) -> StepInput:
        """The next token to feed and the cache so far."""
        if self.done:
            raise RuntimeError("hypothesis is finished")
        pos = self.position
        prompt = self.spec.prompt
        token = prompt[pos] if pos < len(prompt) else self.tokens[-1]
        return StepInput(token, pos, self._keys[:, :pos], self._values[:, :pos], self.cross_key, self.cross_value)

    def advance(self, out: StepOutput) -> None:
        """Store the step's K/V and, once the prompt is consumed, pick the next token."""
        pos = self.position
        prompt = self.spec.prompt
        self._keys[:, pos] = out.new_key[:, 0]
        self._values[:, pos] = out.new_value[:, 0]
        self._fed.append(prompt[pos] if pos < len(prompt) else self.tokens[-1])
        if pos == 0:
            self.no_speech_prob = float(_softmax(out.logits)[self.spec.no_speech])
        if self.position < len(prompt):
            return
        logits = out.logits.astype(np.float32, copy=True)
        logits[self._mask_first if not self.tokens else self._mask_always] = -np.inf
        token = int(np.argmax(logits))
        prob = float(_softmax(logits)[token])
        if token == self.spec.eot:
            self._eot_prob = prob
            self.done = True
            return
        self.tokens.append(token)
        self.token_probs.append(prob)
        if len(self.tokens) >= self.spec.max_new_tokens:
            self.done = True

    def result(self) -> DecodeResult:
        """The finished hypothesis."""
        return DecodeResult(tokens=tuple(self.tokens), token_probs=tuple(self.token_probs),
                            no_speech_prob=self.no_speech_prob, eot_prob=self._eot_prob)


def _softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = np.exp(x - np.max(x))
    return x / x.sum()


def cross_input_names(n_layers: int) -> list[str]:
    """The decoder graph's per-layer cross K/V inputs, in argument order: key and value of layer 0, 1, ..."""
    return [f"cross_{kind}_{i}" for i in range(n_layers) for kind in ("key", "value")]


def stack_cross(items: list[StepInput]) -> dict[str, np.ndarray]:
    """The per-layer cross K/V feeds of these hypotheses (names as :func:`cross_input_names`): views for
    one (no copy of its ~18 MB), stacked copies for several."""
    feeds = {}
    for layer in range(items[0].cross_key.shape[0]):
        for kind in ("key", "value"):
            arrays = [getattr(it, f"cross_{kind}")[layer] for it in items]
            feeds[f"cross_{kind}_{layer}"] = arrays[0][None] if len(arrays) == 1 else np.stack(arrays)
    return feeds


def collate_steps(items: list[StepInput], cross: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Stack steps of several hypotheses into one decoder batch; caches are padded to the longest.

    ``cross`` is :func:`stack_cross` of exactly these items, when the caller kept it from a previous step.
    """
    b = len(items)
    first = items[0]
    n_layers, _, n_state = first.past_key.shape
    longest = max(it.position for it in items)
    past_key = np.zeros((b, n_layers, longest, n_state), dtype=np.float32)
    past_value = np.zeros_like(past_key)
    for i, it in enumerate(items):
        past_key[i, :, : it.position] = it.past_key
        past_value[i, :, : it.position] = it.past_value
    return {
        "tokens": np.array([[it.token] for it in items], dtype=np.int64),
        "positions": np.array([it.position for it in items], dtype=np.int64),
        "past_key": past_key, "past_value": past_value,
        **(cross if cross is not None else stack_cross(items)),
    }


def split_steps(outputs: dict[str, np.ndarray]) -> list[StepOutput]:
    """One :class:`StepOutput` per batch row."""
    logits, keys, values = outputs["logits"], outputs["new_key"], outputs["new_value"]
    return [StepOutput(logits[i], keys[i], values[i]) for i in range(logits.shape[0])]
