"""The item catalogue beside the recommender model: metadata, filter masks, popularity, vectors."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.common import InvalidArgumentError, NotFoundError

GENRES = ("Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
          "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western", "unknown")


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """One movie as the recommender knows it."""

    item_id: int
    title: str
    year: int
    genres: tuple[str, ...]
    count: int
    mean_rating: float


class Catalog:
    """Items by row (the graph's item index) and by MovieLens id, with precomputed filter masks."""

    def __init__(self, folder: Path) -> None:
        with (folder / "items.tsv").open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        self.items = [CatalogItem(int(r["item_id"]), r["title"], int(r["year"]),
                                  tuple(g for g in r["genres"].split("|") if g), int(r["count"]),
                                  float(r["mean_rating"])) for r in rows]
        self.row_of = {item.item_id: row for row, item in enumerate(self.items)}
        self.item_ids = np.array([i.item_id for i in self.items], dtype=np.int64)
        self.years = np.array([i.year for i in self.items], dtype=np.int64)
        self.genre_masks = {g: np.array([g in i.genres for i in self.items]) for g in GENRES}
        # The one placeholder item (id 267: no title, no year) is never recommended.
        self.servable = np.array([bool(i.year) for i in self.items])
        counts = np.array([i.count for i in self.items], dtype=np.float64)
        means = np.array([i.mean_rating for i in self.items], dtype=np.float64)
        # Most-rated first, ties by mean rating: the popularity list and fallback.
        self.popularity_order = np.lexsort((-means, -counts))
        self.popularity_score = (np.log1p(counts) / np.log1p(counts).max()).astype(np.float32)
        vectors = np.load(folder / "vectors.npz")
        self.factors = vectors["factors"]
        self.gram = vectors["gram"]
        self.factors_normalized = vectors["factors_normalized"]
        self.text = vectors["text"]
        self.alpha, self.regularization = (float(x) for x in vectors["als"])

    def __len__(self) -> int:
        return len(self.items)

    def row(self, item_id: int, *, field: str = "item_id") -> int:
        """Row of a MovieLens id; raises ``NotFoundError``/``InvalidArgumentError`` naming the bad value."""
        if item_id <= 0:
            raise InvalidArgumentError(f"{field}={item_id} is invalid: item ids are positive")
        row = self.row_of.get(item_id)
        if row is None or not self.servable[row]:
            raise NotFoundError(f"{field}={item_id} is not in the catalogue "
                                f"(MovieLens-100K ids {self.items[0].item_id}..{self.items[-1].item_id})")
        return row

    def mask(self, *, genres: list[str], year_min: int, year_max: int, exclude_rows: set[int]) -> np.ndarray:
        """Allowed items: any of ``genres`` (all if empty), year in range (0 = open), not excluded."""
        unknown = [g for g in genres if g not in self.genre_masks]
        if unknown:
            raise InvalidArgumentError(f"filters.genres has unknown genre(s) {unknown}; use {', '.join(GENRES)}")
        if year_min and year_max and year_min > year_max:
            raise InvalidArgumentError(f"filters.year_min={year_min} is after filters.year_max={year_max}")
        allowed = self.servable.copy()
        if genres:
            allowed &= np.logical_or.reduce([self.genre_masks[g] for g in genres])
        if year_min:
            allowed &= self.years >= year_min
        if year_max:
            allowed &= self.years <= year_max
        if exclude_rows:
            allowed[list(exclude_rows)] = False
        return allowed
