"""Greedy Whisper decoding, host side: what each step's pick means for one sequence.

The greedy rule itself (masks, argmax, probabilities, the prompt) is computed inside the decoder step
(:meth:`engines.models.whisper.WhisperDecoder.pick`), on whichever device runs it. A :class:`SlotState`
turns the per-step picks of one sequence into its transcript tokens: the no-speech probability is read
at the ``<|startoftranscript|>`` step, tokens are collected once the prompt is consumed, and decoding
stops at ``<|endoftext|>`` or after ``max_new_tokens``. Each text step's ``hidden`` state and ``log_norm``
are kept too (:meth:`DecodeResult.logprob_at`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from engines.config import ModelConfig
from engines.errors import ModelConfigError
from engines.models.whisper_spec import GreedyRule


def rule_from_config(config: ModelConfig) -> GreedyRule:
    """The greedy rule the build stored in the decoder's config metadata."""
    try:
        return GreedyRule.from_dict(config.metadata["decoding"])
    except (KeyError, TypeError) as e:
        raise ModelConfigError(f"{config.name}: config metadata lacks a valid 'decoding' block ({e}); rebuild") from e


@dataclass(frozen=True, kw_only=True)
class DecodeResult:
    """A finished sequence. ``hidden`` [S, D] and ``log_norm`` [S] are the decoder's at each text step (step i
    picked the token at text position i; the last step picked the end token); empty if the decoder gave none."""

    tokens: tuple[int, ...]
    token_probs: tuple[float, ...]
    no_speech_prob: float
    eot_prob: float = 1.0
    hidden: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32), compare=False, repr=False)
    log_norm: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), compare=False, repr=False)

    @property
    def confidence(self) -> float:
        """Mean probability of the emitted text tokens (1.0 when there are none)."""
        return float(np.mean(self.token_probs)) if self.token_probs else 1.0

    @property
    def logprobs(self) -> np.ndarray:
        """Log-probability of each emitted token, then of the end token."""
        return np.log(np.maximum(self.token_probs + (self.eot_prob,), 1e-30))

    def logprob_at(self, step: int, token: int, embedding: np.ndarray, rule: GreedyRule) -> float | None:
        """The log-probability the decoder gave ``token`` at text step ``step`` under the greedy ``rule`` (-inf
        for a token it excludes there), from the step's hidden state and the output projection (``embedding``
        [V, D], the decoder's tied token embedding); None where the step's state is missing."""
        if not 0 <= step < len(self.log_norm):
            return None
        if rule.suppressed(token, step):
            return -math.inf
        return float(self.hidden[step] @ embedding[token].astype(np.float32)) - float(self.log_norm[step])

    @property
    def avg_logprob(self) -> float:
        """Mean log-probability of the tokens including the end token, as faster-whisper reports it."""
        return float(np.mean(self.logprobs))


class SlotState:
    """One sequence's picks so far; ``position`` is the position of the token fed at the next step."""

    __slots__ = ("rule", "position", "tokens", "probs", "no_speech_prob", "eot_prob", "done", "hidden", "log_norm")

    def __init__(self, rule: GreedyRule) -> None:
        self.rule = rule
        self.position = 0
        self.tokens: list[int] = []
        self.probs: list[float] = []
        self.no_speech_prob = 0.0
        self.eot_prob = 1.0
        self.done = False
        self.hidden: list[np.ndarray] = []
        self.log_norm: list[float] = []

    def advance(self, token: int, prob: float, no_speech_prob: float, log_norm: float | None = None,
                hidden: np.ndarray | None = None) -> bool:
        """Record one step's pick (after feeding the token at ``position``) and, if given, the step's
        ``log_norm`` and ``hidden`` state; True once the sequence is done."""
        position = self.position
        self.position += 1
        if position == 0:
            self.no_speech_prob = float(no_speech_prob)
        if position < len(self.rule.prompt) - 1:
            return False  # the next input is still the prompt's
        if hidden is not None and log_norm is not None:
            self.hidden.append(hidden)
            self.log_norm.append(float(log_norm))
        if token == self.rule.eot:
            self.eot_prob = float(prob)
            self.done = True
        else:
            self.tokens.append(int(token))
            self.probs.append(float(prob))
            self.done = len(self.tokens) >= self.rule.max_new_tokens
        return self.done

    def result(self) -> DecodeResult:
        """The finished sequence."""
        steps = {"hidden": np.stack(self.hidden), "log_norm": np.array(self.log_norm, np.float32)} if self.hidden else {}
        return DecodeResult(tokens=tuple(self.tokens), token_probs=tuple(self.probs),
                            no_speech_prob=self.no_speech_prob, eot_prob=self.eot_prob, **steps)
