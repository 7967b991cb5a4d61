"""The recommender stage: implicit ALS + MiniLM item texts over MovieLens-100K (``voxpipe.v1.Recommender``)."""

from services.common import StageSettings
from services.recommender.catalog import Catalog
from services.recommender.config import RecommenderConfig
from services.recommender.servicer import RecommenderServicer
from services.recommender.sessions import Session, SessionStore
from services.recommender.stage import RecommenderStage


def create_stage(settings: StageSettings) -> RecommenderStage:
    """The recommender stage for ``settings`` (its ``options`` are the ``[recommender]`` TOML section)."""
    return RecommenderStage(settings)


__all__ = ["Catalog", "RecommenderConfig", "RecommenderServicer", "RecommenderStage",
           "Session", "SessionStore", "create_stage"]
