"""The TTS stage's wiring: loads the Piper voice's encoder and decoder through the model repository, builds the
batchers and registers the servicer (``servicer.py``); synthesis lives in ``synthesis.py`` and ``batching.py``."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc

from engines.batcher import DynamicBatcher
from engines.repository import create_engines
from protos import tts_pb2, tts_pb2_grpc
from services.common import Stage, StageSettings, options_to
from services.common.stage import Warmable, announce, model_repository
from services.tts.batching import decode_group, encode_group, make_decoder_fn, make_encoder_fn, voice_encoder
from services.tts.config import TtsConfig
from services.tts.servicer import SynthesizerServicer
from services.tts.synthesis import SpeechSynthesizer, VoiceRuntime
from services.tts.voice import load_voice

log = logging.getLogger(__name__)
_WARMUP_TEXT = "Hello, this is a warm up sentence."


class TtsStage(Stage):
    """Loads the configured voice, warms it, and serves ``voxpipe.v1.Synthesizer``."""

    name = "tts"
    service_names = (tts_pb2.DESCRIPTOR.services_by_name["Synthesizer"].full_name,)

    def __init__(self, settings: StageSettings, config: TtsConfig | None = None) -> None:
        self.config = config or options_to(TtsConfig, settings.options, "tts")
        self.repo = model_repository(settings)
        self._synthesizer: SpeechSynthesizer | None = None
        self._batchers: list[DynamicBatcher] = []
        self._parts: tuple = (None, (), (), 0)  # voice, encoders, decoders, hop length (set by load)

    @property
    def synthesizer(self) -> SpeechSynthesizer:
        if self._synthesizer is None:
            raise RuntimeError("tts stage used before start()")
        return self._synthesizer

    def load(self) -> None:
        """Load the voice's encoder and decoder instances and build the batchers."""
        voice = load_voice(self.repo.folder(f"tts-{self.config.voice}"))
        names = {part: f"tts-{self.config.voice}-{part}" for part in ("encoder", "decoder")}
        models = {part: self.repo.resolve(name) for part, name in names.items()}
        meta = models["decoder"].config.metadata
        hop, context = int(meta["hop_length"]), int(meta["decoder_context_frames"])
        engines = {part: create_engines(model) for part, model in models.items()}
        engines["encoder"] = [voice_encoder(e) for e in engines["encoder"]]
        self._parts = (voice, engines["encoder"], engines["decoder"], hop)
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

    def engines(self) -> Sequence[Warmable]:
        _, encoders, decoders, _ = self._parts
        return (*encoders, *decoders)

    def warm(self) -> None:
        """A real sentence through each encoder, its latents through each decoder (whole and a half window)."""
        voice, encoders, decoders, hop = self._parts
        ids = voice.id_map.to_ids(voice.phonemizer.phonemize(_WARMUP_TEXT)).ids
        for encoder in encoders:
            [z] = encode_group(encoder, [ids], voice.scales.as_tuple(), hop)
        for decoder in decoders:
            decode_group(decoder, [z, z[:, : z.shape[-1] // 2]], hop)

    def batchers(self) -> Sequence[DynamicBatcher]:
        return tuple(self._batchers)

    def register(self, server: grpc.aio.Server) -> None:
        tts_pb2_grpc.add_SynthesizerServicer_to_server(SynthesizerServicer(self), server)
