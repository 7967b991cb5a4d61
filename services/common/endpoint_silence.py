"""The one range for the trailing silence that ends an utterance: ASR's ``silence_ms`` setting, a request's
``endpointing.silence_ms``, ``RecognizerControl.SET_UTTERANCE_SILENCE`` and the orchestrator's adaptive
endpoint all take 50..10000 ms. ASR and the orchestrator both ask it."""

from __future__ import annotations

MIN_SILENCE_MS = 50
MAX_SILENCE_MS = 10_000
SILENCE_RANGE = f"{MIN_SILENCE_MS}..{MAX_SILENCE_MS}"  # as error messages name it


def silence_in_range(silence_ms: int) -> bool:
    """Whether ``silence_ms`` is a trailing silence an utterance may end on."""
    return MIN_SILENCE_MS <= silence_ms <= MAX_SILENCE_MS
