"""Phrase boosting's host side: phonetic candidates, and the validation of a request's phrases."""

from __future__ import annotations

import math

import pytest

from protos import asr_pb2, common_pb2
from services.asr.config import AsrConfig, settings_from_proto
from services.asr.phrases import MAX_PHRASES, PhoneticKeys, PhraseSet, find_candidates, validate_phrases
from services.common import InvalidArgumentError

TITLES = ("Gattaca", "Casablanca", "Nosferatu", "The Usual Suspects", "Toy Story", "Amadeus", "Heat")


@pytest.fixture(scope="module")
def keys() -> PhoneticKeys:
    return PhoneticKeys()


@pytest.fixture(scope="module")
def titles(keys) -> PhraseSet:
    return PhraseSet([(t, 4.0) for t in TITLES], keys)


def _found(text: str, titles: PhraseSet, keys: PhoneticKeys, **kw) -> list[tuple[str, str]]:
    options = {"max_candidates": 8, "min_similarity": 0.5, **kw}
    return [(text[c.start:c.end], c.phrase.text) for c in find_candidates(text, [titles], keys, **options)]


def test_a_misheard_title_is_a_candidate_for_the_span_that_sounds_like_it(titles, keys):
    # What Whisper tiny heard for "what year did Nosferatu come out" and "give Casablanca three stars".
    assert _found(" What year did not start to come out?", titles, keys) == [("not start to", "Nosferatu")]
    assert _found(" Give Castle Blanca three stars.", titles, keys)[0] == ("Castle Blanca", "Casablanca")


def test_a_candidate_is_put_in_without_a_second_period(keys):
    blvd = PhraseSet([("Sunset Blvd.", 4.0)], keys)
    heard = " I hated sunset the LVD."
    (candidate,) = find_candidates(heard, [blvd], keys, max_candidates=8, min_similarity=0.4)
    assert candidate.put_in(heard) == " I hated Sunset Blvd."
    assert candidate.put_in(heard, "Sunset Blvd") == " I hated Sunset Blvd."
    assert candidate.put_in(heard.replace(".", "?")) == " I hated Sunset Blvd.?"  # only a period doubles


def test_a_title_already_heard_is_no_candidate(titles, keys):
    assert all(phrase != "Toy Story" for _, phrase in _found(" Something like Toy Story.", titles, keys))


def test_a_title_heard_with_other_spaces_is_heard_right(keys):
    # Seen in general speech: "So Night Watch Tonight" became "So Nightwatch Tonight" (the NLP's title matcher
    # finds "Nightwatch" in both; only the words changed). A span spelled as the phrase is no candidate, and only
    # a phrase that holds it may replace it, as for a title heard right.
    assert _found(" So Night Watch Tonight", PhraseSet([("Nightwatch", 4.0)], keys), keys) == []
    sets = PhraseSet([(t, 4.0) for t in ("Nightwatch", "Night Watch Man", "Nightmare")], keys)
    assert _found(" So Night Watch Men tonight", sets, keys) == [("Night Watch Men", "Night Watch Man")]


def test_a_title_heard_right_is_not_replaced_by_another_only_extended(keys):
    # Seen on the title set: "the big sleep", heard right, became "The Big Squeeze"; "the thin man", "Tin Men".
    sets = PhraseSet([(t, 4.0) for t in ("The Big Sleep", "The Big Squeeze", "The Silence", "The Silence of the Lambs")],
                     keys)
    assert _found(" Recommend something similar to the big sleep.", sets, keys) == []
    assert ("the silence of the lamps", "The Silence of the Lambs") in _found(" I enjoyed the silence of the lamps.",
                                                                              sets, keys)


def test_a_title_heard_but_for_its_article_is_no_candidate(keys):
    # "find a war movie" is no question about "The War" (1994); "five stars" is none about "Star Wars".
    sets = PhraseSet([("The War", 4.0), ("Star Wars", 4.0)], keys)
    assert _found(" Find a war movie.", sets, keys) == []
    assert _found(" Rate Titanic five stars.", sets, keys) == []


