"""The orchestrator alone, against fake stages with controlled timing: barge-in, failures, budgets."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from orchestrator import create_stage
from protos import asr_pb2, assistant_pb2, assistant_pb2_grpc, common_pb2
from services.common import StageSettings
from tests.fakes import FakeTiming, closed_port_address, start_fake_stages
from tests.helpers import running_stage

AUDIO = b"\x10\x00" * 1600  # 100 ms at 16 kHz


def orchestrator_settings(address: str, **overrides) -> StageSettings:
    peers = {s: address for s in ("asr", "nlp", "recommender", "tts")}
    peers.update({s: overrides.pop(f"{s}_address") for s in list(peers) if f"{s}_address" in overrides})
    return StageSettings(name="orchestrator", models_dir=Path("/nonexistent"), peers=peers, options=overrides)


def config(**kw) -> assistant_pb2.ConverseRequest:
    audio = asr_pb2.RecognitionConfig(encoding=common_pb2.LINEAR16, sample_rate_hz=16000)
    return assistant_pb2.ConverseRequest(config=assistant_pb2.ConverseConfig(audio=audio, **kw))


def eou() -> assistant_pb2.ConverseRequest:
    return assistant_pb2.ConverseRequest(control=assistant_pb2.ConverseControl(
        action=assistant_pb2.ConverseControl.END_OF_UTTERANCE))


@pytest.fixture
async def fakes():
    timing = FakeTiming()
    server, address = await start_fake_stages(timing)
    yield timing, address
    await server.stop(0)


async def one_turn(channel, *requests) -> list[assistant_pb2.ConverseResponse]:
    stub = assistant_pb2_grpc.AssistantStub(channel)
    return [r async for r in stub.Converse(iter(requests), timeout=20)]


def events(responses, kind):
    return [getattr(r, kind) for r in responses if r.WhichOneof("event") == kind]


TRANSPORTS = pytest.mark.parametrize("stage_calls", ["stream", "unary"])


@TRANSPORTS
async def test_turn_events_arrive_in_order_with_a_report(fakes, stage_calls):
    timing, address = fakes
    async with running_stage(create_stage(orchestrator_settings(address, stage_calls=stage_calls))) as (_, channel):
        responses = await one_turn(channel, config(), assistant_pb2.ConverseRequest(audio=AUDIO), eou())
    kinds = [r.WhichOneof("event") for r in responses]
    assert kinds[0] == "session"
    order = [k for k in kinds if k != "audio"]
    assert order[-5:] == ["transcript", "understanding", "recommendations", "reply", "report"]
    report = events(responses, "report")[0]
    assert [s.stage for s in report.stages] == ["asr", "nlp", "recommender", "tts"]
    assert report.voice_to_voice_ms > 0 and not report.cancelled
    assert all(s.server_ms > 0 for s in report.stages)  # either transport reports each stage's server time
    assert len(events(responses, "audio")) == timing.tts_chunks


@TRANSPORTS
async def test_barge_in_cancels_the_turn_and_its_tts_call_within_50_ms(fakes, stage_calls):
    timing, address = fakes
    timing.tts_chunks, timing.tts_chunk_delay_s = 50, 0.1
    async with running_stage(create_stage(orchestrator_settings(address, stage_calls=stage_calls))) as (_, channel):
        stub = assistant_pb2_grpc.AssistantStub(channel)
        call = stub.Converse(timeout=20)
        for request in (config(), assistant_pb2.ConverseRequest(audio=AUDIO), eou()):
            await call.write(request)
        async for response in call:
            if response.WhichOneof("event") == "audio":
                break
        sent = time.monotonic()
        await call.write(assistant_pb2.ConverseRequest(control=assistant_pb2.ConverseControl(
            action=assistant_pb2.ConverseControl.CANCEL_TURN)))
        async for response in call:
            if response.WhichOneof("event") == "report":
                report = response.report
                break
        await call.done_writing()
        assert report.cancelled
        for _ in range(100):
            if timing.tts_cancelled_at:
                break
            await asyncio.sleep(0.005)
        assert timing.tts_cancelled_at, "the TTS call was not cancelled"
        assert (timing.tts_cancelled_at[0] - sent) * 1e3 < 50


@TRANSPORTS
async def test_recommender_down_gives_a_degraded_answer_not_a_hang(fakes, stage_calls):
    _, address = fakes
    settings = orchestrator_settings(address, recommender_address=closed_port_address(), stage_calls=stage_calls)
    async with running_stage(create_stage(settings)) as (_, channel):
        responses = await asyncio.wait_for(one_turn(channel, config(), assistant_pb2.ConverseRequest(audio=AUDIO), eou()), 15)
    report = events(responses, "report")[0]
    rec = next(s for s in report.stages if s.stage == "recommender")
    assert rec.degraded and "UNAVAILABLE" in rec.note
    assert events(responses, "reply") and events(responses, "audio")


@TRANSPORTS
async def test_tts_failing_mid_reply_keeps_the_audio_sent_and_says_it_was_cut_short(fakes, stage_calls):
    timing, address = fakes
    timing.tts_fail_after_chunks = 1
    async with running_stage(create_stage(orchestrator_settings(address, stage_calls=stage_calls))) as (_, channel):
        responses = await asyncio.wait_for(one_turn(channel, config(), assistant_pb2.ConverseRequest(audio=AUDIO), eou()), 15)
    (report,) = events(responses, "report")
    tts = next(s for s in report.stages if s.stage == "tts")
    assert len(events(responses, "audio")) == 1 and events(responses, "reply")
    assert tts.degraded and tts.note == "audio cut short: tts unavailable (UNAVAILABLE)", tts
    assert [e.stage for e in events(responses, "error")] == ["tts"]


async def test_asr_down_ends_the_stream_with_unavailable(fakes):
    _, address = fakes
    settings = orchestrator_settings(address, asr_address=closed_port_address())
    async with running_stage(create_stage(settings)) as (_, channel):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(one_turn(channel, config(), assistant_pb2.ConverseRequest(audio=AUDIO), eou()), 15)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "asr" in err.value.details()


async def test_exhausted_budget_degrades_and_is_reported(fakes):
    timing, address = fakes
    timing.nlp_delay_s = 0.5  # slower than the whole budget
    async with running_stage(create_stage(orchestrator_settings(address))) as (_, channel):
        responses = await one_turn(channel, config(budget_ms=300), assistant_pb2.ConverseRequest(audio=AUDIO), eou())
    report = events(responses, "report")[0]
    stages = {s.stage: s for s in report.stages}
    assert stages["nlp"].degraded and "DEADLINE_EXCEEDED" in stages["nlp"].note
    assert stages["nlp"].missed and report.missed
    assert stages["recommender"].degraded  # no time left: cached popularity list, no ranking call
    assert all(not r.popularity_only or r.k for r in timing.recommend_requests)
    assert events(responses, "reply")


async def test_bad_first_message_and_bad_config_are_invalid_argument(fakes):
    _, address = fakes
    async with running_stage(create_stage(orchestrator_settings(address))) as (_, channel):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await one_turn(channel, assistant_pb2.ConverseRequest(audio=AUDIO))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "must carry config" in err.value.details()
        bad = config()
        bad.config.audio.sample_rate_hz = 100
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await one_turn(channel, bad)
        assert "sample_rate_hz=100" in err.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await one_turn(channel, config(), config())
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        # The server keeps serving.
        responses = await one_turn(channel, config(), assistant_pb2.ConverseRequest(audio=AUDIO), eou())
        assert events(responses, "report")


async def test_too_many_streams_is_resource_exhausted(fakes):
    _, address = fakes
    async with running_stage(create_stage(orchestrator_settings(address, max_streams=1))) as (_, channel):
        stub = assistant_pb2_grpc.AssistantStub(channel)
        first = stub.Converse(timeout=20)
        await first.write(config())
        await first.read()  # the session event: the stream holds its slot
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await one_turn(channel, config())
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_streams=1" in err.value.details()
        await first.done_writing()
        while await first.read() is not grpc.aio.EOF:
            pass


async def test_report_separates_the_orchestrators_own_time(fakes):
    timing, address = fakes
    timing.nlp_delay_s = 0.05
    async with running_stage(create_stage(orchestrator_settings(address))) as (_, channel):
        responses = await one_turn(channel, config(), assistant_pb2.ConverseRequest(audio=AUDIO), eou())
    report = events(responses, "report")[0]
    nlp = next(s for s in report.stages if s.stage == "nlp")
    assert nlp.ms >= 50  # the fake NLP's delay is in its stage, not in the orchestrator's own time
    assert 0 < report.orchestration_ms < nlp.ms
    # The stage reported its handler's time: the rest of the stage's ms is the hop.
    assert 50 <= nlp.server_ms <= nlp.ms and nlp.ms - nlp.server_ms < 50
    tts = next(s for s in report.stages if s.stage == "tts")
    assert 0 < tts.server_ms <= tts.ms
    hops = sum(s.ms - s.server_ms for s in report.stages if s.server_ms)
    assert report.overhead_ms == pytest.approx(report.orchestration_ms + hops, abs=0.01)


async def test_what_a_session_has_seen_is_left_to_the_recommender(fakes):
    # The orchestrator kept its own list of shown items and sent it as exclude_item_ids beside exclude_seen,
    # so the same list lived in two stages with two lifetimes. Now the recommender alone keeps it.
    timing, address = fakes
    async with running_stage(create_stage(orchestrator_settings(address))) as (_, channel):
        call = assistant_pb2_grpc.AssistantStub(channel).Converse(timeout=20)
        await call.write(config(session_id="seen-1"))
        for _ in range(2):  # two turns, the second asked once the first is over
            await call.write(assistant_pb2.ConverseRequest(audio=AUDIO))
            await call.write(eou())
            while (await call.read()).WhichOneof("event") != "report":
                pass
        await call.done_writing()
    turns = [r for r in timing.recommend_requests if not r.popularity_only]  # not the popularity-list refresh
    assert len(turns) == 2 and {r.session_id for r in turns} == {"seen-1"}
    assert all(r.filters.exclude_seen and not r.filters.exclude_item_ids for r in turns), [r.filters for r in turns]


def test_every_stage_forgets_a_session_after_the_same_idle_time():
    # The orchestrator kept sessions for 3600 s and the recommender for 1800 s: for half an hour the
    # orchestrator answered "I'll use that" for ratings the recommender had already forgotten.
    from services.common.settings import load
    from services.recommender import RecommenderStage

    stack = load(env={"VOXPIPE_SESSION_TTL_S": "600"})
    orchestrator = create_stage(stack.stage("orchestrator"))
    recommender = RecommenderStage(stack.stage("recommender"))
    assert orchestrator.sessions.ttl_s == recommender.sessions.ttl_s == 600
    assert load().stage("orchestrator").session_ttl_s == load().stage("recommender").session_ttl_s


async def test_a_silent_stream_is_closed_and_its_slot_freed(fakes):
    _, address = fakes
    settings = orchestrator_settings(address, idle_timeout_s=0.5, config_timeout_s=0.5, max_streams=1)
    async with running_stage(create_stage(settings)) as (_, channel):
        stub = assistant_pb2_grpc.AssistantStub(channel)

        async def silent_after(*first):
            async def requests():
                for r in first:
                    yield r
                await asyncio.sleep(30)  # a client that holds its stream open and says nothing

            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in stub.Converse(requests(), timeout=20):
                    pass
            return err.value, time.monotonic() - started

        error, took = await silent_after()  # not even a config
        assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED and "no ConverseRequest with config" in error.details()
        assert took < 5
        error, took = await silent_after(config(), assistant_pb2.ConverseRequest(audio=AUDIO))
        assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED and "idle for 0.5 s" in error.details()
        assert took < 5
        # The only slot (max_streams=1) is free again: a real conversation gets in.
        responses = await one_turn(channel, config(), assistant_pb2.ConverseRequest(audio=AUDIO), eou())
        assert events(responses, "report")


async def test_a_hundred_clients_that_vanish_mid_reply_leave_nothing_behind(fakes):
    """Each client hangs up as its reply starts: every TTS call is cancelled downstream, every slot comes
    back, and no task of the conversations is left running."""
    timing, address = fakes
    timing.tts_chunks, timing.tts_chunk_delay_s = 40, 0.05  # a 2 s reply
    settings = orchestrator_settings(address, max_turns_per_s=1000.0, max_admission_wait_ms=1000.0)
    stage = create_stage(settings)
    async with running_stage(stage) as (_, channel):
        stub = assistant_pb2_grpc.AssistantStub(channel)
        baseline = len(asyncio.all_tasks())

        async def vanish() -> None:
            call = stub.Converse(iter([config(), assistant_pb2.ConverseRequest(audio=AUDIO), eou()]), timeout=20)
            async for response in call:
                if response.WhichOneof("event") == "audio":
                    call.cancel()  # the client is gone: its process died, or it hung up
                    return

        for _ in range(10):
            await asyncio.gather(*(vanish() for _ in range(10)))
        for _ in range(100):
            if len(timing.tts_cancelled_at) == 100 and stage.admission.streams == 0:
                break
            await asyncio.sleep(0.05)
        assert len(timing.tts_cancelled_at) == 100
        assert stage.admission.streams == 0 and stage.admission.turns == 0
        leftover = [t for t in asyncio.all_tasks() if t.get_name().startswith(("converse", "turn-"))]
        assert not leftover, leftover
        assert len(asyncio.all_tasks()) <= baseline + 5


# -- speculative turns (orchestrator/speculation.py) --------------------------------------------------------

def _speculations(outcome: str, reason: str) -> float:
    from orchestrator.speculation import SPECULATIONS

    return SPECULATIONS.labels(outcome, reason)._value.get()


async def test_a_speculative_turn_commits_when_the_final_matches(fakes):
    timing, address = fakes
    timing.speculative_text, timing.endpoint_delay_s = timing.text, 0.3
    committed = _speculations("committed", "")
    async with running_stage(create_stage(orchestrator_settings(address))) as (_, channel):
        responses = await one_turn(channel, config(), assistant_pb2.ConverseRequest(audio=AUDIO), eou())
    kinds = [r.WhichOneof("event") for r in responses if r.WhichOneof("event") != "audio"]
    assert kinds[-5:] == ["transcript", "understanding", "recommendations", "reply", "report"]
    assert kinds.count("reply") == 1 and len(events(responses, "audio")) == timing.tts_chunks
    assert {r.turn_index for r in responses if r.WhichOneof("event") != "session"} == {1}
    report = events(responses, "report")[0]
    assert report.speculative and not report.missed
    assert report.hidden_ms > 0, report  # the work done before the final came
    assert [s.stage for s in report.stages] == ["asr", "nlp", "recommender", "tts"]
    assert [r.preview for r in timing.recommend_requests if r.session_id] == [True]  # shown only once it was given:
    assert [list(r.item_ids) for r in timing.mark_shown] == [[1, 2, 3]]
    assert _speculations("committed", "") == committed + 1


async def test_a_changed_final_discards_the_speculative_turn_and_answers_it(fakes):
    timing, address = fakes
    timing.speculative_text, timing.endpoint_delay_s = "recommend a drama", 0.2
    discarded = _speculations("discarded", "changed")
    async with running_stage(create_stage(orchestrator_settings(address))) as (_, channel):
        responses = await one_turn(channel, config(), assistant_pb2.ConverseRequest(audio=AUDIO), eou())
    # Nothing of the speculative turn left: one answer, the final's, from a normal turn.
    assert len(events(responses, "reply")) == 1 and len(events(responses, "report")) == 1
    assert not events(responses, "report")[0].speculative
    assert [r.preview for r in timing.recommend_requests if r.session_id] == [True, False]
    assert not timing.mark_shown
    assert _speculations("discarded", "changed") == discarded + 1


async def test_resumed_speech_withdraws_the_speculative_turn(fakes):
    timing, address = fakes
    timing.speculative_text, timing.withdraw, timing.endpoint_delay_s = timing.text, True, 0.2
    timing.nlp_delay_s = 0.05  # the withdrawal arrives while the speculative turn is still preparing
    withdrawn = _speculations("discarded", "withdrawn")
    async with running_stage(create_stage(orchestrator_settings(address))) as (_, channel):
        responses = await one_turn(channel, config(), assistant_pb2.ConverseRequest(audio=AUDIO), eou())
    assert len(events(responses, "reply")) == 1 and not events(responses, "report")[0].speculative
    assert len(events(responses, "understanding")) == 1 and not timing.mark_shown
    assert _speculations("discarded", "withdrawn") == withdrawn + 1


async def test_no_speculation_while_another_turn_is_being_prepared(fakes):
    timing, address = fakes
    timing.speculative_text, timing.endpoint_delay_s = timing.text, 0.1
    timing.tts_chunk_delay_s = 0.6  # every turn takes 0.6 s to its first audio
    skipped = _speculations("skipped", "busy")
    async with running_stage(create_stage(orchestrator_settings(address, speculation_max_busy=1))) as (_, channel):
        first = asyncio.create_task(one_turn(channel, config(), assistant_pb2.ConverseRequest(audio=AUDIO), eou()))
        await asyncio.sleep(0.3)  # the first conversation's turn is preparing now
        second = await one_turn(channel, config(), assistant_pb2.ConverseRequest(audio=AUDIO), eou())
        first = await first
    assert events(first, "report")[0].speculative
    assert not events(second, "report")[0].speculative
    assert _speculations("skipped", "busy") == skipped + 1


async def test_speculation_can_be_switched_off(fakes):
    timing, address = fakes
    timing.speculative_text = timing.text
    async with running_stage(create_stage(orchestrator_settings(address, speculation=False))) as (_, channel):
        responses = await one_turn(channel, config(), assistant_pb2.ConverseRequest(audio=AUDIO), eou())
    assert not events(responses, "report")[0].speculative
    assert [r.preview for r in timing.recommend_requests if r.session_id] == [False]


async def live_turn(channel) -> list[assistant_pb2.ConverseResponse]:
    """One turn on a stream kept open until it is reported, as a live client's is (``one_turn`` half-closes at once,
    after which the orchestrator sends ASR nothing more)."""
    reported, responses = asyncio.Event(), []

    async def requests():
        for request in (config(), assistant_pb2.ConverseRequest(audio=AUDIO), eou()):
            yield request
        await reported.wait()

    async for response in assistant_pb2_grpc.AssistantStub(channel).Converse(requests(), timeout=20):
        responses.append(response)
        if response.WhichOneof("event") == "report":
            reported.set()
    return responses


@pytest.mark.parametrize(("text", "silences"), [("recommend a comedy", [(0, 200)]),  # complete: end it soon
                                                ("recommend a comedy from the", [(0, 1200)])])  # unfinished: wait
async def test_a_speculative_result_is_answered_with_the_silence_that_should_end_it(fakes, text, silences):
    timing, address = fakes
    timing.text = timing.speculative_text = text
    timing.endpoint_delay_s = 0.3
    async with running_stage(create_stage(orchestrator_settings(address))) as (_, channel):
        await live_turn(channel)
    assert timing.utterance_silences == silences


async def test_the_adaptive_endpoint_can_be_switched_off(fakes):
    timing, address = fakes
    timing.speculative_text, timing.endpoint_delay_s = timing.text, 0.3
    async with running_stage(create_stage(orchestrator_settings(address, adaptive_endpoint=False))) as (_, channel):
        responses = await live_turn(channel)
    assert events(responses, "report")[0].speculative and timing.utterance_silences == []
