"""The NLP stage: ``voxpipe.v1.Understander`` over the MiniLM engine, the intent head and entity rules."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from protos import nlp_pb2, nlp_pb2_grpc
from services.common import deadline_of
from services.common.calls import CallServer
from services.common.ids import validate_session_id
from services.nlp.text import normalize_text

if TYPE_CHECKING:
    from services.nlp.stage import NlpStage


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
