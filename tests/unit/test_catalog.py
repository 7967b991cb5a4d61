"""The catalogue's one item type, title formatter and filter rule (services/common/catalog.py)."""

from __future__ import annotations

import numpy as np
import pytest

from protos import recommender_pb2
from services.common import InvalidArgumentError
from services.common.catalog import CatalogItem, ItemFilter, display_title, load_items, spoken_title


@pytest.mark.parametrize(("title", "shown", "spoken"), [
    ("Godfather, The", "The Godfather", "The Godfather"),
    ("Fargo", "Fargo", "Fargo"),
    ("Family Thing, A", "A Family Thing", "A Family Thing"),
    ("Seven (Se7en)", "Seven (Se7en)", "Seven"),
    ("Blue Angel, The (Blaue Engel, Der)", "The Blue Angel (Der Blaue Engel)", "The Blue Angel"),
    # The recommender's own reasons said "similar to Boot, Das" while the orchestrator said "Das Boot".
    ("Boot, Das", "Das Boot", "Das Boot"),
    ("Misérables, Les", "Les Misérables", "Les Misérables"),
    ("Double vie de Véronique, La (Double Life of Veronique, The)",
     "La Double vie de Véronique (The Double Life of Veronique)", "La Double vie de Véronique"),
    ("Haunted World of Edward D. Wood Jr., The", "The Haunted World of Edward D. Wood Jr.",
     "The Haunted World of Edward D. Wood Jr."),
])
def test_one_title_formatter_for_display_and_speech(title, shown, spoken):
    assert display_title(title) == shown
    assert spoken_title(title) == spoken
    assert spoken_title(shown) == spoken  # a reply may speak a title it was given for display


def test_spoken_title_drops_a_year_suffix():
    assert spoken_title("Shawshank Redemption, The (1994)") == "The Shawshank Redemption"


def test_load_items_reads_both_build_outputs(tmp_path):
    (tmp_path / "catalog.tsv").write_text("item_id\ttitle\tyear\tgenres\n1\tToy Story\t1995\tAnimation|Comedy\n",
                                          encoding="utf-8")
    (tmp_path / "items.tsv").write_text("item_id\ttitle\tyear\tgenres\tcount\tmean_rating\n"
                                        "1\tToy Story\t1995\tAnimation|Comedy\t452\t3.878\n", encoding="utf-8")
    nlp, = load_items(tmp_path / "catalog.tsv")
    rec, = load_items(tmp_path / "items.tsv")
    assert nlp == CatalogItem(1, "Toy Story", 1995, ("Animation", "Comedy"))
    assert rec == CatalogItem(1, "Toy Story", 1995, ("Animation", "Comedy"), 452, 3.878)


ITEMS = [CatalogItem(1, "Star Wars", 1977, ("Action", "Sci-Fi")), CatalogItem(2, "Fargo", 1996, ("Crime",)),
         CatalogItem(3, "Liar Liar", 1997, ("Comedy",)), CatalogItem(4, "Clerks", 1994, ("Comedy",))]


@pytest.mark.parametrize("rule", [
    ItemFilter(), ItemFilter(genres=frozenset({"Comedy"})), ItemFilter(year_min=1990, year_max=1996),
    ItemFilter(genres=frozenset({"Comedy", "Crime"}), excluded=frozenset({3})), ItemFilter(year_max=1980),
])
def test_item_filter_mask_and_admits_agree(rule):
    genres = ("Action", "Sci-Fi", "Crime", "Comedy")
    mask = rule.mask(item_ids=np.array([i.item_id for i in ITEMS]), years=np.array([i.year for i in ITEMS]),
                     genre_masks={g: np.array([g in i.genres for i in ITEMS]) for g in genres})
    assert mask.tolist() == [rule.admits(i.item_id, i.year, i.genres) for i in ITEMS]


def test_item_filter_of_names_the_bad_value():
    with pytest.raises(InvalidArgumentError, match="unknown genre"):
        ItemFilter.of(recommender_pb2.Filters(genres=["Vaporwave"]))
    with pytest.raises(InvalidArgumentError, match="year_min=2000 is after filters.year_max=1990"):
        ItemFilter.of(recommender_pb2.Filters(year_min=2000, year_max=1990))

