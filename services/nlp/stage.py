"""The NLP stage's wiring: loads MiniLM through the model repository, fits the intent head, builds the batcher
and registers the servicer (``servicer.py``); the model logic lives in the other modules of this folder."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import grpc

from engines.base import Engine
from engines.batcher import DynamicBatcher
from engines.repository import create_engines
from protos import nlp_pb2, nlp_pb2_grpc
from services.common import Stage, StageSettings, options_to
from services.common.stage import announce, model_repository
from services.nlp.config import NlpConfig
from services.nlp.encoder import embed_ids, load_tokenizer, tokenize
from services.nlp.entities import DATA_DIR
from services.nlp.extract import EntityExtractor
from services.nlp.servicer import UnderstanderServicer
from services.nlp.understand import (
    Understanding,
    fit_classifier,
    prepare,
    understand_batch,
    understand_prepared,
)

log = logging.getLogger(__name__)


class NlpStage(Stage):
    """Loads MiniLM, fits the intent head on the packaged examples, and serves ``voxpipe.v1.Understander``."""

    name = "nlp"
    service_names = (nlp_pb2.DESCRIPTOR.services_by_name["Understander"].full_name,)

    def __init__(self, settings: StageSettings, config: NlpConfig | None = None) -> None:
        self.config = config or options_to(NlpConfig, settings.options, "nlp")
        self.repo = model_repository(settings)
        self._batcher: DynamicBatcher[str, Understanding] | None = None
        self._engines: list[Engine] = []

    @property
    def batcher(self) -> DynamicBatcher[str, Understanding]:
        if self._batcher is None:
            raise RuntimeError("nlp stage used before start()")
        return self._batcher

    def load(self) -> None:
        """Load the engine(s), build entity matchers, fit the intent head, create the batcher."""
        model = self.repo.resolve(self.config.model)
        max_seq_tokens = int(model.config.metadata.get("max_seq_tokens", 256))
        self._engines = engines = create_engines(model)
        tokenizer = load_tokenizer(model.folder, max_seq_tokens)  # Rust: thread-safe, releases the GIL
        self._tok = tok = partial(tokenize, tokenizer)
        extractor = EntityExtractor(model.folder / "catalog.tsv", title_min_score=self.config.title_min_score,
                                    max_words=self.config.max_entity_words)
        classifier = fit_classifier(self._intents_path(), extractor,
                                    lambda texts: embed_ids(engines[0], tok(texts)))
        log.info("nlp: intent head fitted; unknown gate %s", classifier.calibration)
        announce(self.name, model)
        if model.serving.device == "cuda":  # string work in the batcher's host threads, the GPU thread runs MiniLM
            fns = [partial(understand_prepared, classifier, partial(embed_ids, e)) for e in engines]
            self._batcher = DynamicBatcher(model.name, fns, model.serving.batching, stage=self.name,
                                           prepare=lambda text: prepare(extractor, tok, [text])[0])
        else:
            fns = [partial(understand_batch, extractor, classifier, tok, partial(embed_ids, e)) for e in engines]
            self._batcher = DynamicBatcher(model.name, fns, model.serving.batching, stage=self.name)

    def engines(self) -> Sequence[Engine]:
        return self._engines

    def warm(self) -> None:
        for engine in self._engines:
            embed_ids(engine, self._tok(["warm up the encoder", "hi"]))

    def _intents_path(self) -> Path:
        return Path(self.config.intents_path) if self.config.intents_path else DATA_DIR / "intents.json"

    def batchers(self) -> Sequence[DynamicBatcher]:
        return (self._batcher,) if self._batcher else ()

    def register(self, server: grpc.aio.Server) -> None:
        nlp_pb2_grpc.add_UnderstanderServicer_to_server(UnderstanderServicer(self), server)
