"""Phrase boosting, the host side: which boosted phrases the speaker may have said where the decoder heard
something else.

Every phrase gets a phonetic key: its espeak-ng phonemes (en-us) without stress, length marks or spaces,
so "Casablanca" and a first-pass "Castle Blanca" compare as ``kæsɐblæŋkə`` and ``kæsəlblæŋkə``. A transcript's word
windows (up to ``MAX_WINDOW_WORDS``) get keys the same way (each word's key cached), and
:func:`find_candidates` pairs windows with phrases whose keys are close: rapidfuzz's normalised
Levenshtein similarity of at least ``min_similarity``, lengths within ``LENGTH_RATIO`` of each other, both
keys at least ``MIN_KEY_PHONEMES`` long (short keys match anything). There is nothing to fix where the
transcript already holds the phrase (spaced as it may be: "night watch" is "Nightwatch" heard right), or holds
it but for its article ("a war movie" is no question about "The War"); and a span that already is a phrase is
replaced only by a phrase that holds it ("the silence" may become "The Silence of the Lambs", "the big sleep"
never "The Big Squeeze"). The best ``max_candidates``
pairs, one per phrase, go to the decoder, which decides (``boosting.py``): candidates are suggestions, never
replacements.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from services.common.errors import InvalidArgumentError, shown
from services.common.phonemes import EspeakPhonemizer
from services.common.text_input import WORD_RE

MAX_WINDOW_WORDS = 6
MIN_KEY_PHONEMES = 5
# A window's key 0.7..1.6x the phrase's (at 0.6, "five stars" -> "five Star Wars": 5 of 8 phonemes heard).
LENGTH_RATIO = (0.7, 1.6)
ARTICLES = ("the", "a", "an")
# Limits of one request's phrases (RecognitionConfig.phrases); the stage's own list (the catalogue) has none.
MAX_PHRASES = 1000
MAX_PHRASE_CHARS = 100
MAX_BOOST = 20.0

_MARKS = re.compile(r"[ˈˌːˑ\s\-‿]")


@dataclass(frozen=True, slots=True)
class Phrase:
    """A phrase to favour and how much: ``boost`` nats per token of the phrase (see ``boosting.py``)."""

    text: str
    boost: float
    key: str
    words: str  # its words, lower case, space-separated, padded with spaces: " the usual suspects "


@dataclass(frozen=True, slots=True)
class Candidate:
    """``phrase`` may be what was said in ``text[start:end]`` (phonetic keys ``similarity`` apart, 0..1)."""

    start: int
    end: int
    phrase: Phrase
    similarity: float

    def put_in(self, text: str, written: str | None = None) -> str:
        """``text`` with this span replaced by the phrase (or its ``written`` form). A phrase that ends with a
        period ("Sunset Blvd.") takes the place of the period after the span, not a second one: "I hated sunset
        the LVD." becomes "I hated Sunset Blvd.", never "... Blvd..", which the decoder finds unlikely."""
        phrase = self.phrase.text if written is None else written
        rest = text[self.end:]
        if phrase.endswith(".") and rest.startswith("."):
            rest = rest[1:]
        return text[:self.start] + phrase + rest


class PhoneticKeys:
    """Phonetic keys of text, word by word (each word's key cached; thread-safe: espeak-ng calls take its lock)."""

    def __init__(self, cache_words: int = 50_000) -> None:
        self._espeak = EspeakPhonemizer("en-us")
        self._word_key = lru_cache(maxsize=cache_words)(self._uncached)

    def _uncached(self, word: str) -> str:
        return _MARKS.sub("", "".join(self._espeak.phonemize(word)))

    def word(self, word: str) -> str:
        """Key of one word (lower-cased)."""
        return self._word_key(word.lower())

    def text(self, text: str) -> str:
        """Key of a phrase: its words' keys joined."""
        return "".join(self.word(m.group()) for m in WORD_RE.finditer(text))


class PhraseSet:
    """Phrases with their keys, searchable together (built once: the stage's catalogue, or one request's)."""

    def __init__(self, phrases: Iterable[tuple[str, float]], keys: PhoneticKeys) -> None:
        seen: dict[str, Phrase] = {}
        for text, boost in phrases:
            text = " ".join(text.split())
            if text.lower() not in seen:
                seen[text.lower()] = Phrase(text, boost, keys.text(text), _padded_words(text))
        # Only phrases with a usable key take part in fuzzy matching.
        self.phrases = tuple(p for p in seen.values() if len(p.key) >= MIN_KEY_PHONEMES)
        self._keys = [p.key for p in self.phrases]

    def __len__(self) -> int:
        return len(self.phrases)

    def similar(self, window_keys: Sequence[str], min_similarity: float) -> list[tuple[int, int, float]]:
        """(window index, phrase index, similarity) of every pair at least ``min_similarity`` alike."""
        if not window_keys or not self.phrases:
            return []
        scores = process.cdist(window_keys, self._keys, scorer=Levenshtein.normalized_similarity,
                               score_cutoff=min_similarity, dtype=np.float32)
        lo, hi = LENGTH_RATIO
        out = []
        for w, p in zip(*np.nonzero(scores), strict=True):
            if lo <= len(window_keys[w]) / len(self._keys[p]) <= hi:
                out.append((int(w), int(p), float(scores[w, p])))
        return out


