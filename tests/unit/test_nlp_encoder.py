"""Length grouping of a batch and title masking for the intent head (no model needed)."""

from __future__ import annotations

from services.nlp.encoder import length_groups
from services.nlp.entities import Found
from services.nlp.understand import intent_text


def test_length_groups_cover_every_index_once_and_bound_padding():
    lengths = [10, 11, 12, 10, 30, 31, 9, 8, 40, 12, 11]
    groups = length_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        longest = max(lengths[i] for i in g)
        waste = 1 - sum(lengths[i] for i in g) / (longest * len(g))
        assert waste <= 0.25 or len(g) <= 4


def test_small_batches_stay_one_run():
    assert length_groups([5, 5, 40]) == [[0, 1, 2]]
    assert length_groups([7]) == [[0]]


def test_intent_text_replaces_titles_only():
    text = "give the god father four stars"
    entities = [Found("title", "Godfather, The", 5, 19, 1.0, 127), Found("rating", "4", 20, 30)]
    assert intent_text(text, entities) == "give a movie four stars"
    assert intent_text("hello", []) == "hello"
