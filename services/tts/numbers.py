"""Numbers to English words, by num2words (cardinals, ordinals, years), with two rules of ours on top.

num2words measured as intelligible as our own hand-written speller on the TTS round-trip set
(benchmarks/text_frontend.py: WER 4.56 % vs 5.09 %, within noise), so it owns the words; it speaks British
style ("one hundred and one"). Ours stay where num2words has no answer: decades ("nineteen nineties") and
very long digit strings, read one digit at a time rather than as "one nonillion".
"""

from __future__ import annotations

from num2words import num2words

_DIGITS = "zero one two three four five six seven eight nine".split()
MAX_CARDINAL = 10**15 - 1


def cardinal(n: int) -> str:
    """``1682`` -> "one thousand, six hundred and eighty-two"; digits read one by one past 10^15."""
    if abs(n) > MAX_CARDINAL:
        return ("minus " if n < 0 else "") + digits(str(abs(n)))
    return num2words(n, lang="en")


def ordinal(n: int) -> str:
    """``21`` -> "twenty-first"."""
    return num2words(n, lang="en", to="ordinal") if 0 <= n <= MAX_CARDINAL else cardinal(n)


def year(n: int) -> str:
    """``1995`` -> "nineteen ninety-five", ``2010`` -> "twenty ten"."""
    return num2words(n, lang="en", to="year") if 1000 <= n <= 9999 else cardinal(n)


def decade(n: int) -> str:
    """``1990`` -> "nineteen nineties", ``90`` -> "nineties", ``2000`` -> "two thousands"."""
    words = year(n) if n >= 100 else cardinal(n)
    if words.endswith("y"):
        return words[:-1] + "ies"
    return words + "s"


def digits(text: str) -> str:
    """Read a digit string one digit at a time."""
    return " ".join(_DIGITS[int(c)] for c in text if c.isdigit())


def decimal(text: str) -> str:
    """``"3.5"`` -> "three point five" (the integer part as a cardinal, the fraction digit by digit)."""
    whole, _, frac = text.partition(".")
    head = cardinal(int(whole.replace(",", ""))) if whole else "zero"
    return f"{head} point {digits(frac)}" if frac else head
