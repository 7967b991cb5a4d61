"""Bounds that keep bad input and long runs from hurting: the budget header, trace files, the audio rule."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from opentelemetry.sdk.trace import TracerProvider

from protos import common_pb2
from services.common import settings
from services.common.audio_format import check_audio_format
from services.common.deadline import deadline_of
from services.common.errors import InvalidArgumentError
from services.common.settings import SettingsError
from services.common.tracing import JsonLinesSpanExporter


def _context(budget: str | None, remaining_s: float | None = None):
    metadata = [] if budget is None else [("x-voxpipe-budget-ms", budget)]
    return SimpleNamespace(time_remaining=lambda: remaining_s, invocation_metadata=lambda: metadata)


@pytest.mark.parametrize("value", ["-5", "abc", "nan", "inf", "", "1e999"])
def test_a_bad_budget_header_is_invalid_argument_naming_it(value):
    with pytest.raises(InvalidArgumentError, match="x-voxpipe-budget-ms="):
        deadline_of(_context(value), clock=lambda: 100.0)


def test_the_tighter_of_budget_and_grpc_deadline_wins_and_zero_is_already_spent():
    assert deadline_of(_context("250", remaining_s=1.0), clock=lambda: 100.0) == pytest.approx(100.25)
    assert deadline_of(_context("5000", remaining_s=1.0), clock=lambda: 100.0) == pytest.approx(101.0)
    assert deadline_of(_context("0"), clock=lambda: 100.0) == pytest.approx(100.0)
    assert deadline_of(_context(None), clock=lambda: 100.0) is None


def test_time_in_transit_is_taken_off_the_budget_unless_the_clocks_disagree():
    def sent(ms_ago: float, budget: str = "250"):
        context = _context(budget)
        metadata = [*context.invocation_metadata(), ("x-voxpipe-sent-unix-ns", str(int(10**18 - ms_ago * 1e6)))]
        return SimpleNamespace(time_remaining=lambda: None, invocation_metadata=lambda: metadata)

    at = {"clock": lambda: 100.0, "wall_ns": lambda: 10**18}
    assert deadline_of(sent(100), **at) == pytest.approx(100.15)  # 100 ms on the way: 150 ms left
    assert deadline_of(sent(400), **at) == pytest.approx(99.85)  # arrived after its deadline
    assert deadline_of(sent(-50), **at) == pytest.approx(100.25)  # sent "in the future": skew, ignored
    assert deadline_of(sent(5_000), **at) == pytest.approx(100.25)  # beyond any plausible transit: skew
    bad = SimpleNamespace(time_remaining=lambda: None, invocation_metadata=lambda: [
        ("x-voxpipe-budget-ms", "250"), ("x-voxpipe-sent-unix-ns", "yesterday")])
    assert deadline_of(bad, **at) == pytest.approx(100.25)


def test_a_long_bad_budget_is_not_echoed_whole():
    with pytest.raises(InvalidArgumentError) as e:
        deadline_of(_context("x" * 10_000), clock=lambda: 0.0)
    assert len(str(e.value)) < 200


def test_trace_files_rotate_at_their_cap_and_keep_one_old_file(tmp_path):
    path = tmp_path / "traces" / "nlp.jsonl"
    exporter = JsonLinesSpanExporter(path, max_bytes=2_000)
    tracer = TracerProvider().get_tracer("t")
    for i in range(60):
        span = tracer.start_span(f"span-{i}")
        span.end()
        exporter.export([span])
    old = path.with_name("nlp.jsonl.1")
    assert path.exists() and old.exists()
    assert path.stat().st_size < 2_000 + 1_000 and old.stat().st_size < 2_000 + 1_000
    assert json.loads(path.read_text().splitlines()[-1])["name"] == "span-59"
    assert sorted(p.name for p in path.parent.iterdir()) == ["nlp.jsonl", "nlp.jsonl.1"]


def test_the_trace_cap_is_a_stack_setting():
    assert settings.load(env={"VOXPIPE_TRACE_FILE_MAX_MB": "8"}).trace_file_max_mb == 8.0
    with pytest.raises(SettingsError, match="trace_file_max_mb='0' must be > 0"):
        settings.load(env={"VOXPIPE_TRACE_FILE_MAX_MB": "0"})


@pytest.mark.parametrize(("encoding", "rate", "message"), [
    (99, 16000, r"encoding=99 \(not an AudioEncoding\)"),
    (common_pb2.AUDIO_ENCODING_UNSPECIFIED, 16000, "encoding=AUDIO_ENCODING_UNSPECIFIED"),
    (common_pb2.LINEAR16, 7999, "sample_rate_hz=7999 is outside 8000..48000"),
    (common_pb2.LINEAR16, 48001, "sample_rate_hz=48001"),
])
def test_one_audio_rule_for_every_entry_point(encoding, rate, message):
    with pytest.raises(InvalidArgumentError, match=message):
        check_audio_format(encoding, rate)
    check_audio_format(common_pb2.LINEAR16, 8000)
    check_audio_format(common_pb2.LINEAR16, 48000)


def test_a_huge_value_is_named_but_not_echoed_whole():
    from services.common.errors import bounded, shown

    assert shown("en-US") == "'en-US'"
    long = shown("a" * 100_000)
    assert len(long) < 100 and "(100000 characters)" in long
    assert len(bounded("x" * 50_000)) < 1100


@pytest.mark.parametrize(("check", "value", "needle"), [
    ("language", "en-" + "a" * 100_000, "(100003 characters)"),
    ("session", "s" * 100_000, "(100000 characters)"),
    ("genre", ["g" * 100_000], "unknown genre(s)"),
])
def test_string_fields_get_invalid_argument_naming_them_briefly(check, value, needle):
    from protos import asr_pb2, recommender_pb2
    from services.asr.config import AsrConfig, settings_from_proto
    from services.common.catalog import ItemFilter
    from services.common.ids import validate_session_id

    calls = {
        "language": lambda: settings_from_proto(asr_pb2.RecognitionConfig(
            encoding=common_pb2.LINEAR16, sample_rate_hz=16000, language_code=value), AsrConfig()),
        "session": lambda: validate_session_id(value),
        "genre": lambda: ItemFilter.of(recommender_pb2.Filters(genres=value)),
    }
    with pytest.raises(InvalidArgumentError) as e:
        calls[check]()
    assert needle in str(e.value) and len(str(e.value)) < 600
