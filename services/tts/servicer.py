"""The ``Synthesizer`` gRPC servicer and the TTS stage that loads its voices."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from protos import common_pb2, tts_pb2, tts_pb2_grpc
from services.common import deadline_of
from services.common.calls import CallServer
from services.tts.synthesis import chunk_pcm

if TYPE_CHECKING:
    from services.tts.stage import TtsStage


log = logging.getLogger(__name__)



class SynthesizerServicer(tts_pb2_grpc.SynthesizerServicer):
    """Thin gRPC edge over :class:`SpeechSynthesizer`."""

    def __init__(self, stage: TtsStage) -> None:
        self._stage = stage
        self._calls = CallServer(stage.name, stage.service_names[0], "Synthesize", self.Synthesize,
                                 tts_pb2.SynthesizeCallReply, streaming=True)

    async def SynthesizeCalls(self, request_iterator, context: grpc.aio.ServicerContext
                              ) -> AsyncIterator[tts_pb2.SynthesizeCallReply]:
        async for reply in self._calls.serve(request_iterator):
            yield reply

    async def Synthesize(self, request: tts_pb2.SynthesizeRequest, context: grpc.aio.ServicerContext
                         ) -> AsyncIterator[tts_pb2.SynthesizeResponse]:
        synthesizer = self._stage.synthesizer
        validated = synthesizer.validate(request.text, voice=request.voice, sample_rate_hz=request.sample_rate_hz,
                                         length_scale=request.length_scale)
        max_chunk_ms = self._stage.config.max_chunk_ms
        async for piece in synthesizer.stream(validated, deadline_s=deadline_of(context)):
            ends_stream = piece.final and piece.index == piece.count - 1
            # Pieces with no audio (a sentence of only emoji, say) send nothing, unless the stream ends
            # there: it must still end with a chunk marked last.
            if piece.pcm.size == 0 and not ends_stream:
                continue
            chunks = chunk_pcm(piece.pcm, piece.sample_rate_hz, max_chunk_ms)
            for i, pcm in enumerate(chunks):
                yield tts_pb2.SynthesizeResponse(
                    encoding=common_pb2.LINEAR16,
                    audio=pcm.astype("<i2", copy=False).tobytes(),
                    sample_rate_hz=piece.sample_rate_hz,
                    text_start=piece.start,
                    text_end=piece.end,
                    sentence_index=piece.index,
                    last=ends_stream and i == len(chunks) - 1,
                )

    async def ListVoices(self, request: tts_pb2.ListVoicesRequest, context: grpc.aio.ServicerContext
                         ) -> tts_pb2.ListVoicesResponse:
        synthesizer = self._stage.synthesizer
        voices = [
            tts_pb2.Voice(name=r.voice.name, language_code=r.voice.language_code,
                          native_sample_rate_hz=r.voice.sample_rate_hz, licence=r.voice.licence)
            for r in synthesizer.voices.values()
        ]
        return tts_pb2.ListVoicesResponse(voices=voices, default_voice=synthesizer.default_voice)
