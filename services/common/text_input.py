"""The one rule for text a client sends to be understood or spoken (NLP's ``Understand``, TTS's ``Synthesize``).

- 1..``max_chars`` characters (checked on the raw text), else INVALID_ARGUMENT naming the limit;
- control and format characters (Unicode Cc/Cf, e.g. NUL, ESC, zero-width joiners) and symbols such as
  emoji (So/Sk/Cs/Co/Cn) become a space, whitespace runs collapse to one;
- if no letter or digit remains there is nothing to understand or say: INVALID_ARGUMENT ("no words").
"""

from __future__ import annotations

import re
import unicodedata

from services.common.errors import InvalidArgumentError, shown

_DROP_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "So", "Sk"})
_SPACE_RE = re.compile(r"\s+")
# A word: letters or digits, with inner apostrophes ("don't", "Children's"). NLP tokens and ASR phrase matching.
WORD_RE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
# How the movie domain's abbreviations are said (lower-case key, without its period): TTS speaks them so, and
# the NLP's title matcher hears them so ("Dr. Strangelove" is said and heard "Doctor Strangelove").
SPOKEN_ABBREVIATIONS = {
    "dr": "Doctor", "mr": "Mister", "mrs": "Missus", "ms": "Miz", "jr": "Junior", "sr": "Senior",
    "vs": "versus", "pt": "Part", "vol": "Volume", "ep": "Episode", "mt": "Mount", "capt": "Captain",
    "prof": "Professor", "gen": "General", "lt": "Lieutenant", "sgt": "Sergeant", "col": "Colonel",
    "approx": "approximately", "feat": "featuring", "etc": "et cetera", "ch": "Chapter",
}


def clean_text(text: str, *, max_chars: int, limit_key: str = "max_text_chars") -> str:
    """The text with controls and symbols replaced by spaces; InvalidArgumentError when it breaks the rule."""
    if not text or not text.strip():
        raise InvalidArgumentError(f"text is empty: send 1..{max_chars} characters")
    if len(text) > max_chars:
        raise InvalidArgumentError(f"text has {len(text)} characters, more than the limit of {max_chars} ({limit_key})")
    cleaned = "".join(" " if unicodedata.category(c) in _DROP_CATEGORIES else c for c in text)
    cleaned = _SPACE_RE.sub(" ", cleaned).strip()
    if not any(c.isalnum() for c in cleaned):
        raise InvalidArgumentError(f"text={shown(text)} has no words once control characters and symbols are removed")
    return cleaned
