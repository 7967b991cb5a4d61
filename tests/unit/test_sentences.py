"""Sentence boundaries (services/common/sentences.py): one splitter for TTS and the orchestrator."""

from __future__ import annotations

import random

import pytest

from services.common.sentences import first_sentence, split_sentences


def test_sentences_keep_spans_of_the_request_text():
    text = ("Hello there. Dr. Who is great! What about J. R. R. Tolkien? No. I said no. Item No. 5 is here. "
            "Also cats, dogs, etc. They are fine...   Really?! \"Yes.\" OK")
    sentences = split_sentences(text)
    assert [s.text for s in sentences] == [
        "Hello there.", "Dr. Who is great!", "What about J. R. R. Tolkien?", "No.", "I said no.",
        "Item No. 5 is here.", "Also cats, dogs, etc.", "They are fine...", "Really?!", "\"Yes.\"", "OK",
    ]
    for s in sentences:
        assert text[s.start : s.end] == s.text


def test_decimals_and_newlines():
    text = "It is rated 3.5 out of 5\nNext line here"
    assert [s.text for s in split_sentences(text)] == ["It is rated 3.5 out of 5", "Next line here"]


def test_long_sentences_are_cut_at_clause_breaks_then_spaces():
    text = "word, " * 200
    sentences = split_sentences(text, max_sentence_chars=100)
    assert all(len(s.text) <= 100 for s in sentences)
    assert all(s.text.endswith(",") for s in sentences)
    assert "".join(text[s.start : s.end] for s in sentences).replace(" ", "") == text.replace(" ", "")
    unbroken = "x" * 250
    assert [len(s.text) for s in split_sentences(unbroken, max_sentence_chars=100)] == [100, 100, 50]


def test_whitespace_only_has_no_sentences():
    assert split_sentences(" \n\t ") == []


@pytest.mark.parametrize("sentences", [
    ["How about I.Q. from 1995?", "You might also like Heat and Fargo."],
    ["L.A. Confidential came out in 1997.", "It's a crime movie."],
    ["Also good: E.T. the Extra-Terrestrial and Fargo."],
    ["Got it, 4 stars for Super Mario Bros.!", "I'll use that for your next recommendations."],
    ["How about When Harry Met Sally... from 1995?", "Enjoy!"],
    ["Try Pt. 2 of it.", "Vol. 3 is good too."],
    ["It was No. 1 in the U.S. in 1996.", "Really?!"],
])
def test_titles_and_abbreviations_inside_sentences(sentences):
    assert [s.text for s in split_sentences(" ".join(sentences))] == sentences


def test_nothing_is_lost_on_text_the_segmenter_cannot_read():
    rng = random.Random(1)
    text = "".join(chr(rng.randint(32, 0x2FFF)) for _ in range(2000))  # pysbd alone returns no sentence at all
    sentences = split_sentences(text)
    assert "".join("".join(s.text for s in sentences).split()) == "".join(text.split())
    assert all(text[s.start:s.end] == s.text for s in sentences)


def test_first_sentence():
    assert first_sentence("How about Mr. Holland's Opus from 1995? You might also like Fargo.") == (
        "How about Mr. Holland's Opus from 1995?")
    assert first_sentence("Just one") == "Just one"
    assert first_sentence("  ") == ""
