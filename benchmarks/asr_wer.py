"""Word error rate with the normalisation the ASR benchmark reports: case, punctuation and numbers.

Digits become words ("5" -> "five", "1995" -> "nineteen ninety five", "90s" -> "nineties"), so a
transcript that writes numbers as digits is not charged for it.
"""

from __future__ import annotations

import re

from rapidfuzz.distance import Levenshtein

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """English words for 0..9999; four-digit years are read in pairs (1995 -> nineteen ninety five)."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    if 1100 <= n <= 2099 and n % 1000 >= 10 and not 2000 <= n <= 2009:
        high, low = divmod(n, 100)
        return f"{number_words(high)} " + (number_words(low) if low >= 10 else f"oh {_ONES[low]}") if low else \
            f"{number_words(high)} hundred"
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {number_words(rest)}" if rest else "")
    thousands, rest = divmod(n, 1000)
    return f"{number_words(thousands)} thousand" + (f" {number_words(rest)}" if rest else "")


def _plural(words: str) -> str:
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


def normalise(text: str) -> list[str]:
    """Lower-case words with punctuation dropped and numbers spelled out."""
    text = text.lower().replace("-", " ")
    text = re.sub(r"'?(\d+)s\b", lambda m: _plural(number_words(int(m.group(1)))), text)
    text = re.sub(r"\d+", lambda m: f" {number_words(int(m.group(0)))} " if len(m.group(0)) <= 4 else m.group(0), text)
    text = re.sub(r"[^a-z0-9' ]+", " ", text).replace("'", "")
    return text.split()


def wer(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER: total word edits over total reference words."""
    edits = words = 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        r, h = normalise(ref), normalise(hyp)
        edits += Levenshtein.distance(r, h)
        words += len(r)
    return edits / max(1, words)
