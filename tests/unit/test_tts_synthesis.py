"""The sentence pipeline with a fake engine: order, spans, look-ahead window, early close, errors, audio."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from engines.batcher import DynamicBatcher
from engines.config import BatchingConfig
from engines.errors import InferenceError
from services.common.errors import InvalidArgumentError, NotFoundError
from services.tts.config import TtsConfig
from services.tts.phonemize import PhonemeIdMap, Phonemizer
from services.tts.synthesis import SpeechSynthesizer, VoiceRuntime, _to_pcm, chunk_pcm
from services.tts.voice import Scales, Voice

ID_MAP = {"_": [0], "^": [1], "$": [2], " ": [3], ".": [10], **{c: [20 + i] for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}}


class LetterPhonemizer(Phonemizer):
    """One 'phoneme' per lower-case letter: enough to drive the pipeline without espeak."""

    def phonemize(self, text: str) -> list[str]:
        return [c for c in text.lower() if c.isalpha() or c in " ."]


class FakeEngine:
    """A batch function that returns 10 samples per phoneme id; ``permits`` can hold calls back."""

    def __init__(self) -> None:
        self.permits = threading.Semaphore(1_000)
        self.calls: list[int] = []
        self.fail_on: str | None = None

    def hold(self) -> None:
        """From now on each call waits for :meth:`allow`."""
        self.permits = threading.Semaphore(0)

    def allow(self, n: int = 1) -> None:
        self.permits.release(n)

    def __call__(self, items):
        self.permits.acquire(timeout=5)
        out = []
        for item in items:
            self.calls.append(len(item.ids))
            if self.fail_on is not None and len(item.ids) == len(self.fail_on) * 2 + 3:
                raise RuntimeError("engine exploded")
            out.append(np.full(len(item.ids) * 10, 0.5, dtype=np.float32))
        return out


def _voice() -> Voice:
    return Voice(name="fake", model_name="tts-fake", language_code="en-US", sample_rate_hz=22050, licence="",
                 scales=Scales(noise=0.667, length=1.0, noise_w=0.8), phonemizer=LetterPhonemizer(),
                 id_map=PhonemeIdMap(ID_MAP))


async def _synthesizer(engine: FakeEngine, **options) -> tuple[SpeechSynthesizer, DynamicBatcher]:
    batcher = DynamicBatcher("tts-fake", [engine], BatchingConfig(max_batch_size=1, max_queue_delay_us=0))
    await batcher.start()
    config = TtsConfig(voice="fake", **options)
    return SpeechSynthesizer({"fake": VoiceRuntime(voice=_voice(), batcher=batcher)}, config), batcher


async def test_sentences_come_in_order_with_spans_and_count():
    synthesizer, batcher = await _synthesizer(FakeEngine())
    text = "One two. Three four five! Six?"
    try:
        got = [a async for a in synthesizer.stream(synthesizer.validate(text))]
    finally:
        await batcher.close()
    assert [(a.index, a.count, text[a.start:a.end]) for a in got] == [
        (0, 3, "One two."), (1, 3, "Three four five!"), (2, 3, "Six?")]
    assert all(a.pcm.dtype == np.int16 and a.pcm.size > 0 for a in got)


async def test_lookahead_bounds_the_work_started_ahead_of_the_consumer():
    engine = FakeEngine()
    synthesizer, batcher = await _synthesizer(engine, lookahead_sentences=1)
    stream = synthesizer.stream(synthesizer.validate(" ".join(f"Sentence {w}." for w in "abcdefgh")))
    try:
        first = await anext(stream)
        await asyncio.sleep(0.1)  # the consumer dawdles: only the look-ahead sentence may run meanwhile
        assert first.index == 0
        assert synthesizer.stats.sentences_started == 2
        await stream.aclose()  # the client went away
    finally:
        await batcher.close()
    assert synthesizer.stats.sentences_started == 2


async def test_closing_early_cancels_queued_sentences_without_error():
    engine = FakeEngine()
    engine.hold()
    synthesizer, batcher = await _synthesizer(engine, lookahead_sentences=3)
    stream = synthesizer.stream(synthesizer.validate("A b. C d. E f. G h. I j."))
    try:
        engine.allow(1)  # sentence 0 only; 1 then waits inside the engine, 2 and 3 in the batcher's queue
        first = await anext(stream)
        await stream.aclose()  # the client went away
        engine.allow(10)
        await asyncio.sleep(0.1)
    finally:
        await batcher.close()
    assert first.index == 0
    assert len(engine.calls) == 2  # sentences 0 and 1; the queued ones were dropped, never computed


async def test_a_failing_sentence_raises_the_engine_error_itself():
    engine = FakeEngine()
    engine.fail_on = "bad"
    synthesizer, batcher = await _synthesizer(engine)
    try:
        with pytest.raises(InferenceError, match="engine exploded"):
            _ = [a async for a in synthesizer.stream(synthesizer.validate("Good one. Bad"))]
    finally:
        await batcher.close()


async def test_validation_resolves_defaults_and_names_bad_values():
    synthesizer, batcher = await _synthesizer(FakeEngine(), max_text_chars=10)
    await batcher.close()
    request = synthesizer.validate("Hi.")
    assert (request.voice, request.sample_rate_hz, request.length_scale) == ("fake", 22050, 1.0)
    with pytest.raises(InvalidArgumentError, match="limit of 10"):
        synthesizer.validate("x" * 11)
    with pytest.raises(NotFoundError, match="'nope'"):
        synthesizer.validate("Hi.", voice="nope")
    with pytest.raises(InvalidArgumentError, match="sample_rate_hz=7999"):
        synthesizer.validate("Hi.", sample_rate_hz=7999)


def test_pcm_is_peak_normalised_clipped_and_resampled():
    audio = np.sin(np.linspace(0, 200 * np.pi, 22050)).astype(np.float32) * 0.25
    pcm = _to_pcm(audio, 22050, 22050, True, "HQ")
    assert pcm.dtype == np.int16 and np.abs(pcm).max() == 32767
    assert _to_pcm(audio, 22050, 16000, True, "HQ").size == 16000
    assert not _to_pcm(np.zeros(100, np.float32), 22050, 22050, True, "HQ").any()
    assert _to_pcm(np.array([2.0, -2.0], np.float32), 22050, 22050, False, "HQ").tolist() == [32767, -32767]


def test_chunks_cover_the_sentence():
    pcm = np.arange(22050 * 3, dtype=np.int16)
    chunks = chunk_pcm(pcm, 22050, 1000)
    assert [c.size for c in chunks] == [22050] * 3 and np.array_equal(np.concatenate(chunks), pcm)
    assert [c.size for c in chunk_pcm(np.zeros(0, np.int16), 22050, 1000)] == [0]


def test_batch_size_defaults_by_device_and_options_are_checked():
    assert TtsConfig().batch_size_for("cpu") == 1
    assert TtsConfig().batch_size_for("cuda") > 1
    assert TtsConfig(max_batch_size=4).batch_size_for("cpu") == 4
    with pytest.raises(ValueError, match="max_text_chars"):
        TtsConfig(max_text_chars=0)
    with pytest.raises(ValueError, match="resample_quality"):
        TtsConfig(resample_quality="best")
