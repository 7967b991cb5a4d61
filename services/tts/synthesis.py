"""Text in, audio per sentence out: validation, the sentence pipeline and audio post-processing.

Independent of gRPC so the servicer stays thin and benchmarks can drive it directly. Each sentence is
normalised and phonemized off the event loop, synthesised through the voice's dynamic batcher, then
peak-normalised, converted to 16-bit PCM and, when asked, resampled with soxr — also off the loop.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import soxr

from engines.batcher import DynamicBatcher
from services.common.errors import InvalidArgumentError, NotFoundError
from services.tts.batching import SentenceItem
from services.tts.config import (
    MAX_LENGTH_SCALE,
    MAX_SAMPLE_RATE_HZ,
    MIN_LENGTH_SCALE,
    MIN_SAMPLE_RATE_HZ,
    TtsConfig,
)
from services.tts.text import Sentence, normalize, split_sentences
from services.tts.voice import Voice

_MAX_WAV_VALUE = 32767.0


@dataclass(frozen=True, kw_only=True)
class VoiceRuntime:
    """A loaded voice and the batcher in front of its engine instances."""

    voice: Voice
    batcher: DynamicBatcher[SentenceItem, np.ndarray]


@dataclass(frozen=True, kw_only=True)
class SynthesisRequest:
    """A validated request: every default resolved."""

    text: str
    voice: str
    sample_rate_hz: int
    length_scale: float


@dataclass(frozen=True, kw_only=True)
class SentenceAudio:
    """One sentence's audio (int16 mono) and the span of the request text it speaks."""

    index: int
    count: int  # sentences in the request; the last one has index == count - 1
    start: int
    end: int
    pcm: np.ndarray
    sample_rate_hz: int
    skipped_phonemes: tuple[str, ...] = ()


@dataclass
class SynthesisStats:
    """Counters the stage exposes (tests use them to see that cancelled requests stop early)."""

    sentences_started: int = 0
    sentences_done: int = 0
    requests: int = 0
    skipped_phonemes: dict[str, int] = field(default_factory=dict)


