"""The gRPC edge of the ASR stage: ``voxpipe.v1.Recognizer`` and the stage that owns its engines."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING

import grpc

from protos import asr_pb2, asr_pb2_grpc
from services.asr.audio import strip_wav_header
from services.asr.config import settings_from_proto
from services.asr.stream import RealTimePace, StreamSession
from services.common import (
    FailedPreconditionError,
    InvalidArgumentError,
    OutOfRangeError,
    deadline_of,
)
from services.common.endpoint_silence import SILENCE_RANGE, silence_in_range
from services.common.errors import first_error

if TYPE_CHECKING:
    from services.asr.stage import AsrStage


log = logging.getLogger(__name__)
_END = object()
RECOGNIZE_CHUNK_S = 2.0  # a Recognize clip is fed to its session in pieces of this much audio


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
        phrases = await recognizer.phrase_sets(settings)
        # Bounded: a client that stops reading stalls its own session, not the server.
        results: asyncio.Queue[object] = asyncio.Queue(maxsize=64)

        async def emit(result: asr_pb2.SpeechResult) -> None:
            await results.put(asr_pb2.StreamingRecognizeResponse(result=result))

        async def pump(tasks: asyncio.TaskGroup) -> None:
            session = StreamSession(recognizer, settings, config, emit=emit, tasks=tasks,
                                    deadline_s=deadline_of(context), phrases=phrases)
            pace = RealTimePace(config.stream_max_lead_s)
            async for request in request_iterator:
                kind = request.WhichOneof("request")
                if kind == "audio":
                    await pace.hold(session.audio_s)  # before the next read: the sender waits in flow control
                    await session.audio(request.audio)
                elif kind == "control":
                    await self._control(session, request.control)
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

    @staticmethod
    async def _control(session: StreamSession, control: asr_pb2.RecognizerControl) -> None:
        """A stream's control message, validated (INVALID_ARGUMENT naming the value)."""
        action = control.action
        if action == asr_pb2.RecognizerControl.END_OF_UTTERANCE:
            await session.end_of_utterance()
        elif action == asr_pb2.RecognizerControl.SET_UTTERANCE_SILENCE:
            if not silence_in_range(control.silence_ms):
                raise InvalidArgumentError(f"control.silence_ms={control.silence_ms} is outside {SILENCE_RANGE}")
            session.set_utterance_silence(control.utterance_index, control.silence_ms)
        else:
            raise InvalidArgumentError(f"control.action={action} is not a supported action")

    async def Recognize(self, request: asr_pb2.RecognizeRequest,
                        context: grpc.aio.ServicerContext) -> asr_pb2.RecognizeResponse:
        """A whole clip through the same session as a stream, fed in chunks so that the event loop (and every
        stream on it) gets a turn between them; the clip's own work runs on the engines' threads."""
        stage = self._stage
        if not request.HasField("config"):
            raise InvalidArgumentError("RecognizeRequest.config is required")
        settings = replace(settings_from_proto(request.config, stage.config), interim_results=False,
                           speculative_results=False)
        seconds = len(request.audio) / 2 / settings.sample_rate_hz
        if seconds > stage.config.max_audio_s:
            raise OutOfRangeError(f"audio is {seconds:.1f} s long, over max_audio_s={stage.config.max_audio_s:g} s")
        data = await asyncio.to_thread(strip_wav_header, request.audio, settings.sample_rate_hz)
        phrases = await stage.recognizer.phrase_sets(settings)
        response = asr_pb2.RecognizeResponse()

        async def emit(result: asr_pb2.SpeechResult) -> None:
            result.ClearField("latency_ms")  # stream timings: they mean nothing for a whole clip
            result.ClearField("sent_unix_ns")
            response.results.append(result)

        step = 2 * int(RECOGNIZE_CHUNK_S * settings.sample_rate_hz)
        try:
            async with asyncio.TaskGroup() as tasks:
                session = StreamSession(stage.recognizer, settings, stage.config, emit=emit, tasks=tasks,
                                        deadline_s=deadline_of(context), phrases=phrases)
                for start in range(0, len(data), step):
                    await session.pcm(data[start:start + step])
                await session.finish()
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        return response
