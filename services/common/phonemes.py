"""Phonemes of English text: our interface, with espeak-ng (through piper-tts) behind it.

piper-tts is GPL-3.0. Only this module imports it, and only for the espeak-ng bridge it bundles; swapping
in another espeak-ng binding means changing this file alone. The TTS stage speaks with these phonemes, the
ASR stage compares what it heard with its boosted phrases by them.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod

# espeak-ng keeps its voice and state in process-wide globals, so every call in the process must go
# through one lock, whichever Phonemizer instance makes it.
_ESPEAK_LOCK = threading.Lock()


class Phonemizer(ABC):
    """Turns one sentence of normalised text into phonemes (one string per phoneme)."""

    @abstractmethod
    def phonemize(self, text: str) -> list[str]:
        """Phonemes of ``text``, spoken as one unit; empty when nothing in it is speakable."""


class EspeakPhonemizer(Phonemizer):
    """espeak-ng phonemes, as Piper voices were trained on them."""

    def __init__(self, voice: str, *, vowel_clusters: set[tuple[str, ...]] | None = None) -> None:
        from piper.phonemize_espeak import EspeakPhonemizer as _PiperEspeak  # GPL-3.0: kept here

        with _ESPEAK_LOCK:
            self._espeak = _PiperEspeak()
        self.voice = voice
        self._vowel_clusters = vowel_clusters

    def phonemize(self, text: str) -> list[str]:
        """Phonemes of ``text``; espeak's own clause/sentence breaks inside it are joined by a space."""
        # NUL ends a C string early (and piper's bridge raises on it); callers normalise first, but the
        # phonemizer must not crash whatever it is given.
        text = text.replace("\x00", " ")
        if not text.strip():
            return []
        with _ESPEAK_LOCK:
            parts = self._espeak.phonemize(self.voice, text, vowel_clusters=self._vowel_clusters)
        phonemes: list[str] = []
        for part in parts:
            if not part:
                continue
            if phonemes and phonemes[-1] != " ":
                phonemes.append(" ")
            phonemes.extend(part)
        return phonemes