def _padded_words(text: str) -> str:
    return f" {' '.join(WORD_RE.findall(text.lower()))} "


def _spelling(padded: str) -> str:
    """Padded words without the spaces between them: "night watch" and "Nightwatch" are spelled alike."""
    return padded.replace(" ", "")


def _content(padded: str) -> str:
    """Padded words without a leading article."""
    first, _, rest = padded.strip().partition(" ")
    return f" {rest} " if first in ARTICLES and rest else padded


def find_candidates(text: str, sets: Sequence[PhraseSet], keys: PhoneticKeys, *, max_candidates: int,
                    min_similarity: float) -> list[Candidate]:
    """Best phrase candidates for spans of ``text`` (see the module docstring), best first."""
    words = list(WORD_RE.finditer(text))
    word_keys = [keys.word(m.group()) for m in words]
    windows: list[tuple[int, int]] = []  # (first word, word count)
    window_keys: list[str] = []
    for i in range(len(words)):
        for n in range(1, min(MAX_WINDOW_WORDS, len(words) - i) + 1):
            key = "".join(word_keys[i:i + n])
            if len(key) >= MIN_KEY_PHONEMES:
                windows.append((i, n))
                window_keys.append(key)
    heard = _padded_words(text)
    found: list[Candidate] = []
    kept: list[tuple[int, int, str]] = []  # spans that already are a phrase, heard right: (start, end, its words)
    for phrase_set in sets:
        for w, p, similarity in phrase_set.similar(window_keys, min_similarity):
            i, n = windows[w]
            phrase = phrase_set.phrases[p]
            start, end = words[i].start(), words[i + n - 1].end()
            said = _padded_words(text[start:end])
            if _spelling(said) == _spelling(phrase.words):  # heard right, maybe spaced otherwise ("night watch")
                kept.append((start, end, phrase.words))
                continue
            if phrase.words in heard or _content(said) == _content(phrase.words):
                continue  # heard right here or elsewhere, or but for its article ("a war" for "The War")
            article = phrase.text.split()[0].lower()
            if article in ARTICLES and i > 0 and words[i - 1].group().lower() == article:
                start = words[i - 1].start()  # "the" + "Mighty" -> "The Mighty", not "the The Mighty"
            found.append(Candidate(start, end, phrase, similarity))
    # A phrase heard right is no candidate anywhere, and it is not replaced by another ("the big sleep" -> "The
    # Big Squeeze"), only extended by one that holds it.
    heard_right = {kept_words for _, _, kept_words in kept}
    found = [c for c in found if c.phrase.words not in heard_right and not any(
        c.start < e and s < c.end and _spelling(kept_words) not in _spelling(c.phrase.words)
        for s, e, kept_words in kept)]
    found.sort(key=lambda c: (-c.similarity, c.start))
    best: dict[str, Candidate] = {}
    for c in found:
        best.setdefault(c.phrase.text.lower(), c)
        if len(best) >= max_candidates:
            break
    return list(best.values())


def validate_phrases(phrases: Sequence, default_boost: float) -> list[tuple[str, float]]:
    """One request's ``RecognitionConfig.phrases`` as (text, boost); raises InvalidArgumentError naming a bad one.

    A phrase is 1..``MAX_PHRASE_CHARS`` characters with a letter or digit; its boost is 0 (the stage's
    default) or within (0, ``MAX_BOOST``]; at most ``MAX_PHRASES`` phrases.
    """
    if len(phrases) > MAX_PHRASES:
        raise InvalidArgumentError(f"phrases has {len(phrases)} entries; at most {MAX_PHRASES} are accepted")
    out = []
    for i, p in enumerate(phrases):
        text = " ".join(p.phrase.split())
        if not text or len(text) > MAX_PHRASE_CHARS or not WORD_RE.search(text):
            raise InvalidArgumentError(f"phrases[{i}].phrase={shown(p.phrase)} must have 1..{MAX_PHRASE_CHARS} "
                                       "characters, with a letter or digit")
        if math.isnan(p.boost) or not 0.0 <= p.boost <= MAX_BOOST:
            raise InvalidArgumentError(f"phrases[{i}].boost={p.boost} is outside 0..{MAX_BOOST:g} (0: the server's "
                                       "default)")
        out.append((text, p.boost or default_boost))
    return out
