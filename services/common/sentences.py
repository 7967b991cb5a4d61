"""Sentence boundaries, owned here for every stage: TTS speaks sentence by sentence, and the orchestrator's
one-sentence reply is the first of them.

Splitting runs on the text as given, so every sentence keeps the span (start, end exclusive) of the
characters it speaks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Abbreviations that pysbd ends a sentence after when a number follows ("Pt. 2", "Vol. 3", "No. 1").
_BEFORE_A_NUMBER = re.compile(r"\b(?:pt|vol|no|ep|ch|pp|fig|nos)\.[\"'”’)\]]*\s*$", re.IGNORECASE)
_PUNCTUATION_ONLY = re.compile(r"[\s.!?…\"'”’)\]]+")


@dataclass(frozen=True, kw_only=True)
class Sentence:
    """One sentence of the request: its span in the request text and that text."""

    start: int
    end: int
    text: str


def split_sentences(text: str, *, max_sentence_chars: int = 400) -> list[Sentence]:
    """Split ``text`` into sentences with spans; over-long ones are cut at clause breaks, then spaces."""
    sentences: list[Sentence] = []
    for start, end in _boundaries(text):
        _append(sentences, text, start, end, max_sentence_chars)
    return sentences


def _boundaries(text: str) -> list[tuple[int, int]]:
    """pysbd's sentence spans (abbreviations, initials, ellipses, decimals), with two fixes it measures worse
    on (benchmarks/text_frontend.py): a piece of bare punctuation ("Jr." + "!") and a number after "Pt."/"Vol."
    /"No." stay with the sentence before them."""
    import pysbd  # imported on first use: stages that never split text do not load its rule tables

    spans: list[tuple[int, int]] = []
    done = 0  # text[:done] is covered
    for span in pysbd.Segmenter(language="en", clean=False, char_span=True).segment(text):
        start, end = max(span.start, done), span.end
        if end <= start:
            continue
        if start > done:  # text pysbd skipped (it drops some odd Unicode runs): spoken as its own piece
            spans.append((done, start))
        piece = text[start:end]
        if spans and (_PUNCTUATION_ONLY.fullmatch(piece)
                      or (piece.lstrip()[:1].isdigit() and _BEFORE_A_NUMBER.search(text[spans[-1][0]:start]))):
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
        done = end
    if done < len(text):
        spans.append((done, len(text)))
    return spans


def _append(out: list[Sentence], text: str, start: int, end: int, limit: int) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    while end - start > limit:
        cut = _cut_point(text, start, start + limit)
        _append(out, text, start, cut, limit)
        start = cut
        while start < end and text[start].isspace():
            start += 1
    if end > start:
        out.append(Sentence(start=start, end=end, text=text[start:end]))


def _cut_point(text: str, start: int, limit: int) -> int:
    window = text[start:limit]
    for pattern in (r"[,;:—–]\s", r"\s"):
        found = [m.end() for m in re.finditer(pattern, window)]
        if found and found[-1] > len(window) // 4:
            return start + found[-1]
    return limit


def first_sentence(text: str) -> str:
    """The first sentence of ``text`` (the whole text when it has one sentence, "" when it has none)."""
    sentences = split_sentences(text)
    return sentences[0].text if sentences else ""
