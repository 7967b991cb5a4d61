"""Text front end: normalisation of one sentence to speakable words.

Sentences come from ``services.common.sentences`` (spans into the request text); normalisation rewrites
each one for the phonemizer: control characters and symbols with no spoken form are dropped, numbers, years, money, ordinals
and the abbreviations of the movie domain become words. espeak-ng would read some of these itself,
but badly for this domain ("1995" -> "nineteen hundred ninety five", "Pt." -> "P T", "Mr." ends the
sentence, "★" -> "symbol two six zero five"), so we decide, and the phonemizer only sees words.
"""

from __future__ import annotations

import re
import unicodedata

from services.common.text_input import SPOKEN_ABBREVIATIONS
from services.tts import numbers

_ABBREVIATION = re.compile(r"\b(" + "|".join(SPOKEN_ABBREVIATIONS) + r")\.", re.IGNORECASE)
_VS = re.compile(r"\bvs\b\.?", re.IGNORECASE)
_SAINT_STREET = re.compile(r"\bSt\.(?=\s*([A-Z])?)")
_LATIN = {re.compile(r"\be\.g\.", re.IGNORECASE): "for example", re.compile(r"\bi\.e\.", re.IGNORECASE): "that is"}
_NUMBER_SIGN = re.compile(r"\bNo\.\s*(?=\d)|#(?=\d)")
_ROMAN_AFTER_TITLE = re.compile(r"\b(Part|Episode|Chapter|Volume|Book|Act)\s+([IVX]{1,5})\b")
_ROMAN_BARE = re.compile(r"(?<=[A-Za-z] )([IVX]{2,5})\b(?!['’]\w)")
_ROMAN_VALUES = {"I": 1, "V": 5, "X": 10}

_MONEY = re.compile(r"([$£€])\s?(\d[\d,]*(?:\.\d+)?)(\s+(?:thousand|million|billion|trillion)\b)?", re.IGNORECASE)
_CURRENCY = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
             "€": ("euro", "euros", "cent", "cents")}
_PERCENT = re.compile(r"(\d[\d,]*(?:\.\d+)?)\s?%")
_RATING = re.compile(r"\b(\d+(?:\.\d+)?)\s?/\s?(5|10|100)\b")
_RANGE = re.compile(r"\b(\d{1,4})\s?[-–—]\s?(\d{1,4})\b")
_TIME = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\b")
_DECADE = re.compile(r"(?:\b|['’])(\d{2}|1\d{3}|20\d{2})['’]?s\b")
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_DECIMAL = re.compile(r"\b\d[\d,]*\.\d+\b")
_GROUPED = re.compile(r"\b\d{1,3}(?:,\d{3})+\b")
_INTEGER = re.compile(r"\b\d+\b")
_DURATION_UNITS = re.compile(r"\b(\d+)(?:\s?(min|mins|hr|hrs|sec|secs)\b\.?|(h|m)\b)", re.IGNORECASE)
_UNIT_WORDS = {"min": "minutes", "mins": "minutes", "m": "minutes", "hr": "hours", "hrs": "hours",
               "h": "hours", "sec": "seconds", "secs": "seconds"}
# A four-digit number is a year unless it counts something.
_COUNTED = re.compile(r"\s+(movies|films|titles|ratings|votes|users|people|reviews|items|times|minutes|"
                      r"hours|seconds|pages|miles|words|copies|screens|theaters|theatres)\b", re.IGNORECASE)
_SYMBOL_WORDS = {"&": " and ", "+": " plus ", "@": " at ", "=": " equals "}
_PUNCTUATION_MAP = {
    "‘": "'", "’": "'", "‚": "'", "“": '"', "”": '"', "„": '"', "«": '"', "»": '"',
    "—": ", ", "–": ", ", "‐": "-", "‑": "-", "…": "...", "\u00a0": " ",
}


def normalize(text: str) -> str:
    """Rewrite one sentence into words espeak-ng reads well; never raises on odd input."""
    text = _clean_characters(text)
    for pattern, words in _LATIN.items():
        text = pattern.sub(words, text)
    text = _SAINT_STREET.sub(lambda m: "Saint" if m.group(1) else "Street", text)
    text = _NUMBER_SIGN.sub("number ", text)
    text = _ABBREVIATION.sub(lambda m: SPOKEN_ABBREVIATIONS[m.group(1).lower()], text)
    text = _VS.sub("versus", text)
    text = _ROMAN_AFTER_TITLE.sub(lambda m: f"{m.group(1)} {_roman(m.group(2), m.group(2))}", text)
    text = _ROMAN_BARE.sub(lambda m: _roman(m.group(1), m.group(1)), text)
    text = _expand_numbers(text)
    return re.sub(r"\s+", " ", text).strip()


