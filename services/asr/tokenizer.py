"""Whisper's byte-level BPE tokenizer, from the model's ``tokenizer.json`` via ``tokenizers``."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from engines.errors import ModelConfigError


class WhisperTokenizer:
    """Text <-> token ids, and the special ids decoding needs."""

    def __init__(self, path: Path) -> None:
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on bad files
            raise ModelConfigError(f"cannot read tokenizer {path}: {e}") from e
        self.eot = self._require("<|endoftext|>")
        self.sot = self._require("<|startoftranscript|>")
        self.no_timestamps = self._require("<|notimestamps|>")
        # English-only models call the no-speech token <|nocaptions|>; newer ones <|nospeech|>.
        no_speech = self._tok.token_to_id("<|nospeech|>")
        self.no_speech = no_speech if no_speech is not None else self._require("<|nocaptions|>")

    def _require(self, token: str) -> int:
        found = self._tok.token_to_id(token)
        if found is None:
            raise ModelConfigError(f"tokenizer has no {token} token")
        return found

    def decode(self, tokens: list[int] | tuple[int, ...]) -> str:
        """Text of the tokens, special and timestamp tokens dropped (as faster-whisper does)."""
        return self.raw_text(tokens).strip()

    def raw_text(self, tokens: list[int] | tuple[int, ...]) -> str:
        """:meth:`decode` with the leading space kept: ``encode(raw_text(t)) == t`` for canonical tokens."""
        return self._tok.decode([t for t in tokens if t < self.eot])

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without any special tokens."""
        return self._tok.encode(text, add_special_tokens=False).ids
