"""Entity rules and the fuzzy title matcher on a small in-memory catalogue (no model needed)."""

from __future__ import annotations

import bisect
import random
import string

import pytest
from rapidfuzz import fuzz, process

from services.common.catalog import CatalogItem
from services.nlp.entities import _NEGATIVE_PHRASES, SENTIMENT, EntityRules, load_genres
from services.nlp.text import words
from services.nlp.titles import TitleMatcher, title_aliases

CATALOG = {
    100: CatalogItem(100, "Fargo", 1996, ("Crime", "Drama", "Thriller")),
    127: CatalogItem(127, "Godfather, The", 1972, ("Action", "Crime", "Drama")),
    11: CatalogItem(11, "Seven (Se7en)", 1995, ("Crime", "Thriller")),
    28: CatalogItem(28, "Apollo 13", 1995, ("Action", "Drama", "Thriller")),
    273: CatalogItem(273, "Heat", 1995, ("Action", "Crime", "Thriller")),
    96: CatalogItem(96, "Terminator 2: Judgment Day", 1991, ("Action", "Sci-Fi", "Thriller")),
    1204: CatalogItem(1204, "War, The", 1994, ("Adventure", "Drama")),
    1387: CatalogItem(1387, "Lone Star", 1996, ("Drama", "Mystery")),
    1: CatalogItem(1, "Toy Story", 1995, ("Animation", "Children's", "Comedy")),
}


@pytest.fixture(scope="module", name="rules")
def rules_fixture() -> EntityRules:
    return EntityRules(load_genres())


@pytest.fixture(scope="module", name="matcher")
def matcher_fixture() -> TitleMatcher:
    return TitleMatcher(CATALOG)


def _find(rules: EntityRules, text: str) -> set[tuple[str, str]]:
    toks = words(text)
    claimed: set[int] = set()
    found = rules.explicit_ratings(text, toks, claimed) + rules.find(text, toks, claimed, refers_to_movie=False)
    return {(f.type, f.value) for f in found}


def test_all_19_movielens_genres_are_known():
    genres = {g for v in load_genres().values() for g in v.split("|")} | {"unknown"}
    assert len(genres) == 19


@pytest.mark.parametrize(("text", "genres"), [
    ("something scary", {"Horror"}), ("a sci fi film", {"Sci-Fi"}), ("sigh fi please", {"Sci-Fi"}),
    ("a cartoon for the kids", {"Animation", "Children's"}), ("film noir", {"Film-Noir"}),
    ("a rom com", {"Romance", "Comedy"}), ("cowboy movies", {"Western"}), ("science fiction", {"Sci-Fi"}),
])
def test_genre_synonyms(rules, text, genres):
    assert {v for t, v in _find(rules, text) if t == "genre"} == genres


@pytest.mark.parametrize(("text", "entity"), [
    ("from the nineties", ("decade", "1990")), ("90s movies", ("decade", "1990")),
    ("the 1980s", ("decade", "1980")), ("nineteen seventies", ("decade", "1970")),
    ("from 1995", ("year", "1995")), ("nineteen ninety five", ("year", "1995")),
    ("nineteen eighty", ("year", "1980")),
])
def test_decades_and_years(rules, text, entity):
    assert entity in _find(rules, text)


@pytest.mark.parametrize(("text", "rating"), [
    ("four stars", "4"), ("give it a three", "3"), ("two out of five", "2"), ("rate it 4.5", "4.5"),
    ("four and a half stars", "4.5"), ("1 star", "1"), ("3/5", "3"),
])
def test_explicit_ratings(rules, text, rating):
    assert ("rating", rating) in _find(rules, text)


def test_numbers_without_a_rating_cue_are_not_ratings(rules):
    assert not [e for e in _find(rules, "show me two comedies") if e[0] == "rating"]
    assert not [e for e in _find(rules, "ten stars") if e[0] == "rating"]  # out of 1..5


def test_sentiment_needs_a_movie_reference(rules):
    toks = words("i loved it")
    assert [(f.value, f.score) for f in rules.sentiment(toks, set(), refers_to_movie=False)] == [("5", 0.6)]
    assert rules.sentiment(words("i'd love a comedy"), set(), refers_to_movie=False) == []


