"""The NLP stage: ``voxpipe.v1.Understander`` over the MiniLM engine, the intent head and entity rules."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from functools import partial
from pathlib import Path

import grpc
import numpy as np

from engines.batcher import DynamicBatcher
from engines.repository import create_engines
from protos import nlp_pb2, nlp_pb2_grpc
from services.common import Stage, StageSettings, deadline_of, options_to
from services.common.calls import CallServer
from services.common.stage import announce, model_repository
from services.nlp.config import NlpConfig
from services.nlp.encoder import embed_ids, load_tokenizer, tokenize
from services.nlp.entities import DATA_DIR
from services.nlp.extract import EntityExtractor
from services.nlp.intents import IntentClassifier, IntentData
from services.nlp.text import normalize_text, validate_session_id
from services.nlp.understand import (
    Understanding,
    intent_text,
    prepare,
    understand_batch,
    understand_prepared,
)

log = logging.getLogger(__name__)


class UnderstanderServicer(nlp_pb2_grpc.UnderstanderServicer):
    """Thin gRPC edge: validate, normalise, run the pipeline, build the response."""

    def __init__(self, stage: NlpStage) -> None:
        self._stage = stage
        self._calls = CallServer(stage.name, stage.service_names[0], "Understand", self.Understand,
                                 nlp_pb2.UnderstandCallReply)

    async def UnderstandCalls(self, request_iterator, context: grpc.aio.ServicerContext
                              ) -> AsyncIterator[nlp_pb2.UnderstandCallReply]:
        async for reply in self._calls.serve(request_iterator):
            yield reply

    async def Understand(self, request: nlp_pb2.UnderstandRequest, context: grpc.aio.ServicerContext
                         ) -> nlp_pb2.UnderstandResponse:
        validate_session_id(request.session_id)
        text = normalize_text(request.text, max_text_chars=self._stage.config.max_text_chars)
        result = await self._stage.batcher.submit(text, deadline_s=deadline_of(context))
        entities = [
            nlp_pb2.Entity(type=e.type, value=e.value, text=text[e.start:e.end], start=e.start, end=e.end,
                           score=e.score, item_id=e.item_id)
            for e in result.entities
        ]
        return nlp_pb2.UnderstandResponse(
            intent=result.intent.intent, confidence=result.intent.confidence, entities=entities,
            embedding=result.embedding.tolist(), normalized_text=result.normalized_text,
        )


class NlpStage(Stage):
    """Loads MiniLM, fits the intent head on the packaged examples, and serves ``voxpipe.v1.Understander``."""

    name = "nlp"
    service_names = (nlp_pb2.DESCRIPTOR.services_by_name["Understander"].full_name,)

    def __init__(self, settings: StageSettings, config: NlpConfig | None = None) -> None:
        self.config = config or options_to(NlpConfig, settings.options, "nlp")
        self.repo = model_repository(settings)
        self._batcher: DynamicBatcher[str, Understanding] | None = None

    @property
    def batcher(self) -> DynamicBatcher[str, Understanding]:
        if self._batcher is None:
            raise RuntimeError("nlp stage used before start()")
        return self._batcher

    def load(self) -> None:
        """Load and warm the engine(s), build entity matchers, fit the intent head, create the batcher."""
        model = self.repo.resolve(self.config.model)
        max_seq_tokens = int(model.config.metadata.get("max_seq_tokens", 256))
        engines = create_engines(model)
        tokenizer = load_tokenizer(model.folder, max_seq_tokens)  # Rust: thread-safe, releases the GIL
        tok = partial(tokenize, tokenizer)
        for engine in engines:
            engine.warmup()
            embed_ids(engine, tok(["warm up the encoder", "hi"]))
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

    def _intents_path(self) -> Path:
        return Path(self.config.intents_path) if self.config.intents_path else DATA_DIR / "intents.json"

    def batchers(self) -> Sequence[DynamicBatcher]:
        return (self._batcher,) if self._batcher else ()

    def register(self, server: grpc.aio.Server) -> None:
        nlp_pb2_grpc.add_UnderstanderServicer_to_server(UnderstanderServicer(self), server)


def fit_classifier(path: Path, extractor: EntityExtractor, embed_many) -> IntentClassifier:
    """Fit the intent head on ``path``'s examples (titles masked as at run time), in batches of 32."""
    data = IntentData.load(path)

    def embed(texts: list[str]) -> np.ndarray:
        masked = [intent_text(t, extractor.extract(t)) for t in texts]
        return np.concatenate([np.stack(embed_many(masked[i:i + 32])) for i in range(0, len(masked), 32)])

    examples = {intent: embed(texts) for intent, texts in data.examples.items()}
    ood = embed(data.out_of_domain) if data.out_of_domain else np.zeros((0, 384), dtype=np.float32)
    return IntentClassifier().fit(examples, ood)
