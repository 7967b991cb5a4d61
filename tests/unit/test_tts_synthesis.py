"""The sentence pipeline with a fake engine: order, spans, look-ahead window, early close, errors, audio."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
import soxr

from engines.batcher import DynamicBatcher
from engines.config import BatchingConfig
from engines.errors import InferenceError
from services.common.errors import InvalidArgumentError, NotFoundError
from services.tts.config import TtsConfig
from services.tts.phonemize import PhonemeIdMap, Phonemizer
from services.tts.synthesis import SpeechSynthesizer, VoiceRuntime, _to_pcm, chunk_pcm
from services.tts.voice import Scales, Voice

ID_MAP = {"_": [0], "^": [1], "$": [2], " ": [3], ".": [10], **{c: [20 + i] for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}}


HOP = 4


class LetterPhonemizer(Phonemizer):
    """One 'phoneme' per lower-case letter: enough to drive the pipeline without espeak."""

    def phonemize(self, text: str) -> list[str]:
        return [c for c in text.lower() if c.isalpha() or c in " ."]


class FakeEngines:
    """Encoder and decoder batch functions; the encoder can be held back with ``permits``.

    The encoder makes one latent frame per phoneme id whose value is the frame's index, and the decoder
    turns each frame into HOP samples of that value / 1000 — so joined pieces show exactly which frames
    were decoded, in which order.
    """

    def __init__(self) -> None:
        self.permits = threading.Semaphore(1_000)
        self.encoded: list[int] = []
        self.decoded: list[int] = []
        self.fail_on: str | None = None

    def hold(self) -> None:
        """From now on each encoder call waits for :meth:`allow`."""
        self.permits = threading.Semaphore(0)

    def allow(self, n: int = 1) -> None:
        self.permits.release(n)

    def encode(self, items):
        self.permits.acquire(timeout=5)
        out = []
        for item in items:
            self.encoded.append(len(item.ids))
            if self.fail_on is not None and len(item.ids) == len(self.fail_on) * 2 + 3:
                raise RuntimeError("engine exploded")
            out.append(np.tile(np.arange(len(item.ids), dtype=np.float32), (3, 1)))
        return out

    def decode(self, items):
        self.decoded.extend(z.shape[-1] for z in items)
        return [np.repeat(z[0] / 1000, HOP).astype(np.float32) for z in items]


def _voice() -> Voice:
    return Voice(name="fake", model_name="tts-fake", language_code="en-US", sample_rate_hz=22050, licence="",
                 scales=Scales(noise=0.667, length=1.0, noise_w=0.8), phonemizer=LetterPhonemizer(),
                 id_map=PhonemeIdMap(ID_MAP))


class Harness:
    def __init__(self, engines: FakeEngines, **options) -> None:
        batching = BatchingConfig(max_batch_size=1, max_queue_delay_us=0)
        self.encoder = DynamicBatcher("tts-fake-encoder", [engines.encode], batching)
        self.decoder = DynamicBatcher("tts-fake-decoder", [engines.decode], batching)
        runtime = VoiceRuntime(voice=_voice(), encoder=self.encoder, decoder=self.decoder, hop_length=HOP,
                               context_frames=2)
        self.synthesizer = SpeechSynthesizer({"fake": runtime}, TtsConfig(voice="fake", gain_db=0.0, **options))

    async def __aenter__(self) -> SpeechSynthesizer:
        await self.encoder.start()
        await self.decoder.start()
        return self.synthesizer

    async def __aexit__(self, *exc: object) -> None:
        await self.encoder.close()
        await self.decoder.close()


async def test_sentences_come_in_order_with_spans_and_count():
    text = "One two. Three four five! Six?"
    async with Harness(FakeEngines(), first_audio_frames=0) as synthesizer:
        got = [a async for a in synthesizer.stream(synthesizer.validate(text))]
    assert [(a.index, a.count, a.final, text[a.start:a.end]) for a in got] == [
        (0, 3, True, "One two."), (1, 3, True, "Three four five!"), (2, 3, True, "Six?")]
    assert all(a.pcm.dtype == np.int16 and a.pcm.size > 0 for a in got)


async def test_first_sentence_comes_in_growing_pieces_that_join_exactly():
    engines = FakeEngines()
    text = "A rather long first sentence for the pieces. Then a second one."
    async with Harness(engines, first_audio_frames=4) as synthesizer:
        got = [a async for a in synthesizer.stream(synthesizer.validate(text))]
    first = [a for a in got if a.index == 0]
    assert len(first) > 2 and [a.final for a in first] == [False] * (len(first) - 1) + [True]
    assert first[0].pcm.size == 4 * HOP
    frames = engines.encoded[0]
    joined = np.concatenate([a.pcm for a in first])
    expected = (np.repeat(np.arange(frames) / 1000, HOP) * 32767).astype(np.int16)
    assert np.array_equal(joined, expected)  # every frame once, in order, context cropped away
    assert [a.final for a in got if a.index == 1] == [True]  # later sentences are decoded whole


async def test_the_first_sentence_with_sound_is_the_one_decoded_in_pieces():
    text = "... A rather long sentence that comes after the silent one. Then another."
    async with Harness(FakeEngines(), first_audio_frames=4) as synthesizer:
        got = [a async for a in synthesizer.stream(synthesizer.validate(text))]
    assert [(a.index, a.pcm.size > 0) for a in got if a.index == 0] == [(0, False)]
    assert len([a for a in got if a.index == 1]) > 2
    assert len([a for a in got if a.index == 2]) == 1


async def test_nothing_else_starts_before_the_first_audio_then_lookahead_bounds_the_work():
    engines = FakeEngines()
    async with Harness(engines, lookahead_sentences=1, first_audio_frames=0) as synthesizer:
        stream = synthesizer.stream(synthesizer.validate(" ".join(f"Sentence {w}." for w in "abcdefgh")))
        first = await anext(stream)
        await asyncio.sleep(0.05)
        assert first.index == 0 and synthesizer.stats.sentences_started == 1  # the first audio had it all
        second = await anext(stream)
        await asyncio.sleep(0.1)  # the consumer dawdles: only the look-ahead sentence may run meanwhile
        assert second.index == 1 and synthesizer.stats.sentences_started == 3
        await stream.aclose()  # the client went away
    assert synthesizer.stats.sentences_started == 3


async def test_cancelling_the_consumer_drops_queued_sentences_without_error():
    engines = FakeEngines()
    engines.hold()
    async with Harness(engines, lookahead_sentences=3, first_audio_frames=0) as synthesizer:
        stream = synthesizer.stream(synthesizer.validate("A b. C d. E f. G h. I j. K l."))
        engines.allow(1)  # sentence 0 only; then 1 waits inside the encoder, 2..4 in its queue
        first = await anext(stream)
        waiting = asyncio.create_task(anext(stream))
        await asyncio.sleep(0.1)
        assert synthesizer.stats.sentences_started == 5
        waiting.cancel()  # the RPC is cancelled while the stream waits for sentence 1
        with pytest.raises(asyncio.CancelledError):
            await waiting
        engines.allow(10)
        await asyncio.sleep(0.1)
    assert first.index == 0
    assert len(engines.encoded) == 2  # sentences 0 and 1; the queued ones were dropped, never computed
    assert len(engines.decoded) == 1  # sentence 1 was cancelled before its decode


async def test_a_failing_sentence_raises_the_engine_error_itself():
    engines = FakeEngines()
    engines.fail_on = "bad"
    async with Harness(engines) as synthesizer:
        with pytest.raises(InferenceError, match="engine exploded"):
            _ = [a async for a in synthesizer.stream(synthesizer.validate("Good one. Bad"))]


async def test_validation_resolves_defaults_and_names_bad_values():
    synthesizer = Harness(FakeEngines(), max_text_chars=10).synthesizer
    request = synthesizer.validate("Hi.")
    assert (request.voice, request.sample_rate_hz, request.length_scale) == ("fake", 22050, 1.0)
    with pytest.raises(InvalidArgumentError, match="limit of 10"):
        synthesizer.validate("x" * 11)
    with pytest.raises(NotFoundError, match="'nope'"):
        synthesizer.validate("Hi.", voice="nope")
    with pytest.raises(InvalidArgumentError, match="sample_rate_hz=7999"):
        synthesizer.validate("Hi.", sample_rate_hz=7999)


def test_pcm_has_fixed_gain_is_clipped_and_resampled_in_a_stream():
    audio = np.sin(np.linspace(0, 200 * np.pi, 22050)).astype(np.float32) * 0.25
    pcm = _to_pcm(audio, 2.0, None, True)
    assert pcm.dtype == np.int16 and abs(int(np.abs(pcm).max()) - 16383) <= 1
    assert _to_pcm(np.array([2.0, -2.0], np.float32), 1.0, None, True).tolist() == [32767, -32767]
    whole = _to_pcm(audio, 1.0, soxr.ResampleStream(22050, 16000, 1, dtype="float32"), True)
    stream = soxr.ResampleStream(22050, 16000, 1, dtype="float32")
    parts = [_to_pcm(audio[:5000], 1.0, stream, False), _to_pcm(audio[5000:], 1.0, stream, True)]
    assert whole.size == 16000 and np.array_equal(np.concatenate(parts), whole)


def test_chunks_cover_the_sentence():
    pcm = np.arange(22050 * 3, dtype=np.int16)
    chunks = chunk_pcm(pcm, 22050, 1000)
    assert [c.size for c in chunks] == [22050] * 3 and np.array_equal(np.concatenate(chunks), pcm)
    assert [c.size for c in chunk_pcm(np.zeros(0, np.int16), 22050, 1000)] == [0]


def test_options_are_checked():
    with pytest.raises(ValueError, match="max_text_chars"):
        TtsConfig(max_text_chars=0)
    with pytest.raises(ValueError, match="resample_quality"):
        TtsConfig(resample_quality="best")