def test_aliases_front_articles_spell_numbers_and_keep_alternatives():
    assert ("the", "godfather") in title_aliases("Godfather, The")
    assert ("godfather",) in title_aliases("Godfather, The")
    assert ("apollo", "thirteen") in title_aliases("Apollo 13")
    assert ("se7en",) in title_aliases("Seven (Se7en)")
    assert {("eight", "one", "two"), ("eight", "and", "a", "half")} <= set(title_aliases("8 1/2"))
    assert ("naked", "gun", "33", "and", "a", "third", "the", "final", "insult") in \
        title_aliases("Naked Gun 33 1/3: The Final Insult")
    matcher = TitleMatcher({1: CatalogItem(1, "8 1/2", 1963, ("Drama",))})
    for text in ("i loved eight and a half", "i loved 8 1/2"):
        assert [f.item_id for f, _ in matcher.find(words(text))] == [1], text


def test_an_alias_two_titles_share_goes_to_the_title_it_is_the_main_name_of():
    """"killer" is the main title of "Killer (Bulletproof Heart)" and only the alternative title, with its
    article dropped, of the lower-numbered "Die xue shuang xiong (Killer, The)"."""
    catalog = {1019: CatalogItem(1019, "Die xue shuang xiong (Killer, The)", 1989, ("Action",)),
               1275: CatalogItem(1275, "Killer (Bulletproof Heart)", 1994, ("Thriller",))}
    matcher = TitleMatcher(catalog)
    assert [f.item_id for f, _ in matcher.find(words("tell me about killer"))] == [1275]
    assert [f.item_id for f, _ in matcher.find(words("tell me about the killer"))] == [1019]
    assert [f.item_id for f, _ in matcher.find(words("is die xue shuang xiong any good"))] == [1019]


def test_abbreviations_in_titles_match_what_is_said_and_as_written():
    matcher = TitleMatcher({488: CatalogItem(488, "Sunset Blvd.", 1950, ("Film-Noir",)),
                            1: CatalogItem(1, "Mr. Holland's Opus", 1995, ("Drama",)),
                            2: CatalogItem(2, "Meet Me in St. Louis", 1944, ("Musical",))})
    for text, item_id in (("i hated sunset boulevard", 488), ("i hated Sunset Blvd.", 488),
                          ("tell me about mister holland's opus", 1), ("tell me about Mr. Holland's Opus", 1),
                          ("is meet me in saint louis any good", 2), ("is Meet Me in St. Louis any good", 2)):
        assert [(f.item_id, f.score) for f, _ in matcher.find(words(text))] == [(item_id, 1.0)], text


def test_an_ampersand_reads_as_and_in_titles_and_in_what_was_heard():
    matcher = TitleMatcher({301: CatalogItem(301, "In & Out", 1997, ("Comedy",))})
    assert ("in", "and", "out") in title_aliases("In & Out")
    for text in ("what year did In & Out come out", "what year did in and out come out"):
        assert [f.item_id for f, _ in matcher.find(words(text))] == [301], text
    assert [t.norm for t in words("rock & roll")] == ["rock", "and", "roll"]


@pytest.mark.parametrize(("text", "item_id"), [
    ("movies like fargo", 100), ("something like far go", 100), ("the god father", 127),
    ("i loved godfather", 127), ("apollo thirteen", 28), ("apollo 13", 28), ("se7en", 11),
    ("terminator two", 96), ("i loved heat", 273), ("when did heat come out", 273), ("toy storey", 1),
])
def test_titles_are_found_in_asr_style_text(matcher, text, item_id):
    found = matcher.find(words(text))
    assert [f.item_id for f, _ in found] == [item_id]


@pytest.mark.parametrize("text", [
    "it's a heat wave", "i like war movies", "one star", "i wanna watch a movie", "good morning",
])
def test_everyday_words_are_not_titles_without_a_cue(matcher, text):
    toks = words(text)
    claimed = frozenset({0, 1}) if text == "one star" else frozenset()
    assert matcher.find(toks, claimed=claimed) == []


def test_title_span_points_into_the_text(matcher):
    text = "something like The Godfather please"
    (found, span), = matcher.find(words(text))
    assert text[found.start:found.end] == "The Godfather"
    assert found.value == "Godfather, The" and found.score == 1.0


