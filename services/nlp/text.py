"""Input text policy: validation, normalisation and word tokens with character spans.

Behaviour (documented in docs/bench/nlp.md):
- ``text`` must have 1..``max_text_chars`` characters (checked on the raw text) -> else INVALID_ARGUMENT.
- Control and format characters (Unicode Cc/Cf, e.g. NUL, ESC, zero-width joiners) and symbols such as
  emoji (So/Sk/Cs/Co/Cn) are replaced by a space; whitespace runs collapse to one space. The result is
  ``normalized_text``, which is what the model and the entity rules see; entity offsets index into it.
- If no letter or digit remains -> INVALID_ARGUMENT ("no words"), since nothing could be understood.
- ``session_id`` is optional; when set it must match ``[A-Za-z0-9._:-]{1,128}`` -> else INVALID_ARGUMENT.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from services.common.errors import InvalidArgumentError

_DROP_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "So", "Sk"})
_WORD_RE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_SPACE_RE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Token:
    """A word of the normalised text: its matching form and its character span."""

    norm: str
    start: int
    end: int


def _describe(text: str, limit: int = 40) -> str:
    return repr(text[:limit] + ("…" if len(text) > limit else ""))


def normalize_text(text: str, *, max_text_chars: int) -> str:
    """Validate and clean one utterance (see the module docstring); returns the normalised text."""
    if not text or not text.strip():
        raise InvalidArgumentError(f"text is empty: send 1..{max_text_chars} characters")
    if len(text) > max_text_chars:
        raise InvalidArgumentError(f"text has {len(text)} characters, more than the limit of {max_text_chars}")
    cleaned = "".join(" " if unicodedata.category(c) in _DROP_CATEGORIES else c for c in text)
    cleaned = _SPACE_RE.sub(" ", cleaned).strip()
    if not any(c.isalnum() for c in cleaned):
        raise InvalidArgumentError(
            f"text={_describe(text)} has no words once control characters and symbols are removed"
        )
    return cleaned


def fold(word: str) -> str:
    """Matching form of a word: lower case, accents stripped, apostrophes dropped ("Children's" -> "childrens")."""
    decomposed = unicodedata.normalize("NFKD", word.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c) and c not in "'’")


def words(text: str) -> list[Token]:
    """Word tokens of ``text`` (letters/digits, inner apostrophes kept in the span) with their spans."""
    return [Token(fold(m.group()), m.start(), m.end()) for m in _WORD_RE.finditer(text)]
