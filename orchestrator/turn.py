"""One turn: understanding -> recommendation (or the intent's own handler) -> reply -> streamed speech.

Runs under a :class:`TurnBudget` that started at the endpoint. Each downstream call's gRPC timeout is
what is left of the budget minus a margin, and the remaining milliseconds travel in metadata for the
stage's deadline-aware batcher. When the policy says the time left cannot cover a stage, the stage is
cheapened or skipped and the report says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
from opentelemetry import trace

from orchestrator import metrics, replies
from orchestrator.budget import STAGES, BudgetConfig, TurnBudget
from orchestrator.peers import StageClients, call_metadata
from orchestrator.policy import Degradation, DegradationPolicy
from orchestrator.popularity import PopularityCache
from orchestrator.session import SessionState
from orchestrator.speculation import Speculation
from protos import asr_pb2, assistant_pb2, nlp_pb2, recommender_pb2, tts_pb2
from services.common.sentences import first_sentence

log = logging.getLogger(__name__)
tracer = trace.get_tracer("voxpipe.orchestrator")

Emit = Callable[[assistant_pb2.ConverseResponse], Awaitable[None]]
RECOMMENDING_INTENTS = ("recommend", "more", "similar_to")
MARK_SHOWN_TIMEOUT_S = 2.0  # off the turn's critical path (after the commit), so not under its budget


@dataclass(frozen=True, kw_only=True)
class TurnInput:
    turn_index: int
    transcript: asr_pb2.SpeechResult
    endpoint_s: float  # time.monotonic() when the endpoint was declared: the budget starts here
    received_s: float  # time.monotonic() when the final transcript reached the orchestrator
    last_voiced_s: float | None  # time.monotonic() when the last voiced sample arrived
    voice: str
    output_sample_rate_hz: int
    budget: BudgetConfig
    request_id: str
    asr_delivery_ms: float = 0.0  # final transcript sent by ASR -> received here (wall clocks)


@dataclass
class _Outcome:
    degraded: bool = False
    note: str = ""
    server_ms: float = 0.0


def _filters_from(entities) -> recommender_pb2.Filters:
    """Genre and year filters from the NLP entities (exclusions are set by the caller, once)."""
    filters = recommender_pb2.Filters()
    for e in entities:
        if e.type == "genre":
            filters.genres.append(e.value)
        elif e.type in ("decade", "year") and e.value.isdigit():
            year = int(e.value)
            filters.year_min = year
            filters.year_max = year + 9 if e.type == "decade" else year
    return filters


def _entity(understanding: nlp_pb2.UnderstandResponse | None, kind: str) -> nlp_pb2.Entity | None:
    if understanding is None:
        return None
    return next((e for e in understanding.entities if e.type == kind), None)


def _stars(understanding: nlp_pb2.UnderstandResponse) -> float | None:
    """The rating NLP found (said, or implied by a negation-aware opinion); NLP owns what an opinion is worth."""
    rating = _entity(understanding, "rating")
    try:
        return float(rating.value) if rating is not None else None
    except ValueError:
        return None


def _movie(item: recommender_pb2.Item) -> replies.Movie:
    return replies.Movie(title=item.title, year=item.year, genres=tuple(item.genres), reason=item.reason)


class TurnRunner:
    """Runs turns against the stage services; shared by every conversation of the orchestrator."""

    def __init__(self, clients: StageClients, policy: DegradationPolicy, popularity: PopularityCache, *,
                 k: int = 3, tts_stream_timeout_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.clients = clients
        self.policy = policy
        self.popularity = popularity
        self.k = k
        self.tts_stream_timeout_s = tts_stream_timeout_s
        self.clock = clock
        self.preparing = 0  # turns started and without reply audio yet: what competes for the stages now

    async def run(self, turn: TurnInput, session: SessionState, emit: Emit,
                  speculation: Speculation | None = None) -> assistant_pb2.TurnReport:
        """Run one turn, emitting understanding, recommendations, reply text and audio; return the report.

        A speculative turn (``speculation``; ``turn`` is then its speculative transcript, ``endpoint_s`` when it
        arrived) emits into ``speculation.events``, which hold everything until the commit, and defers its side
        effects; its budget is re-anchored at the real endpoint when it commits (orchestrator/speculation.py).
        """
        self.preparing += 1
        preparing = [True]

        def prepared() -> None:  # at the first reply audio, or when the turn ends without any
            if preparing[0]:
                preparing[0] = False
                self.preparing -= 1

        try:
            return await self._run(turn, session, emit, speculation, prepared)
        finally:
            prepared()

    async def _run(self, turn: TurnInput, session: SessionState, emit: Emit, speculation: Speculation | None,
                   prepared: Callable[[], None]) -> assistant_pb2.TurnReport:
        budget = TurnBudget.starting_at(turn.budget, turn.endpoint_s, self.clock)
        wall_start_ns = time.time_ns() - int((self.clock() - turn.endpoint_s) * 1e9)
        with tracer.start_as_current_span("turn", start_time=wall_start_ns) as span:
            span.set_attributes({"voxpipe.turn": turn.turn_index, "voxpipe.session": session.session_id,
                                 "voxpipe.budget_ms": turn.budget.total_ms,
                                 "voxpipe.speculative": speculation is not None})
            if speculation is None:
                self._record_asr(turn, budget)
            understanding = await self._understand(turn, session, budget)
            if speculation is not None:
                speculation.understood(understanding)
            if understanding is not None:
                await emit(assistant_pb2.ConverseResponse(turn_index=turn.turn_index, understanding=understanding))
            text, recs = await self._answer(turn, session, budget, understanding, speculation)
            if recs is not None:
                await emit(assistant_pb2.ConverseResponse(turn_index=turn.turn_index, recommendations=recs))
            first_audio_s = await self._speak(turn, budget, text, emit, prepared)
            if speculation is not None:
                turn = await speculation.committed()
                budget.start_s = turn.endpoint_s
                self._record_asr(turn, budget)
                first_audio_s = speculation.events.audio_sent_s
            report = self._report(turn, session, budget, first_audio_s)
            if speculation is not None:
                events = speculation.events
                report.speculative, report.hidden_ms = True, speculation.hidden_ms()
                if first_audio_s is not None and events.audio_ready_s is not None:
                    # On the critical path after the final: handling it and sending what was ready.
                    report.orchestration_ms = (first_audio_s - max(turn.received_s, events.audio_ready_s)) * 1e3
                    report.overhead_ms = report.orchestration_ms + sum(s.hop_ms for s in budget.spent if s.stage == "asr")
                span.set_attribute("voxpipe.hidden_ms", report.hidden_ms)
            span.set_attributes({"voxpipe.missed": report.missed, "voxpipe.voice_to_voice_ms": report.voice_to_voice_ms,
                                 "voxpipe.remaining_ms": budget.remaining_ms(),
                                 "voxpipe.intent": understanding.intent if understanding else "",
                                 "voxpipe.degraded": ",".join(s.stage for s in budget.spent if s.degraded)})
            ctx = span.get_span_context()
            if ctx.is_valid:
                report.trace_id = f"{ctx.trace_id:032x}"
        metrics.TURNS.labels("missed" if report.missed else "ok").inc()
        return report

    # -- stages ------------------------------------------------------------------------------------

    def _record_asr(self, turn: TurnInput, budget: TurnBudget) -> None:
        latency_ms = turn.transcript.latency_ms
        asr_ms = latency_ms + turn.asr_delivery_ms if latency_ms else (self.clock() - turn.endpoint_s) * 1e3
        self._finish_stage(budget, "asr", asr_ms, _Outcome(server_ms=latency_ms))

    @asynccontextmanager
    async def _stage(self, budget: TurnBudget, stage: str) -> AsyncIterator[_Outcome]:
        outcome = _Outcome()
        start = self.clock()
        with tracer.start_as_current_span(stage) as span:
            span.set_attributes({"voxpipe.budget_ms": budget.config.share_ms(stage),
                                 "voxpipe.remaining_ms": budget.remaining_ms()})
            try:
                yield outcome
            finally:
                spend = self._finish_stage(budget, stage, (self.clock() - start) * 1e3, outcome)
                span.set_attributes({"voxpipe.ms": spend.ms, "voxpipe.missed": spend.missed,
                                     "voxpipe.degraded": spend.degraded, "voxpipe.note": spend.note})

    def _finish_stage(self, budget: TurnBudget, stage: str, ms: float, outcome: _Outcome):
        spend = budget.record(stage, ms, degraded=outcome.degraded, note=outcome.note, server_ms=outcome.server_ms)
        metrics.TURN_STAGE_SECONDS.labels(stage).observe(ms / 1e3)
        if not outcome.degraded:
            self.policy.stats.observe(stage, ms)
        if spend.missed:
            metrics.BUDGET_MISSES.labels(stage).inc()
        return spend

    def _call_options(self, turn: TurnInput, budget: TurnBudget, stage: str) -> dict:
        """gRPC ``timeout`` and metadata of a call to ``stage``: what is left of the budget, at least the floor."""
        floor_ms = self.policy.floor_ms(stage)
        return {"timeout_s": budget.timeout_s(floor_ms),
                "metadata": call_metadata(turn.request_id, max(budget.remaining_ms(), floor_ms))}

    def _degrade(self, outcome: _Outcome, stage: str, kind: Degradation, why: str) -> None:
        outcome.degraded = True
        outcome.note = f"{kind.value}: {why}"
        metrics.DEGRADATIONS.labels(stage, kind.name.lower()).inc()

    async def _understand(self, turn: TurnInput, session: SessionState,
                          budget: TurnBudget) -> nlp_pb2.UnderstandResponse | None:
        async with self._stage(budget, "nlp") as outcome:
            remaining = budget.remaining_ms()
            if self.policy.for_nlp(remaining) is Degradation.SKIP:
                self._degrade(outcome, "nlp", Degradation.SKIP, f"{remaining:.0f} ms left")
                return None
            request = nlp_pb2.UnderstandRequest(text=turn.transcript.text, session_id=session.session_id)
            try:
                return await self.clients.understand(request, **self._call_options(turn, budget, "nlp"), timing=outcome)
            except grpc.aio.AioRpcError as e:
                self._degrade(outcome, "nlp", Degradation.SKIP, f"{e.code().name}: {e.details()}")
                return None

    async def _answer(self, turn: TurnInput, session: SessionState, budget: TurnBudget,
                      understanding: nlp_pb2.UnderstandResponse | None, speculation: Speculation | None = None
                      ) -> tuple[str, assistant_pb2.Recommendations | None]:
        intent = understanding.intent if understanding else "recommend"
        if intent in RECOMMENDING_INTENTS:
            return await self._recommend(turn, session, budget, understanding, intent, speculation)
        if intent == "movie_info":
            return await self._movie_info(turn, budget, understanding), None
        if intent == "rate":
            if speculation is not None:
                await speculation.committed()  # a rating is recorded only for what the user did say
            return await self._rate(turn, session, budget, understanding), None
        return {"help": replies.HELP, "greeting": replies.GREETING, "goodbye": replies.GOODBYE}.get(
            intent, replies.UNKNOWN), None

    async def _recommend(self, turn, session, budget, understanding, intent, speculation=None):
        title = _entity(understanding, "title")
        if intent == "similar_to" and title is None:
            return replies.need_title(intent), None
        request = recommender_pb2.RecommendRequest(session_id=session.session_id, k=self.k)
        if intent == "more" and (session.last_filters is not None or session.last_similar_to):
            if session.last_filters is not None:
                request.filters.CopyFrom(session.last_filters)
            request.query_embedding.extend(session.last_embedding)
            request.similar_to_item_id = session.last_similar_to
        elif understanding is not None:
            request.filters.CopyFrom(_filters_from(understanding.entities))
            request.query_embedding.extend(understanding.embedding)
            request.similar_to_item_id = title.item_id if intent == "similar_to" and title else 0
        # The recommender owns what this session has seen (shown and rated items) and leaves it out; a speculative
        # turn's answer is recorded as shown only when it commits.
        request.filters.exclude_seen = True
        request.preview = speculation is not None

        async with self._stage(budget, "recommender") as outcome:
            remaining = budget.remaining_ms()
            decision = self.policy.for_recommender(remaining)
            reply = answered = None  # answered: the recommender's own reply (not the cached popularity list)
            if decision is Degradation.POPULARITY:
                self._degrade(outcome, "recommender", decision, f"{remaining:.0f} ms left")
                request.popularity_only = True
                request.similar_to_item_id = 0
            if decision is not Degradation.CACHED_POPULARITY:
                try:
                    reply = await self.clients.recommend(
                        request, **self._call_options(turn, budget, "recommender"), timing=outcome)
                    answered = reply
                except grpc.aio.AioRpcError as e:
                    decision, why = Degradation.CACHED_POPULARITY, f"{e.code().name}: {e.details()}"
            else:
                why = f"{remaining:.0f} ms left"
            if reply is None:
                self._degrade(outcome, "recommender", Degradation.CACHED_POPULARITY, why)
                reply = self.popularity.answer(request.filters, self.k, seen=session.last_item_ids)

        def remember() -> None:
            session.remember(request.filters, list(request.query_embedding), request.similar_to_item_id,
                             list(reply.items))

        if speculation is None:
            remember()
        else:
            speculation.defer(remember)
            if answered is not None and answered.items:
                shown = [i.item_id for i in answered.items]
                speculation.defer_call(lambda: self._mark_shown(turn, session, shown))
        recs = assistant_pb2.Recommendations(items=reply.items, strategy=reply.strategy, empty_reason=reply.empty_reason)
        movies = [_movie(i) for i in reply.items]
        if intent == "more" and not movies:
            return replies.NO_MORE, recs
        if request.similar_to_item_id and title is not None:
            return replies.similar(title.value, movies), recs
        return replies.recommend(movies, empty_reason=reply.empty_reason), recs

    async def _mark_shown(self, turn: TurnInput, session: SessionState, item_ids: list[int]) -> None:
        """A committed speculative answer's movies, recorded as shown (Recommend did not: ``preview``)."""
        try:
            await self.clients.mark_shown(recommender_pb2.MarkShownRequest(session_id=session.session_id,
                                                                           item_ids=item_ids),
                                          timeout_s=MARK_SHOWN_TIMEOUT_S,
                                          metadata=call_metadata(turn.request_id), timing=_Outcome())
        except grpc.aio.AioRpcError as e:
            log.warning("turn %d: the recommender did not record the answer as shown (%s: %s); a later answer "
                        "may repeat it", turn.turn_index, e.code().name, e.details())

    async def _movie_info(self, turn, budget, understanding) -> str:
        title = _entity(understanding, "title")
        if title is None or not title.item_id:
            return replies.need_title("movie_info")
        async with self._stage(budget, "recommender") as outcome:
            try:
                reply = await self.clients.get_items(recommender_pb2.GetItemsRequest(item_ids=[title.item_id]),
                                                     **self._call_options(turn, budget, "recommender"), timing=outcome)
            except grpc.aio.AioRpcError as e:
                self._degrade(outcome, "recommender", Degradation.SKIP, f"{e.code().name}: {e.details()}")
                return f"{replies.spoken_title(title.value)} is in my catalogue, but I can't look it up right now."
        return replies.movie_info(_movie(reply.items[0])) if reply.items else replies.need_title("movie_info")

    async def _rate(self, turn, session, budget, understanding) -> str:
        title = _entity(understanding, "title")
        item_id, name = (title.item_id, title.value) if title else (0, "")
        if not item_id and session.last_items:  # "I loved it": the movie just recommended
            item_id, name = session.last_items[0].item_id, session.last_items[0].title
        stars = _stars(understanding)
        if not item_id or stars is None:
            return replies.need_title("rate")
        stars = min(max(stars, 1.0), 5.0)
        async with self._stage(budget, "recommender") as outcome:
            try:
                await self.clients.feedback(
                    recommender_pb2.FeedbackRequest(session_id=session.session_id, item_id=item_id, rating=stars),
                    **self._call_options(turn, budget, "recommender"), timing=outcome)
            except grpc.aio.AioRpcError as e:
                self._degrade(outcome, "recommender", Degradation.SKIP, f"{e.code().name}: {e.details()}")
                return f"Sorry, I couldn't save your rating for {replies.spoken_title(name)} right now."
        return replies.rated(name, stars)

    async def _speak(self, turn: TurnInput, budget: TurnBudget, text: str, emit: Emit,
                     on_first_audio: Callable[[], None] = lambda: None) -> float | None:
        """Emit the reply text and stream its audio; returns when the first audio chunk was sent."""
        outcome = _Outcome()
        remaining = budget.remaining_ms()
        if self.policy.for_tts(remaining) is Degradation.ONE_SENTENCE and first_sentence(text) != text:
            self._degrade(outcome, "tts", Degradation.ONE_SENTENCE, f"{remaining:.0f} ms left")
            text = first_sentence(text)
        await emit(assistant_pb2.ConverseResponse(turn_index=turn.turn_index, reply=assistant_pb2.ReplyText(text=text)))
        start = self.clock()
        first_audio_s: float | None = None
        request = tts_pb2.SynthesizeRequest(text=text, voice=turn.voice, sample_rate_hz=turn.output_sample_rate_hz)
        with tracer.start_as_current_span("tts") as span:
            span.set_attributes({"voxpipe.budget_ms": budget.config.share_ms("tts"), "voxpipe.remaining_ms": remaining})
            # The stream's deadline covers every sentence; the turn budget only covers the first audio.
            chunks = self.clients.synthesize(request, timeout_s=self.tts_stream_timeout_s,
                                             metadata=call_metadata(turn.request_id), timing=outcome)
            spend = None
            try:
                async for chunk in chunks:
                    audio = assistant_pb2.ReplyAudio(audio=chunk.audio, sample_rate_hz=chunk.sample_rate_hz,
                                                     text_start=chunk.text_start, text_end=chunk.text_end, last=chunk.last)
                    await emit(assistant_pb2.ConverseResponse(turn_index=turn.turn_index, audio=audio))
                    if first_audio_s is None:
                        first_audio_s = self.clock()
                        on_first_audio()
                        spend = self._finish_stage(budget, "tts", (first_audio_s - start) * 1e3, outcome)
                        span.set_attributes({"voxpipe.ms": spend.ms, "voxpipe.missed": spend.missed,
                                             "voxpipe.degraded": spend.degraded})
                if spend is not None:  # unary transport: TTS's time to first chunk is known at the stream's end
                    spend.server_ms = outcome.server_ms
            except grpc.aio.AioRpcError as e:
                why = f"tts {'unavailable' if e.code() is grpc.StatusCode.UNAVAILABLE else 'failed'} ({e.code().name})"
                if first_audio_s is None:  # the reply stays a text answer; the report says why it has no audio
                    self._degrade(outcome, "tts", Degradation.NO_AUDIO, why)
                    self._finish_stage(budget, "tts", (self.clock() - start) * 1e3, outcome)
                elif spend is not None:  # some audio went out: the report says the rest is missing
                    self._degrade(outcome, "tts", Degradation.AUDIO_CUT, why)
                    spend.degraded, spend.note = True, outcome.note
                await emit(assistant_pb2.ConverseResponse(turn_index=turn.turn_index, error=assistant_pb2.TurnError(
                    code=e.code().name, message=e.details() or "", stage="tts")))
            finally:
                await chunks.aclose()  # cancels the call if it is still open (barge-in)
        return first_audio_s

    def _report(self, turn: TurnInput, session: SessionState, budget: TurnBudget,
                first_audio_s: float | None) -> assistant_pb2.TurnReport:
        report = assistant_pb2.TurnReport(budget_ms=budget.config.total_ms, session_id=session.session_id,
                                          total_ms=budget.elapsed_ms())
        for s in sorted(budget.spent, key=lambda s: STAGES.index(s.stage)):  # a speculative turn records asr last
            report.stages.add(stage=s.stage, ms=s.ms, budget_ms=s.budget_ms, missed=s.missed,
                              degraded=s.degraded, note=s.note, server_ms=s.server_ms)
        if first_audio_s is not None:
            in_stages_ms = sum(s.ms for s in budget.spent if s.stage != "asr")
            report.orchestration_ms = max((first_audio_s - turn.received_s) * 1e3 - in_stages_ms, 0.0)
            report.overhead_ms = report.orchestration_ms + sum(s.hop_ms for s in budget.spent)
        if turn.last_voiced_s is not None:
            report.endpoint_wait_ms = max(turn.endpoint_s - turn.last_voiced_s, 0.0) * 1e3
            if first_audio_s is not None:
                report.voice_to_voice_ms = (first_audio_s - turn.last_voiced_s) * 1e3
                metrics.VOICE_TO_VOICE_SECONDS.observe(report.voice_to_voice_ms / 1e3)
        first_audio_late = first_audio_s is None or first_audio_s > budget.deadline_s()
        report.missed = any(s.missed for s in budget.spent) or first_audio_late
        return report
