"""Text in, audio out sentence by sentence: validation, the sentence pipeline and audio post-processing.

Independent of gRPC so the servicer stays thin and benchmarks can drive it directly. Each sentence is
normalised and phonemized off the event loop, encoded to latents through the encoder's batcher, and
decoded through the decoder's batcher. The first sentence of a request is decoded in growing windows
(``first_audio_frames``, then twice as many, ...) with enough latent context on each side that the
pieces join into exactly the whole decode, so its first audio leaves after the encoder and one short
decoder window instead of the whole sentence. Audio gets a fixed gain, is resampled with a streaming
soxr resampler when asked (identical to a one-shot resample of the whole sentence) and becomes int16.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import soxr

from engines.batcher import DynamicBatcher
from services.common.errors import InvalidArgumentError, NotFoundError, shown
from services.common.ids import validate_voice_name
from services.common.sentences import Sentence, split_sentences
from services.common.text_input import clean_text
from services.tts.batching import SentenceItem
from services.tts.config import (
    MAX_LENGTH_SCALE,
    MAX_SAMPLE_RATE_HZ,
    MIN_LENGTH_SCALE,
    MIN_SAMPLE_RATE_HZ,
    TtsConfig,
)
from services.tts.text import normalize
from services.tts.voice import Voice

_MAX_WAV_VALUE = 32767.0
# Most pieces one sentence is sent in (windows grow geometrically, so this is never the limit in
# practice); it also bounds each sentence's queue.
MAX_PIECES = 8
LONG_TEXT_CHARS = 400  # longer request texts are split into sentences on a worker thread


@dataclass(frozen=True, kw_only=True)
class VoiceRuntime:
    """A loaded voice and the batchers in front of its encoder and decoder instances."""

    voice: Voice
    encoder: DynamicBatcher[SentenceItem, np.ndarray]
    decoder: DynamicBatcher[np.ndarray, np.ndarray]
    hop_length: int
    context_frames: int


@dataclass(frozen=True, kw_only=True)
class SynthesisRequest:
    """A validated request: every default resolved."""

    text: str
    voice: str
    sample_rate_hz: int
    length_scale: float


@dataclass(frozen=True, kw_only=True)
class SentenceAudio:
    """A piece of one sentence's audio (int16 mono) and the span of the request text it speaks."""

    index: int
    count: int  # sentences in the request; the last one has index == count - 1
    start: int
    end: int
    pcm: np.ndarray
    sample_rate_hz: int
    final: bool = True  # the sentence's last piece
    skipped_phonemes: tuple[str, ...] = ()


@dataclass
class SynthesisStats:
    """Counters the stage exposes (tests use them to see that cancelled requests stop early)."""

    sentences_started: int = 0
    sentences_done: int = 0
    requests: int = 0
    skipped_phonemes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _End:
    """Marks the end of one sentence's pieces."""


def plan_windows(frames: int, first_frames: int) -> list[tuple[int, int]]:
    """Frame ranges to decode: ``first_frames``, then doubling, the last one taking the rest.

    One window (no split) when ``first_frames`` is 0 or the sentence is shorter than two first windows.
    """
    if first_frames <= 0 or frames <= 2 * first_frames:
        return [(0, frames)]
    windows: list[tuple[int, int]] = []
    start, size = 0, first_frames
    while start < frames:
        end = min(frames, start + size)
        # A remainder shorter than this window, or the piece limit, joins this window.
        if frames - end < size or len(windows) == MAX_PIECES - 1:
            end = frames
        windows.append((start, end))
        start, size = end, size * 2
    return windows