def test_extractor_only_scans_the_first_max_words(tmp_path):
    from services.nlp.extract import EntityExtractor

    catalog = tmp_path / "catalog.tsv"
    catalog.write_text("item_id\ttitle\tyear\tgenres\n100\tFargo\t1996\tCrime|Drama|Thriller\n", encoding="utf-8")
    ex = EntityExtractor(catalog, max_words=5)
    assert {(f.type, f.value) for f in ex.extract("movies like fargo")} == {("title", "Fargo")}
    assert ex.extract("one two three four five movies like fargo") == []


def _extract_one_reference(matcher: TitleMatcher, key: str):
    """The per-window search ``_fuzzy`` replaces: rapidfuzz ``extractOne`` over the key's length band."""
    ratio = matcher.min_score / (2 - matcher.min_score)
    lo = bisect.bisect_left(matcher._lengths, int(len(key) * ratio))
    hi = bisect.bisect_right(matcher._lengths, int(len(key) / ratio) + 1)
    best = process.extractOne(key, matcher._keys[lo:hi], scorer=fuzz.ratio, score_cutoff=matcher.min_score * 100)
    if best is None or matcher._sorted[lo + best[2]].needs_cue:
        return 0.0, None
    return best[1] / 100.0, matcher._sorted[lo + best[2]].key


def test_batched_fuzzy_search_equals_one_search_per_window():
    rng = random.Random(7)
    vocab = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 9))) for _ in range(400)]
    catalog = {i: CatalogItem(i, " ".join(rng.sample(vocab, rng.randint(1, 4))).title(), 1990, ("Drama",))
               for i in range(1, 600)}
    matcher = TitleMatcher(catalog)
    keys = []
    for key in matcher._keys:  # each alias with 0-3 random edits, so scores land on both sides of the floor
        chars = list(key)
        for _ in range(rng.randint(0, 3)):
            at = rng.randrange(len(chars))
            edit = rng.random()
            if edit < 0.4 and len(chars) > 1:
                del chars[at]
            elif edit < 0.8:
                chars.insert(at, rng.choice(string.ascii_lowercase))
            else:
                chars[at] = "e"
        keys.append("".join(chars))
    keys += ["".join(rng.sample(vocab, 2)) for _ in range(200)]  # mostly no match at all
    batched = []
    for start in range(0, len(keys), 13):
        batched += matcher._fuzzy([(0, 1, k) for k in keys[start:start + 13]])
    got = [(score, alias.key if alias else None) for score, alias in batched]
    want = [_extract_one_reference(matcher, k) for k in keys]
    assert got == want
    assert sum(1 for _, key in want if key) > len(keys) // 3  # the floor is actually exercised


_VERBS = {"loved", "love", "adored", "liked", "enjoyed", "hated", "hate", "disliked", "dislike"}


@pytest.mark.parametrize("word", sorted(w for w in SENTIMENT if w not in _NEGATIVE_PHRASES))
def test_every_sentiment_word_plain_and_negated(rules, word):
    """The opinion's own value, and turned around by a negation: never the plain value of a strong opinion
    (the orchestrator used to find 'liked' inside 'disliked' and store 4 stars)."""
    plain = f"i {word} fargo" if word in _VERBS else f"fargo was {word}"
    negated = f"i never {word} fargo" if word in _VERBS else f"fargo was not {word}"
    assert rules.sentiment(words(plain), set(), refers_to_movie=True)[0].value == str(SENTIMENT[word])
    got = int(rules.sentiment(words(negated), set(), refers_to_movie=True)[0].value)
    assert got == (2 if SENTIMENT[word] >= 3 else 3), negated


@pytest.mark.parametrize(("text", "stars"), [
    ("i disliked fargo", 2), ("i did not like fargo", 2), ("i didn't like fargo", 2), ("i don't like it", 2),
    ("i am not a fan of it", 2), ("i really liked it", 4), ("i didn't enjoy heat", 2),
])
def test_negative_phrases(rules, text, stars):
    assert rules.sentiment(words(text), set(), refers_to_movie=True)[0].value == str(stars)
