"""Rule-based movie entities: genre, decade, year and rating, over word tokens of the normalised text.

Rules work on folded word tokens (lower case, no punctuation, no accents), so ASR output ("the nineties",
"nineteen ninety five", "sigh fi", "four and a half stars") and typed text ("90s", "1995", "Sci-Fi", "4/5")
give the same entities. Spans index into the normalised text. Titles are matched separately
(:mod:`services.nlp.titles`) and take precedence: rules skip tokens already claimed by a title.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from services.nlp.text import Token

DATA_DIR = Path(__file__).with_name("data")

UNITS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
         "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
         "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19}
TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
        "ninety": 90}
DECADE_WORDS = {"twenties": 1920, "thirties": 1930, "forties": 1940, "fifties": 1950, "sixties": 1960,
                "seventies": 1970, "eighties": 1980, "nineties": 1990}
MIN_YEAR, MAX_YEAR = 1900, 2030
_ANAPHORS = frozenset({"it", "that", "this", "one"})
# Sentiment words that imply a rating when no number is said ("I loved Fargo" -> 5), only in a sentence
# that names a movie or points at one ("that one", "it"). Score 0.6 marks them as inferred. This module is
# the one owner of what a spoken opinion is worth: the orchestrator stores NLP's rating entity as it is.
SENTIMENT = {
    "loved": 5, "love": 5, "adored": 5, "fantastic": 5, "amazing": 5, "brilliant": 5, "masterpiece": 5,
    "favorite": 5, "favourite": 5, "great": 5, "awesome": 5, "excellent": 5, "perfect": 5,
    "liked": 4, "enjoyed": 4, "really good": 4, "pretty good": 4,
    "okay": 3, "alright": 3, "average": 3, "meh": 3, "decent": 3, "so so": 3,
    "didnt like": 2, "didnt enjoy": 2, "dont like": 2, "doesnt like": 2, "did not like": 2, "do not like": 2,
    "did not enjoy": 2, "disliked": 2, "dislike": 2, "not a fan": 2,
    "bad": 2, "boring": 2, "disappointing": 2, "dull": 2, "weak": 2,
    "hated": 1, "hate": 1, "awful": 1, "terrible": 1, "horrible": 1, "worst": 1, "garbage": 1, "trash": 1,
}
# A negation right before a sentiment word turns it around: "not great" / "never liked" -> 2,
# "not bad" / "never hated" -> 3.
NEGATIONS = frozenset({"not", "never", "isnt", "wasnt", "arent", "werent", "didnt", "dont", "doesnt", "hardly",
                       "nt"})
_LONGEST_SENTIMENT = max(len(k.split()) for k in SENTIMENT)
_NEGATIVE_PHRASES = frozenset(k for k in SENTIMENT if NEGATIONS & set(k.split()))  # negated already


@dataclass(frozen=True, slots=True)
class Found:
    """One entity found in the text (offsets into the normalised text, end exclusive)."""

    type: str
    value: str
    start: int
    end: int
    score: float = 1.0
    item_id: int = 0


def load_genres(path: Path | None = None) -> dict[tuple[str, ...], str]:
    """Synonym phrase (tuple of folded words) -> canonical MovieLens genre, from ``data/genres.json``."""
    from services.nlp.text import words

    raw = json.loads((path or DATA_DIR / "genres.json").read_text(encoding="utf-8"))["genres"]
    phrases: dict[tuple[str, ...], str] = {}
    for genre, synonyms in raw.items():
        for phrase in [genre, *synonyms]:
            key = tuple(t.norm for t in words(phrase))
            if key and genre != "unknown":
                # Phrases shared by two genres ("rom com") are handled by listing both: keep a joined value.
                phrases[key] = genre if key not in phrases or phrases[key] == genre else f"{phrases[key]}|{genre}"
    return phrases


def number_at(tokens: list[Token], i: int) -> tuple[float, int] | None:
    """A small number (0..99, optional "and a half"/".5") starting at token ``i``: (value, tokens used)."""
    word = tokens[i].norm
    if word.isdigit() and len(word) <= 2:
        value, used = float(word), 1
    elif word in UNITS:
        value, used = float(UNITS[word]), 1
    elif word in TENS:
        value, used = float(TENS[word]), 1
        if i + 1 < len(tokens) and tokens[i + 1].norm in UNITS and 0 < UNITS[tokens[i + 1].norm] < 10:
            value, used = value + UNITS[tokens[i + 1].norm], 2
    elif word in ("a", "an") and i + 1 < len(tokens) and tokens[i + 1].norm == "half":
        return 0.5, 2
    else:
        return None
    rest = [t.norm for t in tokens[i + used:i + used + 3]]
    if rest[:3] == ["and", "a", "half"]:
        value, used = value + 0.5, used + 3
    return value, used


def year_at(tokens: list[Token], i: int) -> tuple[int, int] | None:
    """A year at token ``i``: "1995", or "nineteen ninety five" / "nineteen eighty" (value, tokens used)."""
    word = tokens[i].norm
    if word.isdigit() and len(word) == 4 and MIN_YEAR <= int(word) <= MAX_YEAR:
        return int(word), 1
    if word == "nineteen" and i + 1 < len(tokens):
        nxt = tokens[i + 1].norm
        if nxt in TENS:
            value, used = 1900 + TENS[nxt], 2
            if i + 2 < len(tokens) and tokens[i + 2].norm in UNITS and 0 < UNITS[tokens[i + 2].norm] < 10:
                value, used = value + UNITS[tokens[i + 2].norm], 3
            return value, used
        if nxt in UNITS and UNITS[nxt] >= 10:  # "nineteen fifteen"
            return 1900 + UNITS[nxt], 2
    return None


def decade_at(tokens: list[Token], i: int) -> tuple[int, int] | None:
    """A decade at token ``i``: "nineties", "90s", "1990s", "nineteen nineties" (value, tokens used)."""
    word = tokens[i].norm
    if word in DECADE_WORDS:
        return DECADE_WORDS[word], 1
    if word == "nineteen" and i + 1 < len(tokens) and tokens[i + 1].norm in DECADE_WORDS:
        return DECADE_WORDS[tokens[i + 1].norm], 2
    m = re.fullmatch(r"(19|20)?([0-9])0s", word)
    if m:
        century = int(m.group(1) or 19) * 100
        if not m.group(1) and m.group(2) in ("0", "1"):
            century = 2000  # "00s", "10s"
        return century + int(m.group(2)) * 10, 1
    return None


class EntityRules:
    """Genre, decade, year and rating rules over word tokens."""

    def __init__(self, genre_phrases: dict[tuple[str, ...], str]) -> None:
        self.genre_phrases = genre_phrases
        self.max_phrase = max(len(k) for k in genre_phrases)

    def explicit_ratings(self, text: str, tokens: list[Token], claimed: set[int]) -> list[Found]:
        """Numeric ratings ("four stars", "3 out of 5", "rate it two"); run before titles ("one star")."""
        return self._ratings(text, tokens, claimed)

    def find(self, text: str, tokens: list[Token], claimed: set[int], *, refers_to_movie: bool) -> list[Found]:
        """Decade/year/genre (and, if no rating was found yet, sentiment) entities outside ``claimed``.

        Args:
            refers_to_movie: the sentence names a title; sentiment ratings need it or a pronoun.
        """
        found: list[Found] = []
        found += self._years_and_decades(text, tokens, claimed)
        found += self._genres(text, tokens, claimed)
        return found

    def sentiment(self, tokens: list[Token], claimed: set[int], *, refers_to_movie: bool) -> list[Found]:
        """A rating implied by sentiment words, when the sentence names or points at a movie."""
        norms = [t.norm for t in tokens]
        if not refers_to_movie and not _ANAPHORS.intersection(norms):
            return []
        return self._sentiment(tokens, norms, claimed)

    def _take(self, claimed: set[int], i: int, n: int) -> bool:
        span = set(range(i, i + n))
        if span & claimed:
            return False
        claimed |= span
        return True

    def _genres(self, text: str, tokens: list[Token], claimed: set[int]) -> list[Found]:
        out: list[Found] = []
        seen: set[str] = set()
        i = 0
        while i < len(tokens):
            for n in range(min(self.max_phrase, len(tokens) - i), 0, -1):
                key = tuple(t.norm for t in tokens[i:i + n])
                genres = self.genre_phrases.get(key)
                if genres and self._take(claimed, i, n):
                    start, end = tokens[i].start, tokens[i + n - 1].end
                    for genre in genres.split("|"):
                        if genre not in seen:
                            seen.add(genre)
                            out.append(Found("genre", genre, start, end))
                    i += n - 1
                    break
            i += 1
        return out

    def _years_and_decades(self, text: str, tokens: list[Token], claimed: set[int]) -> list[Found]:
        out: list[Found] = []
        i = 0
        while i < len(tokens):
            hit = decade_at(tokens, i)
            kind = "decade"
            if hit is None:
                hit, kind = year_at(tokens, i), "year"
            if hit is not None and self._take(claimed, i, hit[1]):
                value, used = hit
                out.append(Found(kind, str(value), tokens[i].start, tokens[i + used - 1].end))
                i += used
                continue
            i += 1
        return out

    def _ratings(self, text: str, tokens: list[Token], claimed: set[int]) -> list[Found]:
        norms = [t.norm for t in tokens]
        for i in range(len(tokens)):
            if i in claimed:
                continue
            hit = number_at(tokens, i)
            if hit is None:
                continue
            value, used = hit
            j = i + used
            # "4.5 stars" / "4,5": digits joined by a point in the raw text.
            if (norms[i].isdigit() and j < len(tokens) and norms[j] == "5"
                    and text[tokens[i].end:tokens[j].start] in (".", ",")):
                value, used, j = value + 0.5, used + 1, j + 1
            after = norms[j:j + 3]
            # The cue may sit before a title ("give back to the future a four"), so look 8 words back.
            before = [norms[k] for k in range(i) if k not in claimed][-8:]
            explicit = (after[:1] in (["star"], ["stars"]) or after[:2] == ["out", "of"]
                        or (j < len(tokens) and text[tokens[j - 1].end:tokens[j].start] == "/"))
            cued = any(w in ("rate", "rated", "rating", "give", "gave", "giving", "score") for w in before)
            if not (explicit or cued) or not 0.5 <= value <= 5:
                continue
            end_tok = j - 1
            if after[:1] in (["star"], ["stars"]):
                end_tok = j
            elif after[:2] == ["out", "of"] and len(after) == 3:
                end_tok = j + 2
            elif j < len(tokens) and text[tokens[j - 1].end:tokens[j].start] == "/":
                end_tok = j
            if self._take(claimed, i, end_tok - i + 1):
                return [Found("rating", _fmt(value), tokens[i].start, tokens[end_tok].end)]
        return []

    def _sentiment(self, tokens: list[Token], norms: list[str], claimed: set[int]) -> list[Found]:
        for i in range(len(tokens)):
            for n in range(_LONGEST_SENTIMENT, 0, -1):
                key = " ".join(norms[i:i + n])
                if len(norms[i:i + n]) == n and key in SENTIMENT and self._take(claimed, i, n):
                    value = SENTIMENT[key]
                    negated = any(w in NEGATIONS for w in norms[max(0, i - 2):i])  # "not great", "never really liked"
                    if negated and key not in _NEGATIVE_PHRASES:
                        value = 2 if value >= 3 else 3
                    return [Found("rating", str(value), tokens[i].start, tokens[i + n - 1].end, score=0.6)]
        return []


def _fmt(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.1f}"
