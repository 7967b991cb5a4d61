"""Text policy of the NLP stage: validation messages, control characters and emoji, word spans."""

from __future__ import annotations

import pytest

from services.common import InvalidArgumentError
from services.common.ids import validate_session_id
from services.nlp.text import fold, normalize_text, words


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text_is_rejected(text):
    with pytest.raises(InvalidArgumentError, match="text is empty"):
        normalize_text(text, max_text_chars=2000)


def test_over_limit_text_names_its_length():
    with pytest.raises(InvalidArgumentError, match="2001 characters, more than the limit of 2000"):
        normalize_text("a" * 2001, max_text_chars=2000)
    assert normalize_text("a" * 2000, max_text_chars=2000) == "a" * 2000


def test_control_format_and_emoji_become_spaces_and_collapse():
    assert normalize_text("hi\x00there\u200b🎬 you\r\n", max_text_chars=100) == "hi there you"


@pytest.mark.parametrize("text", ["\x00\x01", "🎬🍿", "?!…", "\u200d\u200b"])
def test_text_without_words_is_rejected(text):
    with pytest.raises(InvalidArgumentError, match="no words"):
        normalize_text(text, max_text_chars=100)


@pytest.mark.parametrize("good", ["", "abc", "user-1_2.3:4", "x" * 128])
def test_valid_session_ids(good):
    assert validate_session_id(good) == good


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "emoji🎬", "semi;colon", "new\nline"])
def test_invalid_session_ids_are_named(bad):
    with pytest.raises(InvalidArgumentError, match="session_id="):
        validate_session_id(bad)


def test_words_fold_case_accents_apostrophes_and_keep_spans():
    text = "Children's Misérables, 90s!"
    toks = words(text)
    assert [t.norm for t in toks] == ["childrens", "miserables", "90s"]
    assert [text[t.start:t.end] for t in toks] == ["Children's", "Misérables", "90s"]
    assert fold("Ça") == "ca"
