"""Numbers to English words: cardinals, ordinals, years and decimals (US style, no "and")."""

from __future__ import annotations

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_WORDS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}
MAX_CARDINAL = 10**15 - 1


def _below_100(n: int) -> str:
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")


def _below_1000(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    parts = []
    if hundreds:
        parts.append(f"{_ONES[hundreds]} hundred")
    if rest or not hundreds:
        parts.append(_below_100(rest))
    return " ".join(parts)


def cardinal(n: int) -> str:
    """``1682`` -> "one thousand six hundred eighty-two"; digits read one by one past 10^15."""
    if n < 0:
        return "minus " + cardinal(-n)
    if n > MAX_CARDINAL:
        return digits(str(n))
    if n < 1000:
        return _below_1000(n)
    parts = []
    for value, word in _SCALES:
        count, n = divmod(n, value)
        if count:
            parts.append(f"{_below_1000(count)} {word}")
    if n:
        parts.append(_below_1000(n))
    return " ".join(parts)


def ordinal(n: int) -> str:
    """``21`` -> "twenty-first"."""
    words = cardinal(n)
    head, sep, last = words.rpartition(" ")
    prefix, dash, unit = last.rpartition("-")
    if unit in _ORDINAL_WORDS:
        unit = _ORDINAL_WORDS[unit]
    elif unit.endswith("y"):
        unit = unit[:-1] + "ieth"
    else:
        unit += "th"
    return f"{head}{sep}{prefix}{dash}{unit}"


def year(n: int) -> str:
    """``1995`` -> "nineteen ninety-five", ``2001`` -> "two thousand one", ``2010`` -> "twenty ten"."""
    if not 1000 <= n <= 9999:
        return cardinal(n)
    high, low = divmod(n, 100)
    if 2000 <= n <= 2009:
        return cardinal(n)
    if low == 0:
        return f"{cardinal(high)} hundred" if high % 10 else cardinal(n)
    if low < 10:
        return f"{cardinal(high)} oh {_ONES[low]}"
    return f"{cardinal(high)} {_below_100(low)}"


def decade(n: int) -> str:
    """``1990`` -> "nineteen nineties", ``90`` -> "nineties", ``2000`` -> "two thousands"."""
    words = year(n) if n >= 100 else cardinal(n)
    if words.endswith("y"):
        return words[:-1] + "ies"
    return words + "s"


def digits(text: str) -> str:
    """Read a digit string one digit at a time."""
    return " ".join(_ONES[int(c)] for c in text if c.isdigit())


def decimal(text: str) -> str:
    """``"3.5"`` -> "three point five" (the integer part as a cardinal, the fraction digit by digit)."""
    whole, _, frac = text.partition(".")
    head = cardinal(int(whole.replace(",", ""))) if whole else "zero"
    return f"{head} point {digits(frac)}" if frac else head
