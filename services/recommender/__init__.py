"""The recommender stage: implicit ALS + MiniLM item texts over MovieLens-100K (``voxpipe.v1.Recommender``)."""

from services.common import StageSettings
from services.recommender.catalog import GENRES, Catalog, CatalogItem
from services.recommender.config import RecommenderConfig
from services.recommender.servicer import RecommenderServicer, RecommenderStage
from services.recommender.sessions import Session, SessionStore


def create_stage(settings: StageSettings) -> RecommenderStage:
    """The recommender stage for ``settings`` (its ``options`` are the ``[recommender]`` TOML section)."""
    return RecommenderStage(settings)


__all__ = ["GENRES", "Catalog", "CatalogItem", "RecommenderConfig", "RecommenderServicer", "RecommenderStage",
           "Session", "SessionStore", "create_stage"]
