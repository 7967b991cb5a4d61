"""Whisper's shape and greedy-decoding constants, without PyTorch (the CPU runtime does not install it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True, kw_only=True)
class WhisperDims:
    """Shape of a Whisper model."""

    n_mels: int
    n_audio_ctx: int
    n_state: int
    n_head: int
    n_audio_layer: int
    n_text_ctx: int
    n_vocab: int
    n_text_layer: int

    @property
    def head_dim(self) -> int:
        return self.n_state // self.n_head

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class GreedyRule:
    """Token ids the greedy rule needs (from the model's tokenizer and config)."""

    sot: int
    no_timestamps: int
    eot: int
    no_speech: int
    suppress_ids: tuple[int, ...]
    suppress_ids_begin: tuple[int, ...]
    max_new_tokens: int

    @property
    def prompt(self) -> tuple[int, int]:
        return (self.sot, self.no_timestamps)

    def to_dict(self) -> dict:
        return {**asdict(self), "suppress_ids": list(self.suppress_ids),
                "suppress_ids_begin": list(self.suppress_ids_begin)}

    @classmethod
    def from_dict(cls, raw: dict) -> GreedyRule:
        return cls(**{**raw, "suppress_ids": tuple(raw["suppress_ids"]),
                      "suppress_ids_begin": tuple(raw["suppress_ids_begin"])})

    def suppressed(self, token: int, text_step: int) -> bool:
        """The rule never picks ``token`` at text step ``text_step`` (0: the first token after the prompt)."""
        return token in self.suppress_ids or (text_step == 0 and token in self.suppress_ids_begin)

    @property
    def capacity(self) -> int:
        """Positions a sequence can use: the prompt plus the longest transcript."""
        return len(self.prompt) + self.max_new_tokens


def cross_input_names(n_layers: int) -> list[str]:
    """The ONNX decoder step's per-layer cross K/V inputs, in argument order: key and value of layer 0, 1, ..."""
    return [f"cross_{kind}_{i}" for i in range(n_layers) for kind in ("key", "value")]
