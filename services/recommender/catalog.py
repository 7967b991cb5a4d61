"""The item catalogue beside the recommender model: metadata, filter masks, popularity, vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from services.common import InvalidArgumentError, NotFoundError
from services.common.catalog import GENRES, ItemFilter, load_items


class Catalog:
    """Items by row (the graph's item index) and by MovieLens id, with precomputed filter masks."""

    def __init__(self, folder: Path) -> None:
        self.items = load_items(folder / "items.tsv")
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
        first, last = self.items[0].item_id, self.items[-1].item_id
        if row is None and first <= item_id <= last:
            raise NotFoundError(f"{field}={item_id} is not in the catalogue: MovieLens-100K has no item "
                                f"{item_id} (ids run {first}..{last} with gaps)")
        if row is None:
            raise NotFoundError(f"{field}={item_id} is not in the catalogue (MovieLens-100K ids {first}..{last})")
        if not self.servable[row]:
            raise NotFoundError(f"{field}={item_id} ({self.items[row].title!r}) is in MovieLens-100K but not served: "
                                "its MovieLens-100K entry has no release date")
        return row

    def mask(self, item_filter: ItemFilter, *, exclude_rows: set[int]) -> np.ndarray:
        """Servable items the filter admits, less ``exclude_rows`` (seen in the session, the "similar to" item)."""
        allowed = self.servable & item_filter.mask(item_ids=self.item_ids, years=self.years,
                                                   genre_masks=self.genre_masks)
        if exclude_rows:
            allowed[list(exclude_rows)] = False
        return allowed
