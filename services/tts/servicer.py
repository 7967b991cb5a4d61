"""The ``Synthesizer`` gRPC servicer and the TTS stage that loads its voices."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence

import grpc

from engines.batcher import DynamicBatcher
from engines.repository import create_engines
from protos import common_pb2, tts_pb2, tts_pb2_grpc
from services.common import Stage, StageSettings, deadline_of, options_to
from services.common.calls import CallServer
from services.common.stage import announce, model_repository
from services.tts.batching import decode_group, encode_group, make_decoder_fn, make_encoder_fn, voice_encoder
from services.tts.config import TtsConfig
from services.tts.synthesis import SpeechSynthesizer, VoiceRuntime, chunk_pcm
from services.tts.voice import load_voice

log = logging.getLogger(__name__)

_WARMUP_TEXT = "Hello, this is a warm up sentence."


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


class TtsStage(Stage):
    """Loads the configured voice, warms it, and serves ``voxpipe.v1.Synthesizer``."""

    name = "tts"
    service_names = (tts_pb2.DESCRIPTOR.services_by_name["Synthesizer"].full_name,)

    def __init__(self, settings: StageSettings, config: TtsConfig | None = None) -> None:
        self.config = config or options_to(TtsConfig, settings.options, "tts")
        self.repo = model_repository(settings)
        self._synthesizer: SpeechSynthesizer | None = None
        self._batchers: list[DynamicBatcher] = []

    @property
    def synthesizer(self) -> SpeechSynthesizer:
        if self._synthesizer is None:
            raise RuntimeError("tts stage used before start()")
        return self._synthesizer

    def load(self) -> None:
        """Load the voice's encoder and decoder instances, warm them on a real sentence, build the batchers."""
        voice = load_voice(self.repo.folder(f"tts-{self.config.voice}"))
        names = {part: f"tts-{self.config.voice}-{part}" for part in ("encoder", "decoder")}
        models = {part: self.repo.resolve(name) for part, name in names.items()}
        meta = models["decoder"].config.metadata
        hop, context = int(meta["hop_length"]), int(meta["decoder_context_frames"])
        engines = {part: create_engines(model) for part, model in models.items()}
        engines["encoder"] = [voice_encoder(e) for e in engines["encoder"]]
        warm_ids = voice.id_map.to_ids(voice.phonemizer.phonemize(_WARMUP_TEXT)).ids
        for engine in (*engines["encoder"], *engines["decoder"]):
            engine.warmup()
        for encoder in engines["encoder"]:
            [z] = encode_group(encoder, [warm_ids], voice.scales.as_tuple(), hop)
        for decoder in engines["decoder"]:
            decode_group(decoder, [z, z[:, : z.shape[-1] // 2]], hop)
        for model in models.values():
            announce(self.name, model)
        encoder = DynamicBatcher(names["encoder"], [make_encoder_fn(e, hop) for e in engines["encoder"]],
                                 models["encoder"].serving.batching, stage=self.name)
        decoder = DynamicBatcher(names["decoder"], [make_decoder_fn(e, hop) for e in engines["decoder"]],
                                 models["decoder"].serving.batching, stage=self.name)
        self._batchers = [encoder, decoder]
        runtime = VoiceRuntime(voice=voice, encoder=encoder, decoder=decoder, hop_length=hop, context_frames=context)
        self._synthesizer = SpeechSynthesizer({voice.name: runtime}, self.config)
        log.info("tts: voice %s loaded, first audio after %d frames", voice.name, self.config.first_audio_frames)

    def batchers(self) -> Sequence[DynamicBatcher]:
        return tuple(self._batchers)

    def register(self, server: grpc.aio.Server) -> None:
        tts_pb2_grpc.add_SynthesizerServicer_to_server(SynthesizerServicer(self), server)
