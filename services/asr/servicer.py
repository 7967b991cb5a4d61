"""The gRPC edge of the ASR stage: ``voxpipe.v1.Recognizer`` and the stage that owns its engines."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

import grpc
import numpy as np

from engines.batcher import DynamicBatcher
from engines.generation import GenerationScheduler
from engines.repository import create_engines
from protos import asr_pb2, asr_pb2_grpc
from services.asr.audio import pcm16_to_float, resample, strip_wav_header
from services.asr.config import AsrConfig, StreamSettings, settings_from_proto
from services.asr.endpointing import FRAME_SAMPLES, Endpointer, EndpointerConfig, EventKind
from services.asr.features import log_mel
from services.asr.generation import (
    DECODER_MODEL,
    ENCODER_MODEL,
    VAD_MODEL,
    create_generators,
    encoder_batch_fn,
)
from services.asr.recognizer import SpeechRecognizer
from services.asr.stream import RATE, StreamSession
from services.asr.tokenizer import WhisperTokenizer
from services.asr.vad import VadJob, VadState, frames_of, vad_batch_fn
from services.common import (
    FailedPreconditionError,
    InvalidArgumentError,
    OutOfRangeError,
    Stage,
    StageSettings,
    deadline_of,
    options_to,
)
from services.common.errors import first_error
from services.common.stage import Scheduler, announce, model_repository

log = logging.getLogger(__name__)
_END = object()


class RecognizerServicer(asr_pb2_grpc.RecognizerServicer):
    """Validates requests, runs stream sessions, maps nothing itself (the interceptor maps errors)."""

    def __init__(self, stage: AsrStage) -> None:
        self._stage = stage

    async def StreamingRecognize(self, request_iterator: AsyncIterator[asr_pb2.StreamingRecognizeRequest],
                                 context: grpc.aio.ServicerContext) -> AsyncIterator[asr_pb2.StreamingRecognizeResponse]:
        recognizer, config = self._stage.recognizer, self._stage.config
        first = await anext(aiter(request_iterator), None)
        if first is None:
            return  # the client closed without sending anything: nothing to answer
        kind = first.WhichOneof("request")
        if kind != "config":
            raise InvalidArgumentError(
                f"the first StreamingRecognizeRequest must carry config, got {kind or 'an empty request'}")
        settings = settings_from_proto(first.config, config)
        # Bounded: a client that stops reading stalls its own session, not the server.
        results: asyncio.Queue[object] = asyncio.Queue(maxsize=64)

        async def emit(result: asr_pb2.SpeechResult) -> None:
            await results.put(asr_pb2.StreamingRecognizeResponse(result=result))

        async def pump(tasks: asyncio.TaskGroup) -> None:
            session = StreamSession(recognizer, settings, config, emit=emit, tasks=tasks,
                                    deadline_s=deadline_of(context))
            async for request in request_iterator:
                kind = request.WhichOneof("request")
                if kind == "audio":
                    await session.audio(request.audio)
                elif kind == "control":
                    action = request.control.action
                    if action != asr_pb2.RecognizerControl.END_OF_UTTERANCE:
                        raise InvalidArgumentError(f"control.action={action} is not a supported action")
                    await session.end_of_utterance()
                elif kind == "config":
                    raise FailedPreconditionError("config was already sent; it may only be the first request")
                else:
                    raise InvalidArgumentError("a StreamingRecognizeRequest carries none of config, audio, control")
            await session.finish()
            await results.put(_END)

        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(pump(tasks))
                while (item := await results.get()) is not _END:
                    yield item
        except BaseExceptionGroup as group:
            raise first_error(group) from None

    async def Recognize(self, request: asr_pb2.RecognizeRequest,
                        context: grpc.aio.ServicerContext) -> asr_pb2.RecognizeResponse:
        stage = self._stage
        if not request.HasField("config"):
            raise InvalidArgumentError("RecognizeRequest.config is required")
        settings = settings_from_proto(request.config, stage.config)
        data = strip_wav_header(request.audio, settings.sample_rate_hz)
        samples = pcm16_to_float(data)
        seconds = len(samples) / settings.sample_rate_hz
        if seconds > stage.config.max_audio_s:
            raise OutOfRangeError(f"audio is {seconds:.1f} s long, over max_audio_s={stage.config.max_audio_s:g} s")
        audio = await asyncio.to_thread(resample, samples, settings.sample_rate_hz)
        segments = await _segments(stage.recognizer, audio, settings, stage.config)
        deadline = deadline_of(context)
        pre = stage.config.pre_speech_pad_ms * RATE // 1000
        post = stage.config.post_speech_pad_ms * RATE // 1000
        async with asyncio.TaskGroup() as tasks:
            decodes = [stage.recognizer.track(tasks.create_task(stage.recognizer.transcribe(
                audio[max(0, s - pre):e + post], deadline_s=deadline)), final=True) for s, e, _ in segments]
        response = asr_pb2.RecognizeResponse()
        for index, ((start, end, reason), task) in enumerate(zip(segments, decodes, strict=True)):
            t = task.result()
            response.results.add(text=t.text, is_final=True, stability=1.0, confidence=t.confidence,
                                 start_s=start / RATE, end_s=end / RATE, endpoint_reason=reason,
                                 utterance_index=index)
        if not segments:  # no speech (or no audio): one empty final result, as for streams
            end_s = len(audio) / RATE
            response.results.add(is_final=True, stability=1.0, start_s=end_s, end_s=end_s,
                                 endpoint_reason=asr_pb2.END_OF_STREAM)
        return response


async def _segments(recognizer: SpeechRecognizer, audio: np.ndarray, settings: StreamSettings,
                    config: AsrConfig) -> list[tuple[int, int, int]]:
    """Utterances of a whole clip as (start sample, end sample, endpoint reason)."""
    frames = frames_of(audio)
    if not len(frames):
        return []
    probs = (await recognizer.vad(VadJob(frames, VadState.initial()))).probs
    endpointer = Endpointer(EndpointerConfig(
        threshold=settings.speech_threshold, silence_ms=settings.silence_ms, min_speech_ms=settings.min_speech_ms,
        post_pad_ms=min(config.post_speech_pad_ms, settings.silence_ms),
        max_utterance_ms=int(config.max_utterance_s * 1000)))
    segments = []
    for prob in probs:
        for event in endpointer.push(float(prob)):
            if event.kind is EventKind.END:
                reason = asr_pb2.MAX_UTTERANCE_LENGTH if event.forced else asr_pb2.VAD_SILENCE
                segments.append((event.start_frame * FRAME_SAMPLES, event.end_frame * FRAME_SAMPLES, reason))
    if endpointer.in_speech:
        last = endpointer.force_end()
        if last is not None:
            segments.append((last.start_frame * FRAME_SAMPLES, len(audio), asr_pb2.END_OF_STREAM))
    return segments


class AsrStage(Stage):
    """Whisper tiny.en + Silero VAD behind ``voxpipe.v1.Recognizer``."""

    name = "asr"
    service_names = (asr_pb2.DESCRIPTOR.services_by_name["Recognizer"].full_name,)

    def __init__(self, settings: StageSettings, config: AsrConfig | None = None) -> None:
        self.config = config or options_to(AsrConfig, settings.options, "asr")
        self.repo = model_repository(settings)
        self._recognizer: SpeechRecognizer | None = None

    @property
    def recognizer(self) -> SpeechRecognizer:
        if self._recognizer is None:
            raise FailedPreconditionError("the ASR stage is not started")
        return self._recognizer

    def load(self) -> None:
        """Load and warm the three models and build their schedulers (runs in a worker thread)."""
        enc_model, dec_model, vad_model = (self.repo.resolve(n) for n in (ENCODER_MODEL, DECODER_MODEL, VAD_MODEL))
        encoders, vads = create_engines(enc_model), create_engines(vad_model)
        generators = create_generators(dec_model)
        tokenizer = WhisperTokenizer(dec_model.folder / dec_model.config.metadata.get("tokenizer", "tokenizer.json"))
        for engine in (*encoders, *vads):
            engine.warmup()
        for generator in generators:
            generator.warmup()
        enc_fns = [encoder_batch_fn(e) for e in encoders]
        vad_fns = [vad_batch_fn(e) for e in vads]
        # One real pass through each path, so first requests skip lazy initialisation.
        silence = np.zeros(RATE // 2, np.float32)
        for fn in vad_fns:
            fn([VadJob(frames_of(silence), VadState.initial())])
        mel = log_mel(silence)
        for enc_fn in enc_fns:
            encoded = enc_fn([mel])[0]
            for generator in generators:
                generator.prefill([(0, encoded)])
                for _ in range(3):
                    if generator.step([0]):
                        break
                generator.release(0)
        for model in (enc_model, dec_model, vad_model):
            announce(self.name, model)
        self._recognizer = SpeechRecognizer(
            encoder=DynamicBatcher("whisper-encoder", enc_fns, enc_model.serving.batching, stage=self.name),
            decoder=GenerationScheduler("whisper-decoder", generators, dec_model.serving.batching, stage=self.name),
            vad=DynamicBatcher("silero-vad", vad_fns, vad_model.serving.batching, stage=self.name),
            tokenizer=tokenizer, config=self.config)

    def batchers(self) -> Sequence[Scheduler]:
        r = self._recognizer
        return () if r is None else (r.vad_batcher, r.encoder, r.decoder)

    def register(self, server: grpc.aio.Server) -> None:
        asr_pb2_grpc.add_RecognizerServicer_to_server(RecognizerServicer(self), server)
