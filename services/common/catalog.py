"""The movie catalogue as every stage sees it: one item type, one loader, one filter rule, one title formatter.

The NLP build writes ``catalog.tsv`` (item_id, title, year, genres) and the recommender build ``items.tsv``
(the same columns, then the rating count and mean); both are read by ``load_items``. Titles are MovieLens
titles with the year already split off ("Godfather, The"; "Blue Angel, The (Blaue Engel, Der)").
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.common.errors import InvalidArgumentError, shown

GENRES = ("Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
          "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western", "unknown")
# Articles MovieLens moves behind the title ("Usual Suspects, The"; "Cité des enfants perdus, La").
TRAILING_ARTICLES = ("The", "A", "An", "Les", "La", "Le", "Il", "El", "Der", "Die", "Das", "Det")
_TRAILING_ARTICLE = re.compile(r"(?P<body>.+), (?P<article>" + "|".join(TRAILING_ARTICLES) + r")")
_BRACKETED = re.compile(r"\s*\(([^)]*)\)")


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """One MovieLens-100K movie; ``count`` and ``mean_rating`` are 0 where the build output has no ratings."""

    item_id: int
    title: str
    year: int  # 0 for the one placeholder item (id 267), which is never recommended or matched
    genres: tuple[str, ...]
    count: int = 0
    mean_rating: float = 0.0


def load_items(path: Path) -> list[CatalogItem]:
    """Items of a ``catalog.tsv``/``items.tsv`` build output, in file order (the recommender's row order)."""
    with path.open(encoding="utf-8", newline="") as f:
        return [CatalogItem(int(r["item_id"]), r["title"], int(r["year"]), tuple(g for g in r["genres"].split("|") if g),
                            int(r.get("count") or 0), float(r.get("mean_rating") or 0.0))
                for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]


# --- titles -------------------------------------------------------------------------------------------------

def title_parts(title: str) -> tuple[str, list[str]]:
    """The main title and its bracketed alternatives: "Seven (Se7en)" -> ("Seven", ["Se7en"])."""
    return _BRACKETED.sub("", title).strip(), [a.strip() for a in _BRACKETED.findall(title)]


def front_article(name: str) -> str:
    """One title without brackets, article in front: "Godfather, The" -> "The Godfather"."""
    m = _TRAILING_ARTICLE.fullmatch(name.strip())
    return f"{m['article']} {m['body']}" if m else name.strip()


def display_title(title: str) -> str:
    """How a reply shows a title: "Blue Angel, The (Blaue Engel, Der)" -> "The Blue Angel (Der Blaue Engel)"."""
    main, alternatives = title_parts(title)
    return " ".join([front_article(main), *(f"({front_article(a)})" for a in alternatives)]) if main else title.strip()


def spoken_title(title: str) -> str:
    """How a reply says a title: the displayed main title, no alternatives or year ("Seven (Se7en)" -> "Seven").

    Takes catalogue or display titles alike ("Shawshank Redemption, The (1994)", "The Blue Angel (Der Blaue
    Engel)"), so a reply can speak whatever title it was given.
    """
    main, _ = title_parts(title)
    return front_article(main) if main else title.strip()


# --- filters ------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ItemFilter:
    """Which items a recommendation may name: any of ``genres`` (all when empty), ``year_min``..``year_max``
    (0 = open), not in ``excluded`` (item ids). The recommender applies it to the whole catalogue at once
    (``mask``); the orchestrator's popularity fallback to the few items it caches (``admits``)."""

    genres: frozenset[str] = frozenset()
    year_min: int = 0
    year_max: int = 0
    excluded: frozenset[int] = frozenset()

    @classmethod
    def of(cls, filters) -> ItemFilter:
        """From a ``recommender_pb2.Filters`` message; raises ``InvalidArgumentError`` naming a bad value."""
        unknown = [g for g in filters.genres if g not in GENRES]
        if unknown:
            raise InvalidArgumentError(f"filters.genres has unknown genre(s) {shown(unknown, 120)}; use {', '.join(GENRES)}")
        if filters.year_min and filters.year_max and filters.year_min > filters.year_max:
            raise InvalidArgumentError(f"filters.year_min={filters.year_min} is after filters.year_max={filters.year_max}")
        return cls(genres=frozenset(filters.genres), year_min=filters.year_min, year_max=filters.year_max,
                   excluded=frozenset(filters.exclude_item_ids))

    def admits(self, item_id: int, year: int, genres) -> bool:
        return (item_id not in self.excluded and (not self.genres or not self.genres.isdisjoint(genres))
                and (not self.year_min or year >= self.year_min) and (not self.year_max or year <= self.year_max))

    def mask(self, *, item_ids: np.ndarray, years: np.ndarray, genre_masks: dict[str, np.ndarray]) -> np.ndarray:
        """``admits`` for every catalogue row at once."""
        allowed = np.ones(len(item_ids), dtype=bool)
        if self.genres:
            allowed &= np.logical_or.reduce([genre_masks[g] for g in self.genres])
        if self.year_min:
            allowed &= years >= self.year_min
        if self.year_max:
            allowed &= years <= self.year_max
        if self.excluded:
            allowed &= ~np.isin(item_ids, np.fromiter(self.excluded, dtype=np.int64))
        return allowed
