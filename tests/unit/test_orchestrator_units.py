"""Pure units of the orchestrator: budget, policy, admission, popularity cache, replies, audio clock."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.admission import Admission
from orchestrator.budget import PROFILES, BudgetConfig, TurnBudget
from orchestrator.converse import AudioClock, _scaled, validate_config
from orchestrator.policy import Degradation, DegradationPolicy, PolicyConfig, StageStats
from orchestrator.popularity import PopularityCache
from orchestrator.replies import Movie, recommend
from orchestrator.stage import OrchestratorConfig
from protos import asr_pb2, assistant_pb2, common_pb2, recommender_pb2
from services.common import InvalidArgumentError, ResourceExhaustedError
from services.common.sentences import first_sentence
from services.common.settings import SettingsError


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_budget_counts_down_from_the_endpoint_and_gives_timeouts():
    clock = FakeClock()
    budget = TurnBudget.starting_at(BudgetConfig(total_ms=1000, margin_ms=20), start_s=clock.t, clock=clock)
    clock.t += 0.3
    assert budget.elapsed_ms() == pytest.approx(300)
    assert budget.remaining_ms() == pytest.approx(700)
    assert budget.timeout_s() == pytest.approx(0.68)
    clock.t += 2.0
    assert budget.timeout_s() == pytest.approx(0.001)  # never zero or negative
    assert budget.missed


def test_budget_records_spend_against_shares():
    budget = TurnBudget.starting_at(BudgetConfig(nlp_ms=50), start_s=0.0, clock=lambda: 0.0)
    assert not budget.record("nlp", 40).missed
    assert budget.record("nlp", 60).missed
    with pytest.raises(ValueError, match="nlp_ms"):
        BudgetConfig(nlp_ms=0)


def test_profiles_and_explicit_overrides():
    assert OrchestratorConfig(profile="gpu").budget() == PROFILES["gpu"]
    assert OrchestratorConfig().budget("cuda") == PROFILES["gpu"]  # "auto" follows the stack's device
    assert OrchestratorConfig().budget("cpu") == PROFILES["cpu"]
    cfg = OrchestratorConfig(budget_ms=2000, tts_share_ms=800).budget()
    assert (cfg.total_ms, cfg.tts_ms, cfg.nlp_ms) == (2000, 800, PROFILES["cpu"].nlp_ms)
    with pytest.raises(SettingsError, match="profile"):
        OrchestratorConfig(profile="tpu").budget()
    scaled = _scaled(PROFILES["cpu"], 600)
    assert scaled.total_ms == 600 and scaled.asr_ms == pytest.approx(PROFILES["cpu"].asr_ms / 2)


def test_policy_degrades_on_recent_p95():
    stats = StageStats(BudgetConfig())
    for _ in range(20):
        stats.observe("recommender", 10)
        stats.observe("tts", 200)
        stats.observe("nlp", 8)
    policy = DegradationPolicy(PolicyConfig(), stats)
    assert policy.for_recommender(500) is Degradation.NONE
    assert policy.for_recommender(205) is Degradation.POPULARITY
    assert policy.for_recommender(150) is Degradation.CACHED_POPULARITY
    assert policy.for_tts(150) is Degradation.ONE_SENTENCE
    assert policy.for_nlp(100) is Degradation.NONE  # best effort: understanding is never skipped for time
    assert DegradationPolicy(PolicyConfig(overrun="strict"), stats).for_nlp(100) is Degradation.SKIP
    off = DegradationPolicy(PolicyConfig(enabled=False), stats)
    assert off.for_recommender(1) is Degradation.NONE and off.for_tts(1) is Degradation.NONE


async def test_admission_refuses_concurrent_and_rate_overload():
    admission = Admission(max_streams=1, max_concurrent_turns=1, max_turns_per_s=2, max_admission_wait_ms=5)
    async with admission.stream():
        with pytest.raises(ResourceExhaustedError, match="max_streams=1"):
            async with admission.stream():
                pass
    async with admission.turn():
        with pytest.raises(ResourceExhaustedError, match="max_concurrent_turns=1"):
            async with admission.turn():
                pass
    async with admission.turn():
        pass
    with pytest.raises(ResourceExhaustedError, match="max_turns_per_s=2"):
        async with admission.turn():
            pass
    assert admission.turns == 0 and admission.streams == 0


def _item(i, title, year, genres):
    return recommender_pb2.Item(item_id=i, title=title, year=year, genres=genres)


def test_popularity_cache_filters_locally():
    cache = PopularityCache()
    assert cache.answer(recommender_pb2.Filters(), 3).empty_reason == "the popularity list is not available"
    cache.items = [_item(1, "Star Wars (1977)", 1977, ["Action", "Sci-Fi"]), _item(2, "Fargo (1996)", 1996, ["Crime"]),
                   _item(3, "Liar Liar (1997)", 1997, ["Comedy"]), _item(4, "Clerks (1994)", 1994, ["Comedy"])]
    got = cache.answer(recommender_pb2.Filters(genres=["Comedy"], year_min=1990, year_max=1999, exclude_item_ids=[3]), 3)
    assert [i.item_id for i in got.items] == [4]
    assert cache.answer(recommender_pb2.Filters(genres=["Western"]), 3).empty_reason == "no popular movie matches the filters"


def test_reply_templates():
    text = recommend([Movie("Clerks (1994)", 1994), Movie("Fargo (1996)", 1996)])
    assert first_sentence(text) == "How about Clerks from 1994?"
    assert "Fargo" in text
    assert "couldn't find" in recommend([], empty_reason="no Western from the 1930s")
    assert "It's a 90s comedy matching your request." in recommend([Movie("Clerks (1994)", 1994, reason="90s comedy matching your request")])
    assert "I picked it because you liked Fargo." in recommend([Movie("Heat (1995)", 1995, reason="because you liked Fargo")])


def test_audio_clock_maps_stream_time_to_arrival():
    clock = AudioClock(16000)
    assert clock.arrival_of(1.0) is None
    for i in range(10):  # 100 ms chunks arriving at t = 10.0, 10.1, ...
        clock.add(1600, 10.0 + i / 10)
    assert clock.arrival_of(0.05) == 10.0
    assert clock.arrival_of(0.35) == pytest.approx(10.3)
    assert clock.arrival_of(99) == pytest.approx(10.9)


@pytest.mark.parametrize(("change", "match"), [
    ({"encoding": common_pb2.AUDIO_ENCODING_UNSPECIFIED}, "audio.encoding=AUDIO_ENCODING_UNSPECIFIED"),
    ({"encoding": 99}, r"audio.encoding=99 \(not an AudioEncoding\)"),  # was INTERNAL (Enum has no name for 99)
    ({"sample_rate_hz": 4000}, "audio.sample_rate_hz=4000"),
    ({"output_sample_rate_hz": 96000}, "output_sample_rate_hz=96000"),
    ({"budget_ms": 50}, "budget_ms=50"),
    ({"session_id": "bad id!"}, "session_id="),
    ({"session_id": "abc\n"}, "session_id="),  # "$" let a trailing newline through; NLP then refused it mid-turn
])
def test_converse_config_validation_names_the_bad_value(change, match):
    audio = asr_pb2.RecognitionConfig(encoding=common_pb2.LINEAR16, sample_rate_hz=16000)
    config = assistant_pb2.ConverseConfig(audio=audio)
    for key, value in change.items():
        setattr(config.audio if key in ("encoding", "sample_rate_hz") else config, key, value)
    with pytest.raises(InvalidArgumentError, match=match):
        validate_config(config)


@pytest.mark.parametrize(("key", "inside", "outside"), [
    ("sample_rate_hz", 8000, 7999), ("sample_rate_hz", 48000, 48001),
    ("output_sample_rate_hz", 8000, 7999), ("output_sample_rate_hz", 48000, 48001),
    ("budget_ms", 100, 99), ("budget_ms", 60_000, 60_001),
    ("session_id", "a" * 128, "a" * 129), ("session_id", "abc-1.x:y_z", "abc 1"),
])
def test_converse_config_limits_are_inclusive(key, inside, outside):
    def config(value) -> assistant_pb2.ConverseConfig:
        audio = asr_pb2.RecognitionConfig(encoding=common_pb2.LINEAR16, sample_rate_hz=16000)
        config = assistant_pb2.ConverseConfig(audio=audio)
        setattr(config.audio if key == "sample_rate_hz" else config, key, value)
        return config

    assert validate_config(config(inside)) is None
    with pytest.raises(InvalidArgumentError, match=key):
        validate_config(config(outside))


def test_overrun_best_effort_keeps_understanding_and_a_floor_timeout():
    stats = StageStats(BudgetConfig(nlp_ms=60))
    best = DegradationPolicy(PolicyConfig(), stats)
    strict = DegradationPolicy(PolicyConfig(overrun="strict"), stats)
    assert best.for_nlp(-500) is Degradation.NONE and best.floor_ms("nlp") == 60
    assert strict.for_nlp(-500) is Degradation.SKIP and strict.floor_ms("nlp") == 1.0
    budget = TurnBudget.starting_at(BudgetConfig(total_ms=100), start_s=0.0, clock=lambda: 1.0)  # 900 ms over
    assert budget.timeout_s(best.floor_ms("nlp")) == pytest.approx(0.06)
    with pytest.raises(ValueError, match="overrun"):
        PolicyConfig(overrun="sometimes")


def test_unknown_stage_calls_transport_is_a_settings_error():
    from pathlib import Path

    from orchestrator.stage import OrchestratorStage
    from services.common import StageSettings

    settings = StageSettings(name="orchestrator", models_dir=Path("/nonexistent"), options={"stage_calls": "carrier-pigeon"})
    with pytest.raises(SettingsError, match="stage_calls='carrier-pigeon'"):
        OrchestratorStage(settings)


def test_stars_are_nlps_rating_not_a_second_reading_of_the_text():
    from orchestrator.turn import _stars
    from protos import nlp_pb2

    # "disliked" contains "liked": the old substring table stored 4 stars for it.
    said = nlp_pb2.UnderstandResponse(normalized_text="i disliked fargo")
    assert _stars(said) is None
    rated = nlp_pb2.UnderstandResponse(normalized_text="i disliked fargo",
                                       entities=[nlp_pb2.Entity(type="rating", value="2")])
    assert _stars(rated) == 2.0


async def test_turns_waiting_for_the_rate_count_against_the_concurrency_cap():
    # Two turns fill this second's rate; two more arrive together and both wait for the next second.
    # Checking the count before that wait and taking the slot after it let both in (2 turns, cap 1).
    admission = Admission(max_streams=4, max_concurrent_turns=1, max_turns_per_s=2, max_admission_wait_ms=1500)
    for _ in range(2):
        async with admission.turn():
            pass
    inside, peak = 0, 0

    async def one_turn() -> str:
        nonlocal inside, peak
        try:
            async with admission.turn():
                inside += 1
                peak = max(peak, inside)
                await asyncio.sleep(0.05)
                inside -= 1
                return "admitted"
        except ResourceExhaustedError as e:
            return str(e)

    outcomes = await asyncio.gather(one_turn(), one_turn())
    assert peak == 1
    assert outcomes.count("admitted") == 1
    assert any("max_concurrent_turns=1" in o for o in outcomes)
    assert admission.turns == 0


@pytest.mark.parametrize("title", ["Mr. Holland's Opus", "Dr. Strangelove or: How I Learned to Stop Worrying and Love "
                                   "the Bomb", "Meet Me in St. Louis", "L.A. Confidential", "Sgt. Bilko",
                                   "When Harry Met Sally...", "E.T. the Extra-Terrestrial"])
def test_the_one_sentence_reply_keeps_titles_with_periods_whole(title):
    # The orchestrator cut at the first period: "How about Mr." (TTS's splitter knew better; now both use one).
    text = recommend([Movie(title, 1995), Movie("Fargo (1996)", 1996)])
    assert first_sentence(text) == f"How about {title} from 1995?"
    assert first_sentence(f"{title} came out in 1995. It's a comedy movie.") == f"{title} came out in 1995."


# -- speculative turns --------------------------------------------------------------------------------------

def _result(text: str, index: int = 0) -> asr_pb2.SpeechResult:
    return asr_pb2.SpeechResult(text=text, utterance_index=index)


def test_a_final_confirms_a_speculative_transcript_only_with_the_same_text():
    from orchestrator.speculation import matches

    assert matches(_result(" Recommend a comedy."), _result("Recommend a comedy. "))
    assert not matches(_result("Recommend a comedy."), _result("Recommend a comedy?"))  # another embedding
    assert not matches(_result("Recommend a comedy."), _result("Recommend a comedy.", index=1))


async def test_held_events_leave_in_order_renumbered_at_release_then_pass_through():
    from orchestrator.speculation import HeldEvents

    sent, clock = [], FakeClock()

    async def emit(response):
        sent.append(response)

    held = HeldEvents(emit, clock)
    await held(assistant_pb2.ConverseResponse(turn_index=7, reply=assistant_pb2.ReplyText(text="a")))
    clock.t += 0.1
    await held(assistant_pb2.ConverseResponse(turn_index=7, audio=assistant_pb2.ReplyAudio(audio=b"x")))
    assert not sent and held.audio_ready_s == 100.1 and held.audio_sent_s is None
    clock.t += 0.2
    await held.release(3)
    await held(assistant_pb2.ConverseResponse(turn_index=7, audio=assistant_pb2.ReplyAudio(audio=b"y")))
    assert [r.WhichOneof("event") for r in sent] == ["reply", "audio", "audio"]
    assert {r.turn_index for r in sent} == {3} and held.audio_sent_s == pytest.approx(100.3)


async def test_a_commit_applies_deferred_effects_starts_calls_then_answers_the_turn():
    from orchestrator.speculation import HeldEvents, Speculation

    order, clock = [], FakeClock()

    async def emit(response):
        order.append("event")

    async def call():
        order.append("call")

    speculation = Speculation(transcript=_result("hi"), events=HeldEvents(emit, clock), session_version=0,
                              started_s=clock.t)
    await speculation.events(assistant_pb2.ConverseResponse(audio=assistant_pb2.ReplyAudio(audio=b"x")))
    speculation.defer(lambda: order.append("effect"))
    speculation.defer_call(call)
    waiter = asyncio.ensure_future(speculation.committed())
    clock.t += 0.25
    spawned = []
    await speculation.commit("final", 1, spawn=lambda c: spawned.append(asyncio.ensure_future(c)))
    await asyncio.gather(*spawned)
    assert await waiter == "final"
    assert order == ["effect", "event", "call"]
    assert speculation.hidden_ms() == 0.0  # the audio was ready at the start: nothing left to hide


async def test_a_discarded_speculation_never_commits():
    from orchestrator.speculation import HeldEvents, Speculation

    async def emit(response):
        raise AssertionError("a discarded turn sent an event")

    speculation = Speculation(transcript=_result("hi"), events=HeldEvents(emit), session_version=0, started_s=0.0)
    waiter = asyncio.ensure_future(speculation.committed())
    await asyncio.sleep(0)
    waiter.cancel()  # the turn task is cancelled: the shielded future stays pending, nothing is sent
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await speculation.events(assistant_pb2.ConverseResponse(reply=assistant_pb2.ReplyText(text="held")))
    assert speculation.committed_s is None and speculation.hidden_ms() == 0.0


async def test_a_turn_cancelled_while_it_is_admitted_stays_cancelled():
    # A barge-in or a discarded speculation can land while the turn waits for its rate slot; it must not be lost
    # (asyncio.wait_for on Python 3.11 returned the slot and let the turn run on, uncancellable).
    admission = Admission(max_streams=1, max_concurrent_turns=1, max_turns_per_s=100)

    async def turn():
        async with admission.turn():
            await asyncio.sleep(1.0)  # the turn's work

    task = asyncio.create_task(turn())
    await asyncio.sleep(0)  # the turn is being admitted now
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.5)
    assert done and task.cancelled(), "the cancellation was lost: the turn ran on"
    assert admission.turns == 0
