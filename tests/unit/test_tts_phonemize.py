"""Phonemes for the voice: the id layout Piper voices expect, and espeak-ng behind our interface."""

from __future__ import annotations

import threading

import pytest

from services.tts.phonemize import EspeakPhonemizer, PhonemeIdMap

ID_MAP = {"_": [0], "^": [1], "$": [2], " ": [3], ".": [10], "a": [14], "b": [15]}


def test_ids_are_bos_then_each_phoneme_with_pad_then_eos():
    result = PhonemeIdMap(ID_MAP).to_ids(["a", " ", "b", "."])
    assert result.ids == [1, 0, 14, 0, 3, 0, 15, 0, 10, 0, 2]
    assert result.skipped == []


def test_unknown_phonemes_are_skipped_and_reported():
    result = PhonemeIdMap(ID_MAP).to_ids(["a", "Ω", "b"])
    assert result.ids == [1, 0, 14, 0, 15, 0, 2]
    assert result.skipped == ["Ω"]


def test_speakable_needs_a_sounding_phoneme():
    ids = PhonemeIdMap(ID_MAP)
    assert ids.speakable(["a"])
    assert not ids.speakable([" ", "."])
    assert not ids.speakable(["Ω"])


def test_map_without_special_symbols_is_rejected():
    with pytest.raises(ValueError, match="'\\^'"):
        PhonemeIdMap({"_": [0], "$": [2]})


@pytest.fixture(scope="module")
def espeak() -> EspeakPhonemizer:
    return EspeakPhonemizer("en-us")


def test_espeak_phonemizes_one_sentence_as_one_unit(espeak):
    phonemes = espeak.phonemize("Hello world. How are you?")
    text = "".join(phonemes)
    assert "h" in text and text.endswith("?")
    assert ". " in text  # espeak's own sentence break is joined by a space, not split


@pytest.mark.parametrize("text", ["", "   ", "\x07\x1b", "\x00"])
def test_espeak_gives_no_phonemes_for_text_without_sound(espeak, text):
    assert espeak.phonemize(text) == []


def test_espeak_reads_around_a_control_character(espeak):
    phonemes = espeak.phonemize("a\x00b")
    assert "b" in phonemes and len([p for p in phonemes if p.isalpha()]) >= 2


def test_espeak_names_an_emoji_which_is_why_normalisation_drops_them(espeak):
    assert "".join(espeak.phonemize("😀")).replace(" ", "")  # "grinning face": never sent to the phonemizer


def test_espeak_is_safe_from_many_threads(espeak):
    expected = espeak.phonemize("The quick brown fox.")
    results: list[list[str]] = []

    def work() -> None:
        for _ in range(20):
            results.append(espeak.phonemize("The quick brown fox."))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == expected for r in results)
