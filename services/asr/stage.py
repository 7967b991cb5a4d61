"""The ASR stage's wiring: loads Whisper tiny.en and Silero VAD through the model repository, builds the
schedulers and registers the servicer (``servicer.py``); the model logic lives in the other modules here."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import grpc
import numpy as np

from engines.batcher import DynamicBatcher
from engines.generation import GenerationScheduler
from engines.repository import create_engines
from protos import asr_pb2, asr_pb2_grpc
from services.asr.boosting import SCORER_MODEL, PhraseBooster, ScoreJob, output_projection, scorer_batch_fn
from services.asr.config import AsrConfig
from services.asr.decoding import rule_from_config
from services.asr.features import log_mel, window_frames_of
from services.asr.generation import (
    DECODER_MODEL,
    ENCODER_MODEL,
    VAD_MODEL,
    create_generators,
    encoder_batch_fn,
)
from services.asr.phrases import PhoneticKeys, PhraseSet
from services.asr.recognizer import SpeechRecognizer
from services.asr.servicer import RecognizerServicer
from services.asr.stream import RATE
from services.asr.tokenizer import WhisperTokenizer
from services.asr.vad import VadJob, VadState, frames_of, vad_batch_fn
from services.common import (
    FailedPreconditionError,
    Stage,
    StageSettings,
    options_to,
)
from services.common.catalog import load_items, spoken_title
from services.common.stage import Scheduler, Warmable, announce, model_repository

log = logging.getLogger(__name__)


class AsrStage(Stage):
    """Whisper tiny.en + Silero VAD behind ``voxpipe.v1.Recognizer``."""

    name = "asr"
    service_names = (asr_pb2.DESCRIPTOR.services_by_name["Recognizer"].full_name,)

    def __init__(self, settings: StageSettings, config: AsrConfig | None = None) -> None:
        self.config = config or options_to(AsrConfig, settings.options, "asr")
        self.repo = model_repository(settings)
        self._recognizer: SpeechRecognizer | None = None
        self._engines: list[Warmable] = []

    @property
    def recognizer(self) -> SpeechRecognizer:
        if self._recognizer is None:
            raise FailedPreconditionError("the ASR stage is not started")
        return self._recognizer

    def load(self) -> None:
        """Load the four models and the default phrases, build the schedulers (runs in a worker thread)."""
        enc_model, dec_model, vad_model, scorer_model = (
            self.repo.resolve(n) for n in (ENCODER_MODEL, DECODER_MODEL, VAD_MODEL, SCORER_MODEL))
        encoders, vads, scorers = create_engines(enc_model), create_engines(vad_model), create_engines(scorer_model)
        generators = create_generators(dec_model)
        self._engines = [*encoders, *vads, *generators, *scorers]
        tokenizer = WhisperTokenizer(dec_model.folder / dec_model.config.metadata.get("tokenizer", "tokenizer.json"))
        self._enc_fns = [encoder_batch_fn(e) for e in encoders]
        self._vad_fns = [vad_batch_fn(e) for e in vads]
        self._generators = generators
        for model in (enc_model, dec_model, vad_model, scorer_model):
            announce(self.name, model)
        keys = PhoneticKeys()
        self._rule = rule_from_config(dec_model.config)
        self._scorer_fns = [scorer_batch_fn(e) for e in scorers]
        booster = PhraseBooster(
            DynamicBatcher("whisper-scorer", self._scorer_fns, scorer_model.serving.batching, stage=self.name),
            tokenizer=tokenizer, rule=self._rule, embedding=output_projection(dec_model), keys=keys,
            max_candidates=self.config.phrase_candidates, min_similarity=self.config.phrase_min_similarity,
            max_wait_s=self.config.phrase_max_wait_ms / 1e3)
        default_phrases = self._default_phrases(keys)
        try:  # the recognizer picks its encoder windows by device: a GPU refuses the shorter ones
            self._recognizer = SpeechRecognizer(
                encoder=DynamicBatcher("whisper-encoder", self._enc_fns, enc_model.serving.batching, stage=self.name),
                decoder=GenerationScheduler("whisper-decoder", generators, dec_model.serving.batching, stage=self.name),
                vad=DynamicBatcher("silero-vad", self._vad_fns, vad_model.serving.batching, stage=self.name),
                tokenizer=tokenizer, config=self.config, booster=booster, default_phrases=default_phrases,
                gpu=enc_model.serving.device == "cuda")
        except ValueError as e:
            raise FailedPreconditionError(f"[asr] {e}") from e

    def _default_phrases(self, keys: PhoneticKeys) -> PhraseSet | None:
        """``[asr] default_phrases``: the catalogue's titles, a file's lines, or none."""
        source = self.config.default_phrases
        if not source:
            return None
        boost = self.config.phrase_boost
        if source == "catalog":
            items_path = self.repo.root / "recommender" / "items.tsv"
            if not items_path.is_file():
                log.warning("asr: [asr] default_phrases=catalog, but %s is missing (run `voxpipe build "
                            "recommender`); finals are boosted with request phrases only", items_path)
                return None
            phrases = [(spoken_title(item.title), boost) for item in load_items(items_path) if item.year]
        else:
            path = Path(source).expanduser()
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as e:
                raise FailedPreconditionError(f"[asr] default_phrases={source!r} cannot be read: {e}") from e
            phrases = [(line, boost) for line in lines if line.strip()]
        phrase_set = PhraseSet(phrases, keys)
        log.info("asr: %d default phrases (%s) for boosting", len(phrase_set), source)
        return phrase_set

    def engines(self) -> Sequence[Warmable]:
        return self._engines

    def warm(self) -> None:
        """Half a second of silence through the VAD, then in each encoder window through each encoder, each
        decoder (a few steps) and each scorer (ONNX Runtime's first call of a shape is the slowest)."""
        silence = np.zeros(RATE // 2, np.float32)
        for fn in self._vad_fns:
            fn([VadJob(frames_of(silence), VadState.initial())])
        for window_s in self.recognizer.windows_s:
            self._warm_window(log_mel(silence, window_frames_of(window_s)))

    def _warm_window(self, mel: np.ndarray) -> None:
        for enc_fn in self._enc_fns:
            encoded = enc_fn([mel])[0]
            # A final's usual job: the transcript and 8 candidates of 16 tokens (the first call of a shape this
            # size cost 141 ms against 87-101 ms warm on the 2-core CPU).
            rows = [[*self._rule.prompt, *[self._rule.eot] * 14]] * 9
            job = ScoreJob.of(rows, [len(self._rule.prompt)] * 9, encoded, self._rule.eot)
            for scorer_fn in self._scorer_fns:
                scorer_fn([job])
            for generator in self._generators:
                generator.prefill([(0, encoded)])
                for _ in range(3):
                    if generator.step([0]):
                        break
                generator.release(0)

    def batchers(self) -> Sequence[Scheduler]:
        r = self._recognizer
        return () if r is None else (r.vad_batcher, r.encoder, r.decoder, *((r.booster.scorer,) if r.booster else ()))

    def register(self, server: grpc.aio.Server) -> None:
        asr_pb2_grpc.add_RecognizerServicer_to_server(RecognizerServicer(self), server)
