"""The NLP stage: MiniLM embeddings, intents and movie entities (``voxpipe.v1.Understander``)."""

from services.common import StageSettings
from services.nlp.config import NlpConfig
from services.nlp.entities import Found
from services.nlp.extract import EntityExtractor
from services.nlp.intents import INTENTS, UNKNOWN, IntentClassifier, IntentData, IntentResult
from services.nlp.servicer import UnderstanderServicer
from services.nlp.stage import NlpStage
from services.nlp.titles import TitleMatcher, load_catalog
from services.nlp.understand import Understanding, understand_batch


def create_stage(settings: StageSettings) -> NlpStage:
    """The NLP stage for ``settings`` (its ``options`` are the ``[nlp]`` TOML section)."""
    return NlpStage(settings)


__all__ = ["INTENTS", "UNKNOWN", "EntityExtractor", "Found", "IntentClassifier", "IntentData",
           "IntentResult", "NlpConfig", "NlpStage", "TitleMatcher", "UnderstanderServicer", "Understanding",
           "understand_batch", "create_stage", "load_catalog"]
