"""VAD endpointing: turn per-frame speech probabilities into utterance start / tail / end events.

Pure logic (no audio, no models), so it is unit-tested with synthetic probabilities.

States: IDLE -> CANDIDATE (a frame >= threshold) -> SPEECH (``min_speech_ms`` of speech frames; emits
START) -> IDLE (``silence_ms`` of frames below ``threshold - 0.15``; emits END). Frames between the two
thresholds neither start nor reset the silence timer (Silero's own hysteresis). In SPEECH, once the
silence has lasted ``post_pad_ms`` a TAIL event says the utterance's audio is complete if nobody speaks
again, so the final decode can start before the endpoint; a speech frame after a TAIL emits RESUME.
An utterance reaching ``max_utterance_ms`` is ended at once (END with ``forced=True``).
:meth:`Endpointer.set_silence` changes the silence that ends the current utterance (a client's judgement of
what it heard so far); it lasts until the utterance ends or speech resumes.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

FRAME_SAMPLES = 512  # Silero's frame at 16 kHz
FRAME_MS = FRAME_SAMPLES * 1000 / 16_000  # 32 ms
HYSTERESIS = 0.15


class EventKind(enum.Enum):
    START = "start"
    TAIL = "tail"
    RESUME = "resume"
    END = "end"


@dataclass(frozen=True, slots=True)
class Event:
    """Frames are indices into the stream's 16 kHz frame sequence; ``end_frame`` is exclusive."""

    kind: EventKind
    frame: int          # the frame that triggered the event
    start_frame: int    # first speech frame of the utterance
    end_frame: int      # first frame after the speech (END/TAIL); the current frame + 1 otherwise
    forced: bool = False


@dataclass(frozen=True, kw_only=True)
class EndpointerConfig:
    """Endpointing thresholds; durations in milliseconds of audio."""

    threshold: float = 0.5
    silence_ms: int = 300
    min_speech_ms: int = 150
    post_pad_ms: int = 100
    max_utterance_ms: int = 29_000

    def frames(self, ms: float) -> int:
        """Whole frames covering ``ms`` (at least 1)."""
        return max(1, math.ceil(ms / FRAME_MS))


class _State(enum.Enum):
    IDLE = 0
    CANDIDATE = 1
    SPEECH = 2


class Endpointer:
    """Feed one probability per frame with :meth:`push`; read events back."""

    def __init__(self, config: EndpointerConfig) -> None:
        self.config = config
        self._silence_frames = config.frames(config.silence_ms)
        self._tail_frames = max(1, min(config.frames(config.post_pad_ms), self._silence_frames))
        self._min_speech_frames = config.frames(config.min_speech_ms)
        self._max_frames = config.frames(config.max_utterance_ms)
        self._low = config.threshold - HYSTERESIS
        self._state = _State.IDLE
        self._frame = -1
        self._start = 0
        self._speech_frames = 0
        self._silence_start: int | None = None
        self._tail_sent = False
        self._utterance_silence_frames: int | None = None  # set_silence's, for the current silence run

    @property
    def frames_seen(self) -> int:
        return self._frame + 1

    @property
    def in_speech(self) -> bool:
        """An utterance has started (START was emitted) and has not ended."""
        return self._state is _State.SPEECH

    @property
    def pending(self) -> bool:
        """Speech was heard (a candidate or an utterance) that no END has closed yet."""
        return self._state is not _State.IDLE

    @property
    def in_silence(self) -> bool:
        """A silence run has begun inside the pending speech (it may yet become the endpoint)."""
        return self._silence_start is not None

    @property
    def start_frame(self) -> int:
        return self._start

    def push(self, prob: float) -> list[Event]:
        """Advance one frame; return the events it causes (usually none)."""
        self._frame += 1
        i = self._frame
        speech, quiet = prob >= self.config.threshold, prob < self._low
        events: list[Event] = []
        if self._state is _State.IDLE:
            if speech:
                self._state, self._start, self._speech_frames, self._silence_start = _State.CANDIDATE, i, 1, None
                self._maybe_start(events, i)
            return events
        if speech:
            if self._state is _State.CANDIDATE:
                self._speech_frames += 1
                self._silence_start = None
                self._maybe_start(events, i)
            else:
                if self._tail_sent:
                    events.append(Event(EventKind.RESUME, i, self._start, i + 1))
                if self._silence_start is not None:
                    self._utterance_silence_frames = None  # a judgement of the speech before this pause
                self._silence_start, self._tail_sent = None, False
        elif quiet and self._silence_start is None:
            self._silence_start = i
        if self._silence_start is not None:
            silent = i - self._silence_start + 1
            if self._state is _State.CANDIDATE:
                if silent >= self._silence_frames:
                    self._state = _State.IDLE  # too short: noise
                return events
            if silent >= self._tail_frames and not self._tail_sent:
                self._tail_sent = True
                events.append(Event(EventKind.TAIL, i, self._start, self._silence_start))
            if (end := self._end_by_silence()) is not None:
                events.append(end)
                return events
        if self._state is _State.SPEECH and i + 1 - self._start >= self._max_frames:
            events.append(Event(EventKind.END, i, self._start, i + 1, forced=True))
            self._reset()
        return events

    @property
    def _end_frames(self) -> int:
        return self._silence_frames if self._utterance_silence_frames is None else self._utterance_silence_frames

    def set_silence(self, silence_ms: int) -> Event | None:
        """End the current utterance after ``silence_ms`` of silence instead of the configured silence, until it
        ends or speech resumes; the END event if its silence has lasted that long already (else None)."""
        if self._state is not _State.SPEECH:
            return None
        self._utterance_silence_frames = self.config.frames(silence_ms)
        return self._end_by_silence()

    def _end_by_silence(self) -> Event | None:
        """The END event (and a reset) once the current silence run has lasted the utterance's silence; else None."""
        if self._silence_start is None or self._frame - self._silence_start + 1 < self._end_frames:
            return None
        event = Event(EventKind.END, self._frame, self._start, self._silence_start)
        self._reset()
        return event

    def force_end(self) -> Event | None:
        """End whatever speech is pending now (client end-of-utterance, end of stream); None if idle."""
        if self._state is _State.IDLE:
            return None
        end = self._silence_start if self._silence_start is not None else self._frame + 1
        event = Event(EventKind.END, self._frame, self._start, max(end, self._start + 1), forced=True)
        self._reset()
        return event

    def _maybe_start(self, events: list[Event], i: int) -> None:
        if self._speech_frames >= self._min_speech_frames:
            self._state = _State.SPEECH
            self._tail_sent = False
            events.append(Event(EventKind.START, i, self._start, i + 1))

    def _reset(self) -> None:
        self._state = _State.IDLE
        self._silence_start = None
        self._tail_sent = False
        self._utterance_silence_frames = None
        self._speech_frames = 0