def _clean_characters(text: str) -> str:
    out = []
    for ch in unicodedata.normalize("NFC", text):
        if ch in _PUNCTUATION_MAP:
            out.append(_PUNCTUATION_MAP[ch])
        elif ch in _SYMBOL_WORDS:
            out.append(_SYMBOL_WORDS[ch])
        elif ch in "$£€%#/":
            out.append(ch)  # read together with the number next to them
        else:
            category = unicodedata.category(ch)
            # Control, format, surrogate, private-use and unassigned code points have no sound; symbols
            # (emoji, ★, ™, arrows) would be read as code points or names that do not belong in a reply.
            if category[0] in "CS" or category in ("Zl", "Zp"):
                out.append(" ")
            else:
                out.append(ch)
    return "".join(out)


def _roman(numeral: str, fallback: str) -> str:
    values = [_ROMAN_VALUES[c] for c in numeral]
    total = sum(-v if i + 1 < len(values) and v < values[i + 1] else v for i, v in enumerate(values))
    # Only canonical numerals (II, IV, IX, XIV): "IIV" or "VV" stay letters.
    return numbers.cardinal(total) if _to_roman(total) == numeral else fallback


def _to_roman(n: int) -> str:
    out = ""
    for value, symbol in ((10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")):
        count, n = divmod(n, value)
        out += symbol * count
    return out


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def _money(m: re.Match[str]) -> str:
    one, many, cent, cents = _CURRENCY[m.group(1)]
    amount, scale = m.group(2), (m.group(3) or "").strip().lower()
    if scale:
        return f"{_number_words(amount)} {scale} {many}"
    whole, _, frac = amount.partition(".")
    value = _int(whole)
    words = f"{numbers.cardinal(value)} {one if value == 1 else many}"
    if frac and len(frac) <= 2 and int(frac.ljust(2, "0")):
        sub = int(frac.ljust(2, "0"))
        words += f" and {numbers.cardinal(sub)} {cent if sub == 1 else cents}"
    return words


def _number_words(text: str) -> str:
    return numbers.decimal(text) if "." in text else numbers.cardinal(_int(text))


def _year_or_cardinal(m: re.Match[str]) -> str:
    value = int(m.group())
    preceded_by_money = m.start() > 0 and m.string[m.start() - 1] in "$£€"
    if 1100 <= value <= 2099 and not preceded_by_money and not _COUNTED.match(m.string, m.end()):
        return numbers.year(value)
    return numbers.cardinal(value)


def _range(m: re.Match[str]) -> str:
    low, high = int(m.group(1)), int(m.group(2))
    if low >= high:
        return m.group()  # "5-3" is a score, not a range; leave it to the integer pass
    return f"{m.group(1)} to {m.group(2)}"


def _expand_numbers(text: str) -> str:
    text = _MONEY.sub(_money, text)
    text = _PERCENT.sub(lambda m: f"{_number_words(m.group(1))} percent", text)
    text = _RATING.sub(lambda m: f"{_number_words(m.group(1))} out of {numbers.cardinal(int(m.group(2)))}", text)
    text = _TIME.sub(_time, text)
    text = _DECADE.sub(lambda m: numbers.decade(int(m.group(1))), text)
    text = _ORDINAL.sub(lambda m: numbers.ordinal(int(m.group(1))), text)
    text = _DURATION_UNITS.sub(lambda m: f"{m.group(1)} {_UNIT_WORDS[(m.group(2) or m.group(3)).lower()]}", text)
    text = _RANGE.sub(_range, text)
    text = _DECIMAL.sub(lambda m: numbers.decimal(m.group()), text)
    text = _GROUPED.sub(lambda m: numbers.cardinal(_int(m.group())), text)
    text = re.sub(r"\b\d{4}\b", _year_or_cardinal, text)
    text = _INTEGER.sub(lambda m: numbers.cardinal(int(m.group())), text)
    # Leftover signs that had no number beside them.
    return text.replace("$", " dollars ").replace("%", " percent ").replace("#", " ").replace("/", " ")


def _time(m: re.Match[str]) -> str:
    hours, minutes = int(m.group(1)), int(m.group(2))
    if minutes == 0:
        return f"{numbers.cardinal(hours)} o'clock"
    if minutes < 10:
        return f"{numbers.cardinal(hours)} oh {numbers.cardinal(minutes)}"
    return f"{numbers.cardinal(hours)} {numbers.cardinal(minutes)}"
