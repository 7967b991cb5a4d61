"""One recognition stream: audio in, VAD endpointing, interim and final results out.

Audio is resampled to 16 kHz and cut into 32 ms frames for Silero; the :class:`Endpointer` turns
their probabilities into utterance events. While an utterance grows, it is re-decoded every
``interim_interval_ms`` of audio (at most one interim decode in flight per stream, and a stage-wide
cap so interims never crowd out finals). When the trailing silence reaches ``post_speech_pad_ms`` the
utterance's audio is complete, so its final decode starts right away; at the endpoint
(``silence_ms``) the result is usually ready. Speech resuming before the endpoint discards that
speculative decode. Finals are emitted in utterance order; an interim is never sent after its final.
With ``speculative_results``, the early final decode's transcript is also sent as soon as it is ready (if the
endpoint has not come first) as a speculative result, and withdrawn (``withdrawn``) if speech resumes. While it
stands, the client may answer it with SET_UTTERANCE_SILENCE: a shorter or longer silence for that utterance.

Empty input is defined, not an error: a stream that ends without any speech gets one empty final
result (reason END_OF_STREAM), and an END_OF_UTTERANCE with no speech pending gets an empty final
result (reason CLIENT_END_OF_UTTERANCE).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from protos import asr_pb2
from services.asr.audio import StreamResampler, pcm16_to_float, strip_wav_header
from services.asr.config import AsrConfig, StreamSettings
from services.asr.endpointing import FRAME_SAMPLES, Endpointer, EndpointerConfig, Event, EventKind
from services.asr.phrases import PhraseSet
from services.asr.recognizer import INTERIMS, SpeechRecognizer, Transcript
from services.asr.vad import VadJob, VadState, frames_of
from services.common import InvalidArgumentError, OutOfRangeError

RATE = 16_000
Emit = Callable[[asr_pb2.SpeechResult], Awaitable[None]]


class AudioBuffer:
    """16 kHz samples of the stream from ``base`` (a sample index) on, grown amortised, trimmed from the front."""

    def __init__(self) -> None:
        self._data = np.zeros(RATE * 4, np.float32)
        self._len = 0
        self.base = 0

    @property
    def end(self) -> int:
        """Stream sample index one past the last sample received."""
        return self.base + self._len

    def append(self, samples: np.ndarray) -> None:
        need = self._len + len(samples)
        if need > len(self._data):
            grown = np.zeros(max(need, 2 * len(self._data)), np.float32)
            grown[: self._len] = self._data[: self._len]
            self._data = grown
        self._data[self._len:need] = samples
        self._len = need

    def slice(self, start: int, end: int) -> np.ndarray:
        """Copy of stream samples [start, end), clipped to what is held."""
        lo = max(start, self.base) - self.base
        hi = min(end, self.end) - self.base
        return self._data[lo:max(lo, hi)].copy()

    def trim(self, keep_from: int) -> None:
        """Forget samples before stream index ``keep_from``."""
        drop = min(max(0, keep_from - self.base), self._len)
        if drop:
            self._data[: self._len - drop] = self._data[drop:self._len]
            self._len -= drop
            self.base += drop


@dataclass(eq=False)
class _Utterance:
    index: int
    start_frame: int
    next_interim_frame: int
    speculative: asyncio.Task[Transcript] | None = None
    speculative_end: int = 0
    speculation_sent: bool = False  # a speculative result of this utterance is out (and not withdrawn)
    interim: asyncio.Task[None] | None = None
    finalised: bool = False


class RealTimePace:
    """Holds a stream to real time plus a lead: its audio may run ``lead_s`` ahead of the wall clock (counted
    from its first audio message), no further. ``lead_s`` 0 disables the bound."""

    def __init__(self, lead_s: float) -> None:
        self.lead_s = lead_s
        self._started: float | None = None

    async def hold(self, audio_s: float) -> None:
        """Wait until ``audio_s`` seconds of audio received so far are within the lead of real time."""
        now = time.monotonic()
        if self._started is None:
            self._started = now
        ahead_s = audio_s - (now - self._started) - self.lead_s
        if self.lead_s and ahead_s > 0:
            await asyncio.sleep(ahead_s)


class StreamSession:
    """State of one StreamingRecognize call; the servicer feeds it requests in order."""

    def __init__(self, recognizer: SpeechRecognizer, settings: StreamSettings, config: AsrConfig, *,
                 emit: Emit, tasks: asyncio.TaskGroup, deadline_s: float | None,
                 phrases: tuple[PhraseSet, ...] = ()) -> None:
        self.recognizer = recognizer
        self.settings = settings
        self.phrases = phrases  # finals are boosted with these (SpeechRecognizer.phrase_sets)
        self.config = config
        self._emit = emit
        self._tasks = tasks
        self._rpc_deadline_s = deadline_s
        self._resampler = StreamResampler(settings.sample_rate_hz)
        self._buffer = AudioBuffer()
        self._remainder = np.zeros(0, np.float32)
        self._vad_state = VadState.initial()
        self._endpointer = Endpointer(EndpointerConfig(
            threshold=settings.speech_threshold, silence_ms=settings.silence_ms,
            min_speech_ms=settings.min_speech_ms, post_pad_ms=min(config.post_speech_pad_ms, settings.silence_ms),
            max_utterance_ms=int(config.max_utterance_s * 1000)))
        self._pre_pad = config.pre_speech_pad_ms * RATE // 1000
        self._post_pad = config.post_speech_pad_ms * RATE // 1000
        self._interim_frames = max(1, round(settings.interim_interval_ms / (FRAME_SAMPLES * 1000 / RATE)))
        self._interim_backoff = 1
        self._input_samples = 0
        self._max_input_samples = int(config.max_audio_s * settings.sample_rate_hz)
        self._first_audio = True
        self._utterance: _Utterance | None = None
        self._next_index = 0
        self._final_chain: asyncio.Task[None] | None = None
        self._interims: set[asyncio.Task[None]] = set()

    # -- requests ----------------------------------------------------------------------------------

    @property
    def audio_s(self) -> float:
        """Seconds of audio received so far."""
        return self._input_samples / self.settings.sample_rate_hz

    async def audio(self, data: bytes) -> None:
        """One audio message (the first may start with a WAV header): validate, resample, run the VAD, act on
        endpoint events."""
        if self._first_audio and data:
            data = strip_wav_header(data, self.settings.sample_rate_hz)
            self._first_audio = False
        await self.pcm(data)

    async def pcm(self, data: bytes) -> None:
        """LINEAR16 samples with no header (``Recognize`` strips a whole clip's header once, then feeds it here)."""
        self._first_audio = False
        samples = pcm16_to_float(data, what=f"audio chunk at {self._input_samples / self.settings.sample_rate_hz:.2f} s")
        if not len(samples):
            return  # an empty chunk is allowed and changes nothing
        self._input_samples += len(samples)
        if self._input_samples > self._max_input_samples:
            raise OutOfRangeError(
                f"stream audio is longer than max_audio_s={self.config.max_audio_s:g} s "
                f"(received {self._input_samples / self.settings.sample_rate_hz:.1f} s)")
        if not self._resampler.passthrough:
            samples = await asyncio.to_thread(self._resampler.process, samples)
        await self._consume(samples)

    async def end_of_utterance(self) -> None:
        """The client's END_OF_UTTERANCE: finalise what is pending now."""
        self._finalise_pending(asr_pb2.CLIENT_END_OF_UTTERANCE)

    def set_utterance_silence(self, utterance_index: int, silence_ms: int) -> None:
        """SET_UTTERANCE_SILENCE (validated by the servicer): the silence that ends utterance ``utterance_index``,
        if its speculative result still stands; ends it now if the silence has lasted that long."""
        if utterance_index >= self._next_index:
            raise InvalidArgumentError(f"control.utterance_index={utterance_index} has not started (the stream's "
                                       f"next utterance is {self._next_index})")
        utt = self._utterance
        if utt is None or utt.index != utterance_index or not utt.speculation_sent:
            return  # ended, or speech resumed: the judgement is stale
        if (event := self._endpointer.set_silence(silence_ms)) is not None:
            self._on_event(event)

    async def finish(self) -> None:
        """End of the request stream: flush, finalise, wait for every final to be sent."""
        if not self._resampler.passthrough:
            tail = await asyncio.to_thread(self._resampler.process, np.zeros(0, np.float32), last=True)
            await self._consume(tail)
        if self._endpointer.pending or self._next_index == 0:
            self._finalise_pending(asr_pb2.END_OF_STREAM)
        if self._final_chain is not None:
            await self._final_chain
        for task in self._interims:
            task.cancel()  # every utterance is final now; their results could not be sent

    # -- audio and events --------------------------------------------------------------------------

    async def _consume(self, samples: np.ndarray) -> None:
        if not len(samples):
            return
        self._buffer.append(samples)
        pending = np.concatenate([self._remainder, samples])
        frames = frames_of(pending)
        self._remainder = pending[len(frames) * FRAME_SAMPLES:]
        if not len(frames):
            return
        result = await self.recognizer.vad(VadJob(frames, self._vad_state))
        self._vad_state = result.state
        for prob in result.probs:
            for event in self._endpointer.push(float(prob)):
                self._on_event(event)
            self._maybe_interim()
        if not self._endpointer.pending:
            # Idle: keep only the pre-speech pad (plus the unprocessed remainder) in memory.
            self._buffer.trim(self._endpointer.frames_seen * FRAME_SAMPLES - self._pre_pad)

    def _on_event(self, event: Event) -> None:
        if event.kind is EventKind.START:
            self._utterance = _Utterance(index=self._next_index, start_frame=event.start_frame,
                                         next_interim_frame=event.frame + self._interim_frames)
            self._next_index += 1
        elif self._utterance is None:
            return
        elif event.kind is EventKind.TAIL:
            end = event.end_frame * FRAME_SAMPLES + self._post_pad
            self._utterance.speculative_end = end
            self._utterance.speculative = self._spawn_final(self._decode(self._utterance.start_frame, end, final=True)())
            if self.settings.speculative_results:
                self._spawn(self._speculative_result(self._utterance, self._utterance.speculative, end))
        elif event.kind is EventKind.RESUME:
            if self._utterance.speculative is not None:
                self._utterance.speculative.cancel()
                self._utterance.speculative = None
            if self._utterance.speculation_sent:
                self._utterance.speculation_sent = False
                self._spawn(self._emit(asr_pb2.SpeechResult(speculative=True, withdrawn=True,
                                                            utterance_index=self._utterance.index)))
        elif event.kind is EventKind.END:
            reason = asr_pb2.MAX_UTTERANCE_LENGTH if event.forced else asr_pb2.VAD_SILENCE
            end = event.end_frame * FRAME_SAMPLES + (0 if event.forced else self._post_pad)
            self._finalise(self._utterance, end, event.end_frame * FRAME_SAMPLES, reason)

    def _finalise_pending(self, reason: int) -> None:
        """Client end-of-utterance or end of stream: end pending speech, or answer with an empty final."""
        event = self._endpointer.force_end()
        end = self._buffer.end
        if event is None:
            self._chain_final(None, asr_pb2.SpeechResult(
                is_final=True, stability=1.0, start_s=end / RATE, end_s=end / RATE, endpoint_reason=reason,
                utterance_index=self._next_index), time.monotonic())
            self._next_index += 1
            return
        if self._utterance is None:  # a candidate shorter than min_speech_ms: the client insists
            self._utterance = _Utterance(index=self._next_index, start_frame=event.start_frame, next_interim_frame=0)
            self._next_index += 1
        self._finalise(self._utterance, end, end, reason)

    def _finalise(self, utt: _Utterance, audio_end: int, speech_end: int, reason: int) -> None:
        endpoint_at = time.monotonic()
        utt.finalised = True
        self._utterance = None
        if utt.interim is not None and not utt.interim.done():
            utt.interim.cancel()  # its result could not be shown any more
        if utt.speculative is not None and utt.speculative_end == audio_end:
            decode = utt.speculative
        else:
            if utt.speculative is not None:
                utt.speculative.cancel()
            decode = self._spawn_final(self._decode(utt.start_frame, audio_end, final=True)())
        start = utt.start_frame * FRAME_SAMPLES
        template = asr_pb2.SpeechResult(is_final=True, stability=1.0, start_s=start / RATE,
                                        end_s=max(speech_end, start) / RATE, endpoint_reason=reason,
                                        utterance_index=utt.index)
        self._chain_final(decode, template, endpoint_at)

    def _chain_final(self, decode: asyncio.Task[Transcript] | None, template: asr_pb2.SpeechResult,
                     endpoint_at: float) -> None:
        previous = self._final_chain

        async def emit() -> None:
            transcript = await decode if decode is not None else None
            if previous is not None:
                await previous  # finals leave in utterance order
            if transcript is not None:
                template.text = transcript.text
                template.confidence = transcript.confidence
                template.boosted_phrases.extend(transcript.boosted_phrases)
            template.latency_ms = (time.monotonic() - endpoint_at) * 1e3
            template.sent_unix_ns = time.time_ns()
            await self._emit(template)

        self._final_chain = self._spawn(emit())

    # -- decoding ----------------------------------------------------------------------------------

    def _maybe_interim(self) -> None:
        utt = self._utterance
        if utt is None or not self.settings.interim_results or not self._endpointer.in_speech:
            return
        if self._endpointer.in_silence:
            return  # the final decode may be about to start; do not hold the engines with an interim
        frame = self._endpointer.frames_seen - 1
        if frame < utt.next_interim_frame:
            return
        # Interims are best effort: skip one while this stream's last one runs or the stage is busy; after a
        # skip for load the stream waits 2x, then 4x its interval (back to 1x once one starts).
        utt.next_interim_frame = frame + self._interim_frames * self._interim_backoff
        if utt.interim is not None and not utt.interim.done():
            INTERIMS.labels(outcome="skipped_stream").inc()
            return
        if not self.recognizer.interim_gate():
            self._interim_backoff = min(4, self._interim_backoff * 2)
            return
        self._interim_backoff = 1
        end = (frame + 1) * FRAME_SAMPLES
        utt.interim = self.recognizer.track(
            self._spawn(self._interim(utt, self._decode(utt.start_frame, end, final=False), end)), final=False)
        self._interims.add(utt.interim)
        utt.interim.add_done_callback(self._interims.discard)

    async def _speculative_result(self, utt: _Utterance, decode: asyncio.Task[Transcript], end: int) -> None:
        """Send the early final decode's transcript as a speculative result, unless the utterance was finalised
        (its final goes out instead) or speech resumed before the decode finished."""
        try:
            transcript = await asyncio.shield(decode)
        except asyncio.CancelledError:
            if decode.cancelled():
                return  # speech resumed
            raise
        except Exception:  # noqa: BLE001 - the final result reports the decode's failure
            return
        if utt.finalised or utt.speculative is not decode or not transcript.text:
            return
        utt.speculation_sent = True
        start = utt.start_frame * FRAME_SAMPLES
        result = asr_pb2.SpeechResult(
            text=transcript.text, speculative=True, stability=1.0, confidence=transcript.confidence,
            start_s=start / RATE, end_s=max(end - self._post_pad, start) / RATE, utterance_index=utt.index)
        result.boosted_phrases.extend(transcript.boosted_phrases)
        await self._emit(result)

    async def _interim(self, utt: _Utterance, decode: Callable[[], Awaitable[Transcript]], end: int) -> None:
        transcript = await decode()
        if utt.finalised or not transcript.text:
            return
        start = utt.start_frame * FRAME_SAMPLES
        await self._emit(asr_pb2.SpeechResult(
            text=transcript.text, is_final=False, stability=0.5, confidence=transcript.confidence,
            start_s=start / RATE, end_s=end / RATE, utterance_index=utt.index))

    def _decode(self, start_frame: int, end: int, *, final: bool) -> Callable[[], Awaitable[Transcript]]:
        """Cut the utterance's audio now (the buffer may be trimmed later); return a transcription starter."""
        audio = self._buffer.slice(start_frame * FRAME_SAMPLES - self._pre_pad, end)
        # Finals get a deadline so they sort ahead of interims (which have none) in the batchers.
        deadline = self._rpc_deadline_s
        if final and deadline is None:
            deadline = time.monotonic() + self.config.final_timeout_s
        phrases = self.phrases if final else ()
        return lambda: self.recognizer.transcribe(audio, deadline_s=deadline, final=final, phrases=phrases)

    def _spawn_final(self, coro) -> asyncio.Task:
        return self.recognizer.track(self._spawn(coro), final=True)

    def _spawn(self, coro) -> asyncio.Task:
        return self._tasks.create_task(coro)
