"""``Assistant.Converse``: one bidirectional stream, many turns.

Per stream, the orchestrator holds one ``Recognizer.StreamingRecognize`` call open. A pump task forwards
the client's audio (and end-of-utterance) to it; the listener forwards interim transcripts and starts a
turn at each final one. Turns run one at a time per stream: a new final transcript, a CANCEL_TURN
control or (if enabled) new speech cancels the turn in flight, and with it every downstream call.
All tasks of a stream live in one TaskGroup; everything sent to the client goes through one bounded queue.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import grpc

from orchestrator import metrics
from orchestrator.admission import Admission
from orchestrator.budget import BudgetConfig
from orchestrator.completeness import AdaptiveEndpoint, judge
from orchestrator.peers import StageClients, call_metadata
from orchestrator.session import SessionState
from orchestrator.speculation import SPECULATIONS, HeldEvents, Speculation, matches
from orchestrator.turn import TurnInput, TurnRunner
from orchestrator.voices import VoiceCatalog
from protos import asr_pb2, assistant_pb2
from services.common import (
    DeadlineError,
    FailedPreconditionError,
    InvalidArgumentError,
    ServiceError,
    UnavailableError,
)
from services.common.audio_format import check_audio_format
from services.common.context import REQUEST_ID, new_request_id
from services.common.deadline import transit_ms
from services.common.errors import UpstreamError, first_error, status_of
from services.common.ids import validate_session_id, validate_voice_name

log = logging.getLogger(__name__)

# ASR stream failures the client caused (its audio) or should back off from (overload) keep their code.
_PASS_THROUGH = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.FAILED_PRECONDITION,
                 grpc.StatusCode.RESOURCE_EXHAUSTED)


def validate_config(config: assistant_pb2.ConverseConfig) -> None:
    """Reject a bad ConverseConfig with INVALID_ARGUMENT naming the field and value."""
    check_audio_format(config.audio.encoding, config.audio.sample_rate_hz, prefix="audio.")
    if config.output_sample_rate_hz and not 8000 <= config.output_sample_rate_hz <= 48000:
        raise InvalidArgumentError(f"output_sample_rate_hz={config.output_sample_rate_hz} is outside 8000..48000 (0 = voice rate)")
    if config.budget_ms and not 100 <= config.budget_ms <= 60_000:
        raise InvalidArgumentError(f"budget_ms={config.budget_ms} is outside 100..60000 (0 = server default)")
    validate_session_id(config.session_id)
    validate_voice_name(config.voice, field="config.voice")


class AudioClock:
    """When each stretch of the stream's audio arrived, to map ASR times to arrival times (bounded)."""

    def __init__(self, sample_rate_hz: int, max_chunks: int = 20_000) -> None:
        self.rate = sample_rate_hz
        self._ends: list[int] = []
        self._times: list[float] = []
        self._total = 0
        self._max = max_chunks

    def add(self, n_samples: int, arrived_s: float) -> None:
        self._total += n_samples
        self._ends.append(self._total)
        self._times.append(arrived_s)
        if len(self._ends) > self._max:
            del self._ends[: self._max // 2], self._times[: self._max // 2]

    def arrival_of(self, audio_s: float) -> float | None:
        """Arrival time of the chunk holding the sample at ``audio_s`` seconds into the stream."""
        if not self._ends:
            return None
        i = bisect.bisect_left(self._ends, int(audio_s * self.rate))
        return self._times[min(i, len(self._times) - 1)]


@dataclass(frozen=True, kw_only=True)
class ConversationOptions:
    budget: BudgetConfig
    default_voice: str = ""
    speculation: bool = False  # start turns on ASR's speculative results (orchestrator/speculation.py)
    speculation_max_busy: int = 1  # ... only while fewer turns than this are being prepared (before first audio)
    endpoint: AdaptiveEndpoint | None = None  # answer speculative results with a silence (orchestrator/completeness.py)
    config_timeout_s: float = 10.0  # the first message (config) must arrive within this
    idle_timeout_s: float = 120.0  # no message for this long while no turn runs: the stream ends (its slot frees)


class Conversation:
    """The state and tasks of one Converse stream."""

    def __init__(self, config: assistant_pb2.ConverseConfig, session: SessionState, runner: TurnRunner,
                 clients: StageClients, admission: Admission, options: ConversationOptions,
                 draining: asyncio.Event | None = None) -> None:
        self.config = config
        self.session = session
        self.runner = runner
        self.clients = clients
        self.admission = admission
        self.options = options
        self.budget = options.budget if not config.budget_ms else _scaled(options.budget, config.budget_ms)
        self.out: asyncio.Queue = asyncio.Queue(maxsize=256)
        self.audio_clock = AudioClock(config.audio.sample_rate_hz)
        self._asr_in: asyncio.Queue = asyncio.Queue(maxsize=64)
        self._tg: asyncio.TaskGroup | None = None
        self._turn: asyncio.Task | None = None
        self._turn_index = 0
        self._barge_in: set[asyncio.Task] = set()
        self._speculation: Speculation | None = None  # at most one per conversation
        self._draining = draining or asyncio.Event()
        self.request_id = REQUEST_ID.get() if REQUEST_ID.get() != "-" else new_request_id()

    async def emit(self, response: assistant_pb2.ConverseResponse) -> None:
        """Queue one event for the client. A client that reads nothing while the queue stays full for
        ``idle_timeout_s`` has its stream ended (DEADLINE_EXCEEDED), freeing its slot."""
        if not self.out.full():
            self.out.put_nowait(response)
            return
        try:
            async with asyncio.timeout(self.options.idle_timeout_s):
                await self.out.put(response)
        except TimeoutError:
            raise DeadlineError(f"the client read no event for {self.options.idle_timeout_s:g} s while "
                                f"{self.out.maxsize} waited: closed to free its slot") from None

    async def events(self, runner: asyncio.Task) -> AsyncIterator[assistant_pb2.ConverseResponse]:
        """The events ``run`` (the task ``runner``) queues, until it has ended and the queue is empty."""
        while True:
            if not self.out.empty():
                yield self.out.get_nowait()
                continue
            if runner.done():
                return
            getter = asyncio.ensure_future(self.out.get())
            try:
                await asyncio.wait({getter, runner}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not getter.done():
                    getter.cancel()
            if getter.done() and not getter.cancelled():
                yield getter.result()

    async def run(self, requests: AsyncIterator[assistant_pb2.ConverseRequest]) -> None:
        """Serve the stream until the client half-closes and the last turn is done."""
        await self.emit(assistant_pb2.ConverseResponse(session=assistant_pb2.ConverseSession(session_id=self.session.session_id)))
        call = self.clients.asr.StreamingRecognize(self._asr_requests(), metadata=call_metadata(self.request_id))
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._pump(requests), name="converse-pump")
                drain = tg.create_task(self._end_when_draining(), name="converse-drain")
                await self._listen(call)
                self._discard_speculation("no final")
                drain.cancel()
                if self._turn is not None:
                    await asyncio.wait({self._turn})
        except BaseExceptionGroup as group:
            error = first_error(group, prefer=(ServiceError, grpc.aio.AioRpcError))
            raise (_from_asr(error) if isinstance(error, grpc.aio.AioRpcError) else error) from None
        except grpc.aio.AioRpcError as e:
            raise _from_asr(e) from e
        finally:
            call.cancel()

    async def _end_when_draining(self) -> None:
        """Once the server drains, let the turn in flight answer, then end the stream (UNAVAILABLE: reconnect)."""
        await self._draining.wait()
        while self._turn is not None and not self._turn.done():
            await asyncio.wait({self._turn})
        raise UnavailableError("the orchestrator is shutting down (draining): reconnect to start a new conversation")

    async def _asr_requests(self) -> AsyncIterator[asr_pb2.StreamingRecognizeRequest]:
        audio = asr_pb2.RecognitionConfig()
        audio.CopyFrom(self.config.audio)
        audio.interim_results = True  # interim results drive barge-in even if the client does not want them
        audio.speculative_results = self.options.speculation
        yield asr_pb2.StreamingRecognizeRequest(config=audio)
        while (item := await self._asr_in.get()) is not None:
            yield item

    async def _next(self, requests: AsyncIterator[assistant_pb2.ConverseRequest]) -> assistant_pb2.ConverseRequest | None:
        """The client's next message; DeadlineError once it has been silent for ``idle_timeout_s`` with no
        turn running (a user listening to a reply is not idle)."""
        read = asyncio.ensure_future(anext(requests, None))
        try:
            while True:
                done, _ = await asyncio.wait({read}, timeout=self.options.idle_timeout_s)
                if done:
                    return read.result()
                if self._turn is None or self._turn.done():
                    raise DeadlineError(f"the stream was idle for {self.options.idle_timeout_s:g} s (no audio or "
                                        "control, no turn running): closed to free its slot")
        finally:
            if not read.done():
                read.cancel()

    async def _pump(self, requests: AsyncIterator[assistant_pb2.ConverseRequest]) -> None:
        """Forward the client's audio and controls to ASR. ``_asr_in`` is bounded and ASR reads a stream no
        faster than real time plus a lead, so a client sending faster waits in gRPC's flow control."""
        try:
            while (request := await self._next(requests)) is not None:
                kind = request.WhichOneof("request")
                if kind == "audio":
                    self.audio_clock.add(len(request.audio) // 2, time.monotonic())
                    await self._asr_in.put(asr_pb2.StreamingRecognizeRequest(audio=request.audio))
                elif kind == "control":
                    await self._control(request.control.action)
                elif kind == "config":
                    raise FailedPreconditionError("config may only be sent once, as the first ConverseRequest")
                else:
                    raise InvalidArgumentError("empty ConverseRequest: set audio, control or config")
        except BaseException:
            # Failing or cancelled: the stream's tasks are ending; never wait here on a full queue.
            with contextlib.suppress(asyncio.QueueFull):
                self._asr_in.put_nowait(None)
            raise
        await self._asr_in.put(None)  # the client half-closed: half-close ASR, which finalises the open utterance

    async def _control(self, action: int) -> None:
        if action == assistant_pb2.ConverseControl.END_OF_UTTERANCE:
            control = asr_pb2.RecognizerControl(action=asr_pb2.RecognizerControl.END_OF_UTTERANCE)
            await self._asr_in.put(asr_pb2.StreamingRecognizeRequest(control=control))
        elif action == assistant_pb2.ConverseControl.CANCEL_TURN:
            self.cancel_turn("client CANCEL_TURN")
        else:
            raise InvalidArgumentError(f"control.action={action} is not a known ConverseControl.Action")

    def cancel_turn(self, why: str) -> bool:
        """Barge-in: cancel the turn in flight (and so every downstream call it awaits)."""
        if self._turn is None or self._turn.done():
            return False
        log.info("turn %d cancelled: %s", self._turn_index, why)
        self._barge_in.add(self._turn)
        self._turn.cancel()
        return True

    async def _listen(self, call) -> None:
        async for response in call:
            result = response.result
            if result.speculative:
                self._speculate(result)
                continue
            if not result.is_final:
                if self.config.audio.interim_results:
                    await self.emit(assistant_pb2.ConverseResponse(turn_index=self._turn_index + 1, transcript=result))
                if self.config.barge_in_on_speech and result.text.strip():
                    self.cancel_turn("user speech (barge-in)")
                continue
            # ASR -> here, by the wall clocks of both (0 when unknown)
            received_s, delivery_ms = time.monotonic(), transit_ms(result.sent_unix_ns)
            self._turn_index += 1
            await self.emit(assistant_pb2.ConverseResponse(turn_index=self._turn_index, transcript=result))
            speculation, self._speculation = self._speculation, None
            if not result.text.strip():
                self._discard(speculation, "changed")
                continue  # noise or silence: no turn
            turn = self._turn_input(result, received_s - (result.latency_ms + delivery_ms) / 1e3, received_s,
                                    delivery_ms)
            assert self._tg is not None
            if speculation is not None:
                why = self._commit_refusal(speculation, result)
                if why is None:
                    self.cancel_turn("a new utterance")
                    self._turn = speculation.task
                    await speculation.commit(turn, self._turn_index, spawn=self._tg.create_task)
                    SPECULATIONS.labels("committed", "").inc()
                    continue
                self._discard(speculation, why)
            self.cancel_turn("a new utterance")
            self._turn = self._tg.create_task(self._run_turn(turn), name=f"turn-{self._turn_index}")

    def _turn_input(self, transcript: asr_pb2.SpeechResult, endpoint_s: float, received_s: float,
                    delivery_ms: float = 0.0) -> TurnInput:
        return TurnInput(
            turn_index=self._turn_index, transcript=transcript, endpoint_s=endpoint_s, received_s=received_s,
            asr_delivery_ms=delivery_ms, last_voiced_s=self.audio_clock.arrival_of(transcript.end_s),
            voice=self.config.voice or self.options.default_voice,
            output_sample_rate_hz=self.config.output_sample_rate_hz, budget=self.budget, request_id=self.request_id)

    # -- speculative turns (orchestrator/speculation.py) -------------------------------------------

    def _speculate(self, result: asr_pb2.SpeechResult) -> None:
        """A speculative result: start a speculative turn on it (replacing an earlier one), or drop one."""
        self._discard_speculation("withdrawn" if result.withdrawn else "superseded")
        if result.withdrawn or not result.text.strip() or not self.options.speculation:
            return
        if self.runner.preparing >= self.options.speculation_max_busy:
            SPECULATIONS.labels("skipped", "busy").inc()
            return
        now = time.monotonic()
        turn = replace(self._turn_input(result, now, now), turn_index=self._turn_index + 1)
        speculation = Speculation(transcript=result, events=HeldEvents(self.emit), session_version=self.session.version,
                                  started_s=now)
        if self.options.endpoint is not None:
            speculation.on_understood = lambda understanding: self._answer_speculation(result, understanding)
        assert self._tg is not None
        speculation.task = self._tg.create_task(self._run_turn(turn, speculation),
                                                name=f"turn-{turn.turn_index}-speculative")
        self._speculation = speculation

    def _answer_speculation(self, result: asr_pb2.SpeechResult, understanding) -> None:
        """The adaptive endpoint: tell ASR how long a silence ends this utterance, by what was understood."""
        assert self.options.endpoint is not None
        judgement = judge(result.text, understanding, min_confidence=self.options.endpoint.min_confidence)
        metrics.ENDPOINT_JUDGEMENTS.labels(judgement.value).inc()
        silence_ms = self.options.endpoint.silence_ms(judgement)
        if silence_ms is None:
            return
        control = asr_pb2.RecognizerControl(action=asr_pb2.RecognizerControl.SET_UTTERANCE_SILENCE,
                                            silence_ms=silence_ms, utterance_index=result.utterance_index)
        with contextlib.suppress(asyncio.QueueFull):  # the pump is behind: the stream's own endpoint applies
            self._asr_in.put_nowait(asr_pb2.StreamingRecognizeRequest(control=control))

    def _commit_refusal(self, speculation: Speculation, final: asr_pb2.SpeechResult) -> str | None:
        """Why ``speculation`` may not commit on ``final`` (None: it may)."""
        if not matches(speculation.transcript, final):
            return "changed"
        if speculation.session_version != self.session.version:
            return "session"  # an answer came in meanwhile: the turn may have read stale context
        if speculation.task is None or speculation.task.done():
            return "failed"  # it ended before the commit (an error, a refusal): a normal turn answers
        return None

    def _discard(self, speculation: Speculation | None, reason: str) -> None:
        if speculation is None:
            return
        speculation.discard()
        SPECULATIONS.labels("discarded", reason).inc()

    def _discard_speculation(self, reason: str) -> None:
        speculation, self._speculation = self._speculation, None
        self._discard(speculation, reason)

    async def _run_turn(self, turn: TurnInput, speculation: Speculation | None = None) -> None:
        emit = speculation.events if speculation is not None else self.emit  # held until a speculation commits
        try:
            async with self.admission.turn():
                report = await self.runner.run(turn, self.session, emit, speculation)
            await emit(assistant_pb2.ConverseResponse(turn_index=turn.turn_index, report=report))
        except asyncio.CancelledError:
            if asyncio.current_task() in self._barge_in:  # never a discarded speculation: it is not the turn
                metrics.TURNS.labels("cancelled").inc()
                report = assistant_pb2.TurnReport(cancelled=True, session_id=self.session.session_id,
                                                  budget_ms=turn.budget.total_ms)
                await emit(assistant_pb2.ConverseResponse(turn_index=turn.turn_index, report=report))
            raise
        except ServiceError as e:
            if speculation is None or speculation.committed_s is not None:  # else it is discarded, not a turn
                metrics.TURNS.labels("refused" if e.retryable else "failed").inc()
            await emit(assistant_pb2.ConverseResponse(turn_index=turn.turn_index, error=assistant_pb2.TurnError(
                code=e.code.name, message=str(e), stage="orchestrator")))
        except Exception as e:
            log.exception("turn %d failed", turn.turn_index)
            metrics.TURNS.labels("failed").inc()
            await emit(assistant_pb2.ConverseResponse(turn_index=turn.turn_index, error=assistant_pb2.TurnError(
                code=status_of(e).name, message=f"{type(e).__name__}: {e}", stage="orchestrator")))
        finally:
            self._barge_in.discard(asyncio.current_task())


def _scaled(budget: BudgetConfig, total_ms: float) -> BudgetConfig:
    """The profile's shares scaled to a client-chosen total."""
    f = total_ms / budget.total_ms
    return BudgetConfig(total_ms=total_ms, asr_ms=budget.asr_ms * f, nlp_ms=budget.nlp_ms * f,
                        recommender_ms=budget.recommender_ms * f, tts_ms=budget.tts_ms * f,
                        margin_ms=min(budget.margin_ms, total_ms * 0.05))


def _from_asr(error: grpc.aio.AioRpcError) -> ServiceError:
    """An ASR stream failure as the client should see it: its own input errors pass through by code."""
    message = f"asr: {error.details()}"
    if error.code() in _PASS_THROUGH:
        return UpstreamError(error.code(), message)
    return UnavailableError(f"asr stage failed ({error.code().name}): {error.details()}")


class AssistantServicer:
    """The Assistant service: validates, admits, and serves Converse streams."""

    def __init__(self, runner: TurnRunner, clients: StageClients, admission: Admission, sessions,
                 options: ConversationOptions, *, voices: VoiceCatalog | None = None) -> None:
        self.voices = voices or VoiceCatalog()
        self.runner = runner
        self.clients = clients
        self.admission = admission
        self.sessions = sessions
        self.options = options
        self.draining = asyncio.Event()  # set by the stage when the server drains

    async def Converse(self, request_iterator, context) -> AsyncIterator[assistant_pb2.ConverseResponse]:
        if self.draining.is_set():
            raise UnavailableError("the orchestrator is shutting down (draining): connect to another replica or retry")
        requests = aiter(request_iterator)
        try:
            async with asyncio.timeout(self.options.config_timeout_s):
                first = await anext(requests, None)
        except TimeoutError:
            raise DeadlineError(f"no ConverseRequest with config within {self.options.config_timeout_s:g} s of "
                                "opening the stream") from None
        if first is None:
            return
        kind = first.WhichOneof("request")
        if kind != "config":
            raise InvalidArgumentError(f"the first ConverseRequest must carry config, got {kind or 'an empty message'}")
        validate_config(first.config)
        if first.config.voice and not self.voices.names:  # not heard from TTS yet (it may still be loading)
            await self.voices.refresh(self.clients.tts, timeout_s=1.0)
        self.voices.check(first.config.voice)
        async with self.admission.stream():
            session = self.sessions.get_or_create(first.config.session_id)
            conversation = Conversation(first.config, session, self.runner, self.clients, self.admission, self.options,
                                        self.draining)
            runner = asyncio.create_task(conversation.run(requests), name="converse")
            try:
                async for item in conversation.events(runner):
                    yield item
                await runner  # re-raises what ended the stream, mapped by the interceptor
            finally:
                if not runner.done():
                    runner.cancel()
                    await asyncio.gather(runner, return_exceptions=True)