class SpeechSynthesizer:
    """Synthesises validated requests sentence by sentence over one or more loaded voices."""

    def __init__(self, voices: Mapping[str, VoiceRuntime], config: TtsConfig) -> None:
        if config.voice not in voices:
            raise ValueError(f"default voice {config.voice!r} is not loaded (have {sorted(voices)})")
        self.voices = dict(voices)
        self.config = config
        self.stats = SynthesisStats()

    @property
    def default_voice(self) -> str:
        return self.config.voice

    def validate(self, text: str, *, voice: str = "", sample_rate_hz: int = 0,
                 length_scale: float = 0.0) -> SynthesisRequest:
        """Check a request's fields and resolve defaults.

        Raises:
            InvalidArgumentError: empty or over-long text, a sample rate or length scale out of range.
            NotFoundError: no loaded voice has that name.
        """
        limit = self.config.max_text_chars
        if not text.strip():
            raise InvalidArgumentError(f"text is empty; send 1..{limit} characters")
        if len(text) > limit:
            raise InvalidArgumentError(
                f"text has {len(text)} characters, over the limit of {limit} (max_text_chars)")
        runtime = self._voice(voice)
        native = runtime.voice.sample_rate_hz
        if sample_rate_hz and not MIN_SAMPLE_RATE_HZ <= sample_rate_hz <= MAX_SAMPLE_RATE_HZ:
            raise InvalidArgumentError(
                f"sample_rate_hz={sample_rate_hz} is outside {MIN_SAMPLE_RATE_HZ}..{MAX_SAMPLE_RATE_HZ} "
                f"(0 = the voice's native {native})")
        if length_scale and not (math.isfinite(length_scale) and MIN_LENGTH_SCALE <= length_scale <= MAX_LENGTH_SCALE):
            raise InvalidArgumentError(
                f"length_scale={length_scale} is outside {MIN_LENGTH_SCALE}..{MAX_LENGTH_SCALE} (0 = the voice's default)")
        return SynthesisRequest(
            text=text,
            voice=runtime.voice.name,
            sample_rate_hz=sample_rate_hz or native,
            length_scale=length_scale or runtime.voice.scales.length,
        )

    def _voice(self, name: str) -> VoiceRuntime:
        if not name:
            return self.voices[self.config.voice]
        if name in self.voices:
            return self.voices[name]
        folded = {k.lower(): v for k, v in self.voices.items()}
        if name.lower() in folded:
            return folded[name.lower()]
        raise NotFoundError(f"voice {name!r} not found; available: {', '.join(sorted(self.voices))}")

    def sentences_of(self, request: SynthesisRequest) -> list[Sentence]:
        """The request's sentences with their spans."""
        return split_sentences(request.text, max_sentence_chars=self.config.max_sentence_chars)

    async def stream(self, request: SynthesisRequest, *, deadline_s: float | None = None
                     ) -> AsyncIterator[SentenceAudio]:
        """Yield each sentence's audio in order, as soon as it is ready.

        Up to ``lookahead_sentences`` later sentences are synthesised while the current one is being
        consumed; when the consumer stops (client cancel, error), the pending ones are cancelled — a
        sentence still queued in the batcher is dropped there and never computed.
        """
        self.stats.requests += 1
        sentences = self.sentences_of(request)
        runtime = self.voices[request.voice]
        upcoming = iter(enumerate(sentences))
        # This generator owns its sentence tasks directly rather than through a TaskGroup: a TaskGroup
        # exiting on the GeneratorExit of an early ``aclose`` (or on one failed sentence) re-raises it
        # inside an exception group, which would hide the real error from the status mapping.
        pending: deque[asyncio.Task[SentenceAudio]] = deque()

        def schedule() -> None:
            for index, sentence in upcoming:
                pending.append(asyncio.create_task(
                    self._sentence(runtime, request, index, len(sentences), sentence, deadline_s),
                    name=f"tts-sentence-{index}"))
                return

        try:
            for _ in range(1 + self.config.lookahead_sentences):
                schedule()
            while pending:
                audio = await pending.popleft()
                yield audio
                # Only now, with the consumer back for more, does the window move on: a client that
                # went away stops synthesis after at most ``lookahead_sentences`` more sentences.
                schedule()
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def _sentence(self, runtime: VoiceRuntime, request: SynthesisRequest, index: int, count: int,
                        sentence: Sentence, deadline_s: float | None) -> SentenceAudio:
        self.stats.sentences_started += 1
        voice = runtime.voice
        ids, skipped = await asyncio.to_thread(_prepare, voice, sentence.text)
        pcm = np.zeros(0, dtype=np.int16)
        if ids is not None:
            scales = self._scales(voice, request.length_scale)
            audio = await runtime.batcher.submit(SentenceItem(ids, scales), deadline_s=deadline_s)
            pcm = await asyncio.to_thread(
                _to_pcm, audio, voice.sample_rate_hz, request.sample_rate_hz,
                self.config.normalize_peak, self.config.resample_quality)
        self.stats.sentences_done += 1
        for phoneme in skipped:
            self.stats.skipped_phonemes[phoneme] = self.stats.skipped_phonemes.get(phoneme, 0) + 1
        return SentenceAudio(index=index, count=count, start=sentence.start, end=sentence.end, pcm=pcm,
                             sample_rate_hz=request.sample_rate_hz, skipped_phonemes=tuple(skipped))

    def _scales(self, voice: Voice, length_scale: float) -> tuple[float, float, float]:
        noise = self.config.noise_scale if self.config.noise_scale >= 0 else voice.scales.noise
        noise_w = self.config.noise_w_scale if self.config.noise_w_scale >= 0 else voice.scales.noise_w
        return (float(noise), float(length_scale), float(noise_w))


def _prepare(voice: Voice, text: str) -> tuple[list[int] | None, list[str]]:
    """Normalise and phonemize one sentence; ``None`` ids when nothing in it makes a sound."""
    phonemes = voice.phonemizer.phonemize(normalize(text))
    if not voice.id_map.speakable(phonemes):
        return None, []
    result = voice.id_map.to_ids(phonemes)
    return result.ids, result.skipped


def _to_pcm(audio: np.ndarray, voice_rate_hz: int, rate_hz: int, normalize_peak: bool, quality: str) -> np.ndarray:
    """Float model output to int16 PCM at ``rate_hz`` (Piper's scaling: peak to full range, then clip)."""
    audio = audio.astype(np.float32, copy=False)
    if normalize_peak:
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        audio = audio / peak if peak >= 1e-8 else np.zeros_like(audio)
    if rate_hz != voice_rate_hz and audio.size:
        audio = soxr.resample(audio, voice_rate_hz, rate_hz, quality=quality)
    return np.clip(audio * _MAX_WAV_VALUE, -_MAX_WAV_VALUE, _MAX_WAV_VALUE).astype(np.int16)


def chunk_pcm(pcm: np.ndarray, sample_rate_hz: int, max_chunk_ms: int) -> list[np.ndarray]:
    """Split one sentence's PCM into pieces of at most ``max_chunk_ms`` (at least one, maybe empty)."""
    step = max(1, sample_rate_hz * max_chunk_ms // 1000)
    if pcm.size <= step:
        return [pcm]
    return [pcm[i : i + step] for i in range(0, pcm.size, step)]
