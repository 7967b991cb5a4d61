"""The recommender stage's wiring: loads the ranking graph and the catalogue through the model repository,
keeps the sessions, builds the batcher and registers the servicer (``servicer.py``); the ranking logic lives in
``ranking.py``, the catalogue in ``catalog.py``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

import grpc
import numpy as np

from engines.base import Engine
from engines.batcher import DynamicBatcher
from engines.repository import create_engines
from protos import recommender_pb2, recommender_pb2_grpc
from services.common import Stage, StageSettings, options_to
from services.common.stage import announce, model_repository
from services.recommender import ranking
from services.recommender.catalog import Catalog
from services.recommender.config import RecommenderConfig
from services.recommender.servicer import RecommenderServicer
from services.recommender.sessions import SessionStore

log = logging.getLogger(__name__)


class RecommenderStage(Stage):
    """Loads the graph and catalogue, and serves ``voxpipe.v1.Recommender``."""

    name = "recommender"
    service_names = (recommender_pb2.DESCRIPTOR.services_by_name["Recommender"].full_name,)

    def __init__(self, settings: StageSettings, config: RecommenderConfig | None = None) -> None:
        self.config = config or options_to(RecommenderConfig, settings.options, "recommender")
        self.repo = model_repository(settings)
        self.sessions = SessionStore(ttl_s=settings.session_ttl_s, max_sessions=self.config.max_sessions,
                                     max_ratings=self.config.max_ratings_per_session,
                                     max_shown=self.config.max_shown_per_session)
        self._batcher: DynamicBatcher | None = None
        self._catalog: Catalog | None = None
        self._engines: list[Engine] = []

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            raise RuntimeError("recommender stage used before start()")
        return self._catalog

    @property
    def batcher(self) -> DynamicBatcher:
        if self._batcher is None:
            raise RuntimeError("recommender stage used before start()")
        return self._batcher

    def load(self) -> None:
        """Load the graph (one engine per instance), the catalogue and vectors; build the batcher."""
        model = self.repo.resolve(self.config.model)
        meta = model.config.metadata
        if int(meta["top_k"]) < self.config.max_k:
            raise ValueError(f"max_k={self.config.max_k} exceeds the graph's TopK {meta['top_k']}")
        self.blocks = ranking.Blocks.from_metadata(meta)
        self.blend = dict(meta["blend"])
        self._catalog = Catalog(model.folder)
        self._engines = engines = create_engines(model)
        announce(self.name, model)
        self._batcher = DynamicBatcher(model.name, [partial(ranking.score_batch, e) for e in engines],
                                       model.serving.batching, stage=self.name)
        log.info("recommender: %d items, query dim %d, %d instance(s)", len(self._catalog), self.blocks.dim,
                 len(engines))

    def engines(self) -> Sequence[Engine]:
        return self._engines

    def warm(self) -> None:
        query = (np.zeros(self.blocks.dim, dtype=np.float32), self.catalog.servable)
        for engine in self._engines:
            ranking.score_batch(engine, [query])

    def batchers(self) -> Sequence[DynamicBatcher]:
        return (self._batcher,) if self._batcher is not None else ()

    def register(self, server: grpc.aio.Server) -> None:
        recommender_pb2_grpc.add_RecommenderServicer_to_server(RecommenderServicer(self), server)
