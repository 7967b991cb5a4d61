"""TTS text front end: numbers to words (num2words and our rules on top), normalisation for the movie domain."""

from __future__ import annotations

import pytest

from services.tts import numbers
from services.tts.text import normalize


@pytest.mark.parametrize(("n", "words"), [
    (0, "zero"), (7, "seven"), (15, "fifteen"), (42, "forty-two"), (100, "one hundred"),
    (1682, "one thousand, six hundred and eighty-two"), (1_000_000, "one million"),
    (2_000_017, "two million and seventeen"), (-5, "minus five"),
])
def test_cardinal(n, words):
    assert numbers.cardinal(n) == words


@pytest.mark.parametrize(("n", "words"), [
    (1, "first"), (2, "second"), (3, "third"), (4, "fourth"), (12, "twelfth"), (20, "twentieth"),
    (21, "twenty-first"), (100, "one hundredth"), (103, "one hundred and third"),
])
def test_ordinal(n, words):
    assert numbers.ordinal(n) == words


@pytest.mark.parametrize(("n", "words"), [
    (1995, "nineteen ninety-five"), (1900, "nineteen hundred"), (1905, "nineteen oh-five"),
    (2000, "two thousand"), (2001, "two thousand and one"), (2010, "twenty ten"), (2024, "twenty twenty-four"),
    (1066, "ten sixty-six"),
])
def test_year(n, words):
    assert numbers.year(n) == words


def test_huge_number_is_read_digit_by_digit():
    assert numbers.cardinal(10**16) == "one " + " ".join(["zero"] * 16)


@pytest.mark.parametrize(("text", "expected"), [
    ("Dr. Strangelove vs. Godzilla.", "Doctor Strangelove versus Godzilla."),
    ("Kill Bill Pt. 2 with Mr. Bean", "Kill Bill Part two with Mister Bean"),
    ("St. Elmo's Fire is on Main St.", "Saint Elmo's Fire is on Main Street"),
    ("Mrs. Doubtfire (1993)", "Missus Doubtfire (nineteen ninety-three)"),
    ("Released in 1995.", "Released in nineteen ninety-five."),
    ("a comedy from the 90s or the 1980s", "a comedy from the nineties or the nineteen eighties"),
    ("the '70s", "the seventies"),
    ("Rated 4.5/5 by 1,682 users", "Rated four point five out of five by one thousand, six hundred and eighty-two users"),
    ("It earned $12.50 and $1.5 million", "It earned twelve dollars and fifty cents and one point five million dollars"),
    ("95% fresh", "ninety-five percent fresh"),
    ("the 21st century", "the twenty-first century"),
    ("It runs 142 min. long", "It runs one hundred and forty-two minutes long"),
    ("Godfather Part II and Episode IV", "Godfather Part two and Episode four"),
    ("Rocky III", "Rocky three"),
    ("from 1993-1995", "from nineteen ninety-three to nineteen ninety-five"),
    ("1500 movies", "one thousand, five hundred movies"),
    ("No. 5 and #1", "number five and number one"),
    ("Tom & Jerry", "Tom and Jerry"),
    ("at 7:05", "at seven oh five"),
])
def test_normalize(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize("text", [
    "I love it 😀 🎬 so much ★★★★", "a\x00b\x07c\u200bd\x1b[31m", "\ud800 lone surrogate", "\ue000 private use",
    "™©®", "", "   ", "中文 and العربية", "$", "%", "1" * 40, "…!?", "\n\n\t",
])
def test_normalize_never_raises_and_drops_controls_and_symbols(text):
    out = normalize(text)
    assert all(ord(c) >= 32 for c in out)
    assert not any(c in out for c in "😀🎬★™©®\x00\x07\u200b\ud800\ue000")


def test_emoji_and_controls_are_dropped_between_words():
    assert normalize("I love it 😀 so\x07 much") == "I love it so much"
