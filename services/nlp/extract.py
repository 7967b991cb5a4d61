"""All entities of one utterance: titles first (they claim their words), then genre/decade/year/rating rules."""

from __future__ import annotations

from pathlib import Path

from services.nlp.entities import EntityRules, Found, load_genres
from services.nlp.text import words
from services.nlp.titles import ARTICLES, GENERIC_AFTER, TitleMatcher, load_catalog

# Words that never begin or end a short title window: they belong to the request, not to a title.
_FILLERS = frozenset({*ARTICLES, *GENERIC_AFTER, "something", "anything", "me", "some", "please"})


class EntityExtractor:
    """Finds title, genre, decade, year and rating entities in normalised text."""

    def __init__(self, catalog_path: Path, genres_path: Path | None = None, *,
                 title_min_score: float = 0.88, max_words: int = 64) -> None:
        # Only the first ``max_words`` words are searched: a spoken turn is far shorter, and a 2000-character
        # text would otherwise cost ~130 ms of title matching (GIL held) instead of ~1 ms.
        self.max_words = max_words
        self.catalog = load_catalog(catalog_path)
        genre_phrases = load_genres(genres_path)
        self.rules = EntityRules(genre_phrases)
        self.titles = TitleMatcher(self.catalog, min_score=title_min_score)
        single_genre_words = {k[0] for k in genre_phrases if len(k) == 1}
        self._blocked = frozenset(_FILLERS | single_genre_words)

    def extract(self, text: str) -> list[Found]:
        """Entities of ``text`` (already normalised), ordered by position."""
        tokens = words(text)[: self.max_words]
        claimed: set[int] = set()
        found = self.rules.explicit_ratings(text, tokens, claimed)
        blocked = self._blocked
        for entity, span in self.titles.find(tokens, blocked, claimed=frozenset(claimed)):
            claimed.update(span)
            found.append(entity)
        has_title = any(f.type == "title" for f in found)
        found += self.rules.find(text, tokens, claimed, refers_to_movie=has_title)
        if not any(f.type == "rating" for f in found):
            found += self.rules.sentiment(tokens, claimed, refers_to_movie=has_title)
        return sorted(found, key=lambda f: (f.start, f.type))
