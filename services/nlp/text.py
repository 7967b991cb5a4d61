"""Input text policy: validation, normalisation and word tokens with character spans.

Behaviour (documented in docs/bench/nlp.md):
- ``text`` follows the rule shared with TTS (``services/common/text_input.py``): 1..``max_text_chars``
  characters, controls and symbols (emoji) become spaces, and with no letter or digit left it is
  INVALID_ARGUMENT ("no words"). The result is ``normalized_text``, which is what the model and the entity
  rules see; entity offsets index into it.
- ``session_id`` is optional; when set it must match ``[A-Za-z0-9._:-]{1,128}`` -> else INVALID_ARGUMENT.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from services.common.text_input import WORD_RE, clean_text


@dataclass(frozen=True, slots=True)
class Token:
    """A word of the normalised text: its matching form and its character span."""

    norm: str
    start: int
    end: int


def normalize_text(text: str, *, max_text_chars: int) -> str:
    """Validate and clean one utterance (see the module docstring); returns the normalised text."""
    return clean_text(text, max_chars=max_text_chars)


def fold(word: str) -> str:
    """Matching form of a word: lower case, accents stripped, apostrophes dropped ("Children's" -> "childrens")."""
    decomposed = unicodedata.normalize("NFKD", word.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c) and c not in "'’")


_WORD_OR_AND = re.compile(f"{WORD_RE.pattern}|&")


def words(text: str) -> list[Token]:
    """Word tokens of ``text`` (letters/digits, inner apostrophes kept in the span; "&" read as "and") with
    their spans."""
    return [Token("and" if m.group() == "&" else fold(m.group()), m.start(), m.end())
            for m in _WORD_OR_AND.finditer(text)]