class SpeechSynthesizer:
    """Synthesises validated requests sentence by sentence over one or more loaded voices."""

    def __init__(self, voices: Mapping[str, VoiceRuntime], config: TtsConfig) -> None:
        if config.voice not in voices:
            raise ValueError(f"default voice {config.voice!r} is not loaded (have {sorted(voices)})")
        self.voices = dict(voices)
        self.config = config
        self.stats = SynthesisStats()
        self._gain = 10 ** (config.gain_db / 20)

    @property
    def default_voice(self) -> str:
        return self.config.voice

    def validate(self, text: str, *, voice: str = "", sample_rate_hz: int = 0,
                 length_scale: float = 0.0) -> SynthesisRequest:
        """Check a request's fields and resolve defaults.

        Raises:
            InvalidArgumentError: empty or over-long text, text with no words (only controls, punctuation or
                emoji), a sample rate or length scale out of range.
            NotFoundError: no loaded voice has that name.
        """
        clean_text(text, max_chars=self.config.max_text_chars)  # the rule NLP applies: nothing to say is an error
        runtime = self._voice(validate_voice_name(voice))
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
        raise NotFoundError(f"voice {shown(name)} not found; available: {', '.join(sorted(self.voices))}")

    async def sentences_of(self, request: SynthesisRequest) -> list[Sentence]:
        """The request's sentences with their spans; a long text is split off the event loop (pysbd is pure
        Python: about 0.6 ms for a reply, tens of ms for 2000 characters of odd punctuation)."""
        split = partial(split_sentences, request.text, max_sentence_chars=self.config.max_sentence_chars)
        return await asyncio.to_thread(split) if len(request.text) > LONG_TEXT_CHARS else split()

    async def stream(self, request: SynthesisRequest, *, deadline_s: float | None = None
                     ) -> AsyncIterator[SentenceAudio]:
        """Yield each sentence's audio in order, piece by piece, as soon as it is ready.

        Nothing else is started until the first audio is out, so the first sentence has the cores to
        itself. Then up to ``lookahead_sentences`` later sentences are synthesised while the current one
        is being consumed; when the consumer stops (client cancel, error), the pending ones are cancelled
        — a sentence still queued in a batcher is dropped there and never computed.
        """
        self.stats.requests += 1
        sentences = await self.sentences_of(request)
        runtime = self.voices[request.voice]
        upcoming = iter(enumerate(sentences))
        # This generator owns its sentence tasks directly rather than through a TaskGroup: a TaskGroup
        # exiting on the GeneratorExit of an early ``aclose`` (or on one failed sentence) re-raises it
        # inside an exception group, which would hide the real error from the status mapping.
        jobs: deque[tuple[asyncio.Task[None], asyncio.Queue[SentenceAudio | _End]]] = deque()

        def top_up(limit: int) -> None:
            while len(jobs) < limit:
                nxt = next(upcoming, None)
                if nxt is None:
                    return
                index, sentence = nxt
                # Bounded: a sentence puts at most MAX_PIECES pieces and its end marker.
                queue: asyncio.Queue[SentenceAudio | _End] = asyncio.Queue(maxsize=MAX_PIECES + 1)
                # Until audio has gone out, the sentence being made is the one the listener waits for.
                split = 0 if first_sent else self.config.first_audio_frames
                task = asyncio.create_task(
                    self._produce(runtime, request, index, len(sentences), sentence, split, deadline_s, queue),
                    name=f"tts-sentence-{index}")
                jobs.append((task, queue))

        window = 1 + self.config.lookahead_sentences
        first_sent = False  # audio (not just an empty piece) has been yielded
        top_up(1)
        try:
            while jobs:
                task, queue = jobs[0]
                while not isinstance(item := await queue.get(), _End):
                    yield item
                    # Only now, with the consumer back for more, does the window move on: a client
                    # that went away stops synthesis after at most ``lookahead_sentences`` more.
                    first_sent = first_sent or item.pcm.size > 0
                    top_up(window if first_sent else 1)
                await task  # the sentence's own error, if it failed
                jobs.popleft()
                top_up(window if first_sent else 1)
        finally:
            for task, _ in jobs:
                task.cancel()
            if jobs:
                await asyncio.gather(*(task for task, _ in jobs), return_exceptions=True)

    async def _produce(self, runtime: VoiceRuntime, request: SynthesisRequest, index: int, count: int,
                       sentence: Sentence, first_frames: int, deadline_s: float | None,
                       queue: asyncio.Queue[SentenceAudio | _End]) -> None:
        self.stats.sentences_started += 1
        try:
            await self._synthesize(runtime, request, index, count, sentence, first_frames, deadline_s, queue)
            self.stats.sentences_done += 1
        finally:
            queue.put_nowait(_End())

    async def _synthesize(self, runtime: VoiceRuntime, request: SynthesisRequest, index: int, count: int,
                          sentence: Sentence, first_frames: int, deadline_s: float | None,
                          queue: asyncio.Queue[SentenceAudio | _End]) -> None:
        voice = runtime.voice

        def piece(pcm: np.ndarray, final: bool, skipped: tuple[str, ...] = ()) -> SentenceAudio:
            return SentenceAudio(index=index, count=count, start=sentence.start, end=sentence.end, pcm=pcm,
                                 sample_rate_hz=request.sample_rate_hz, final=final, skipped_phonemes=skipped)

        ids, skipped = await asyncio.to_thread(_prepare, voice, sentence.text)
        for phoneme in skipped:
            self.stats.skipped_phonemes[phoneme] = self.stats.skipped_phonemes.get(phoneme, 0) + 1
        if ids is None:
            queue.put_nowait(piece(np.zeros(0, dtype=np.int16), True))
            return
        # The reply's first audio is what the listener waits for: urgent on the GPU (the high-priority CUDA
        # stream); later sentences have the time the earlier ones take to play.
        first = index == 0
        z = await runtime.encoder.submit(SentenceItem(ids, self._scales(voice, request.length_scale)),
                                         deadline_s=deadline_s, urgent=first)
        frames, hop, context = z.shape[-1], runtime.hop_length, runtime.context_frames
        resampler = None
        if request.sample_rate_hz != voice.sample_rate_hz:
            resampler = soxr.ResampleStream(voice.sample_rate_hz, request.sample_rate_hz, 1, dtype="float32",
                                            quality=self.config.resample_quality)
        windows = plan_windows(frames, first_frames)
        for k, (start, end) in enumerate(windows):
            lo, hi = max(0, start - context), min(frames, end + context)
            audio = await runtime.decoder.submit(z[:, lo:hi], deadline_s=deadline_s, urgent=first and k == 0)
            final = k == len(windows) - 1
            pcm = await asyncio.to_thread(_to_pcm, audio[(start - lo) * hop : (end - lo) * hop], self._gain,
                                          resampler, final)
            queue.put_nowait(piece(pcm, final, tuple(skipped) if final else ()))

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


def _to_pcm(audio: np.ndarray, gain: float, resampler: soxr.ResampleStream | None, last: bool) -> np.ndarray:
    """Float model output to int16 PCM: fixed gain, optional streaming resample, clip (as Piper does)."""
    audio = audio.astype(np.float32, copy=False) * np.float32(gain)
    if resampler is not None:
        audio = resampler.resample_chunk(audio, last=last)
    return np.clip(audio * _MAX_WAV_VALUE, -_MAX_WAV_VALUE, _MAX_WAV_VALUE).astype(np.int16)


def chunk_pcm(pcm: np.ndarray, sample_rate_hz: int, max_chunk_ms: int) -> list[np.ndarray]:
    """Split PCM into pieces of at most ``max_chunk_ms`` (at least one, maybe empty)."""
    step = max(1, sample_rate_hz * max_chunk_ms // 1000)
    if pcm.size <= step:
        return [pcm]
    return [pcm[i : i + step] for i in range(0, pcm.size, step)]
