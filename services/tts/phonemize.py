"""Phonemes for the voice: phoneme ids from the voice's map; the espeak-ng phonemizer itself lives in
``services.common.phonemes`` (shared with the ASR stage's phrase boosting)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.common.phonemes import EspeakPhonemizer, Phonemizer

BOS, EOS, PAD = "^", "$", "_"

__all__ = ["BOS", "EOS", "PAD", "EspeakPhonemizer", "PhonemeIdMap", "PhonemeIds", "Phonemizer"]


@dataclass(frozen=True)
class PhonemeIds:
    """Phoneme ids for the model, and the phonemes the voice has no id for (skipped)."""

    ids: list[int]
    skipped: list[str]


class PhonemeIdMap:
    """The voice's ``phoneme_id_map``: ``^``, each phoneme followed by ``_``, then ``$``."""

    def __init__(self, id_map: Mapping[str, Sequence[int]]) -> None:
        for symbol in (BOS, EOS, PAD):
            if symbol not in id_map:
                raise ValueError(f"phoneme_id_map has no {symbol!r}")
        self._map = {k: list(v) for k, v in id_map.items()}

    def to_ids(self, phonemes: Sequence[str]) -> PhonemeIds:
        """Ids for ``phonemes``; phonemes missing from the map are skipped and reported."""
        pad = self._map[PAD]
        ids = [*self._map[BOS], *pad]
        skipped: list[str] = []
        for phoneme in phonemes:
            found = self._map.get(phoneme)
            if found is None:
                skipped.append(phoneme)
                continue
            ids.extend(found)
            ids.extend(pad)
        ids.extend(self._map[EOS])
        return PhonemeIds(ids=ids, skipped=skipped)

    def speakable(self, phonemes: Sequence[str]) -> bool:
        """Whether any phoneme produces sound (not only spaces and punctuation)."""
        silent = {" ", ".", ",", ";", ":", "!", "?", "-", "'", '"', "(", ")"}
        return any(p in self._map and p not in silent for p in phonemes)