def test_a_title_with_an_article_takes_the_article_heard_before_it(titles, keys):
    found = dict((p, s) for s, p in _found(" I loved the usual suspect.", titles, keys))
    assert found["The Usual Suspects"] == "the usual suspect"


def test_short_phrases_and_unrelated_speech_give_no_candidates(titles, keys):
    assert "Heat" not in {p.text for p in titles.phrases}  # too short to match by sound: exact words only
    assert _found(" What should I watch tonight?", titles, keys, min_similarity=0.7) == []
    assert _found("", titles, keys) == []


def test_candidates_are_capped_one_per_phrase(titles, keys):
    found = _found(" Castle Blanca, not start to, or Castle Blanca again, Amadeas.", titles, keys, max_candidates=2)
    assert len(found) <= 2 and len({p for _, p in found}) == len(found)


def test_phrase_sets_fold_duplicates_and_spaces(keys):
    phrases = PhraseSet([("Toy  Story", 2.0), ("toy story", 5.0), ("Casablanca", 3.0)], keys)
    assert [(p.text, p.boost) for p in phrases.phrases] == [("Toy Story", 2.0), ("Casablanca", 3.0)]


def _phrases(*items) -> list:
    return [asr_pb2.SpeechPhrase(phrase=p, boost=b) for p, b in items]


def test_valid_phrases_get_the_default_boost_for_zero():
    assert validate_phrases(_phrases(("Gattaca", 0.0), (" Caro  Diario ", 6.5)), 4.0) == [
        ("Gattaca", 4.0), ("Caro Diario", 6.5)]


@pytest.mark.parametrize(("items", "fragment"), [
    ((("", 1.0),), "phrases[0].phrase=''"),
    ((("Gattaca", 1.0), ("?!", 1.0)), "phrases[1].phrase='?!'"),
    ((("x" * 101, 1.0),), "1..100 characters"),
    ((("Gattaca", math.nan),), "phrases[0].boost=nan"),
    ((("Gattaca", -1.0),), "phrases[0].boost=-1.0"),
    ((("Gattaca", 21.0),), "phrases[0].boost=21.0 is outside 0..20"),
    ((("Gattaca", math.inf),), "phrases[0].boost=inf"),
])
def test_bad_phrases_are_named(items, fragment):
    with pytest.raises(InvalidArgumentError, match=fragment.replace("[", r"\[").replace("]", r"\]").replace("?", r"\?")):
        validate_phrases(_phrases(*items), 4.0)


def test_too_many_phrases_are_refused():
    with pytest.raises(InvalidArgumentError, match=f"{MAX_PHRASES + 1} entries; at most {MAX_PHRASES}"):
        validate_phrases(_phrases(*[("Gattaca", 1.0)] * (MAX_PHRASES + 1)), 4.0)


def test_stream_settings_carry_the_phrases_and_the_default_switch():
    config = asr_pb2.RecognitionConfig(encoding=common_pb2.LINEAR16, sample_rate_hz=16_000,
                                       phrases=_phrases(("Gattaca", 0.0)), disable_default_phrases=True)
    settings = settings_from_proto(config, AsrConfig(phrase_boost=3.0))
    assert settings.phrases == (("Gattaca", 3.0),) and settings.default_phrases is False
    plain = settings_from_proto(asr_pb2.RecognitionConfig(encoding=common_pb2.LINEAR16, sample_rate_hz=16_000),
                                AsrConfig())
    assert plain.phrases == () and plain.default_phrases is True


@pytest.mark.parametrize(("field", "value"), [("phrase_boost", 0.0), ("phrase_boost", 25.0),
                                              ("phrase_candidates", 0), ("phrase_min_similarity", 1.0)])
def test_stage_options_are_checked(field, value):
    with pytest.raises(ValueError, match=field):
        AsrConfig(**{field: value})
