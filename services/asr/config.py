"""ASR configuration: the stage's ``[asr]`` section, and per-request settings validated from the proto."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from protos import asr_pb2
from services.asr.phrases import MAX_BOOST, validate_phrases
from services.common import InvalidArgumentError
from services.common.audio_format import check_audio_format
from services.common.endpoint_silence import SILENCE_RANGE, silence_in_range
from services.common.errors import shown

_LANGUAGE = re.compile(r"^en(-[A-Za-z0-9]{1,8})*$", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class AsrConfig:
    """The ``[asr]`` TOML section (stage options); every duration carries its unit."""

    silence_ms: int = 300            # trailing silence that ends an utterance (request may override)
    speech_threshold: float = 0.5    # Silero probability that counts as speech
    min_speech_ms: int = 150         # shorter bursts are noise
    interim_interval_ms: int = 500   # re-decode the growing utterance this often (audio time)
    # Audio kept around the detected speech. Measured on the espeak test set: 100 ms after the end cost
    # ~6 points of WER against decoding the whole clip, 150-200 ms none (within noise); the final decode
    # starts once the trailing silence covers this pad, so it is also head start the speculative final loses.
    pre_speech_pad_ms: int = 300
    post_speech_pad_ms: int = 180
    max_utterance_s: float = 29.0    # Whisper's window is 30 s; longer speech is cut into utterances
    # Encoder windows (docs/asr.md): an utterance is encoded in the shortest it fills at most half of; the last
    # must be 30 (Whisper's own). () = by device: 10, 20, 30 on the CPU (a 10 s window costs the encoder ~0.3x
    # the 30 s one); 30 on a GPU, the only one its decoder's slots hold.
    encoder_windows_s: tuple[float, ...] = ()
    max_audio_s: float = 600.0       # a stream or clip longer than this is refused with OUT_OF_RANGE
    # A stream's audio may run this far ahead of real time (counted from its first audio); beyond it the stage
    # stops reading the stream until real time catches up, and gRPC's flow control holds the sender back (so a
    # client that sends faster than real time costs bounded memory and at most real-time work). 0: no bound.
    stream_max_lead_s: float = 10.0
    final_timeout_s: float = 30.0    # batcher deadline of a final decode when the RPC sets none
    no_speech_prob: float = 0.6      # with avg log-prob < logprob_threshold: treat as no speech
    logprob_threshold: float = -1.0
    # Stage-wide cap on interim decodes (finals are never capped); 0 = 1 on the CPU, 64 on a GPU (where
    # interims of many streams share encoder batches and decoder steps).
    max_interims_in_flight: int = 0
    # GPU: an interim starts only while fewer utterances than this wait for the encoder and the decoder; a
    # stream whose interim was skipped for load waits 2x, then 4x its interval before it tries again.
    interim_max_queue: int = 8
    # Phrase boosting (docs/asr.md): each final is rescored with the phrases that sound like part of it.
    # default_phrases: "catalog" = the movie titles of the recommender model (its items.tsv); "" = none; else a
    # UTF-8 text file, one phrase per line. A request adds its own and may switch these off.
    default_phrases: str = "catalog"
    phrase_boost: float = 4.0             # nats credited per phrase token (a request's phrase with boost 0 gets it)
    phrase_candidates: int = 8            # candidate phrases rescored per final, at most
    phrase_min_similarity: float = 0.5    # phonetic similarity (0..1) a span needs to be a candidate
    # How long a final may wait in the scorer's queue; past it the greedy final goes out unboosted (outcome
    # "busy"). At load the scorer is the stage's one serial step per final (768 conversations on an H200: 2.7 s
    # queued per final with no bound, docs/bench/capacity.md), so boosting gives way to the latency budget.
    phrase_max_wait_ms: float = 50.0

    def __post_init__(self) -> None:
        if not silence_in_range(self.silence_ms):
            raise ValueError(f"silence_ms={self.silence_ms} is outside {SILENCE_RANGE}")
        if not 0.0 < self.speech_threshold < 1.0:
            raise ValueError(f"speech_threshold={self.speech_threshold} is outside (0, 1)")
        if not 0 <= self.post_speech_pad_ms <= self.silence_ms:
            raise ValueError(f"post_speech_pad_ms={self.post_speech_pad_ms} must be within 0..silence_ms")
        if not 1.0 <= self.max_utterance_s <= 29.5:
            raise ValueError(f"max_utterance_s={self.max_utterance_s} is outside 1..29.5 (Whisper's 30 s window)")
        windows = tuple(float(w) for w in self.encoder_windows_s)
        object.__setattr__(self, "encoder_windows_s", windows)  # a TOML list arrives as a list
        if windows and (list(windows) != sorted(set(windows)) or windows[0] < 5.0 or windows[-1] != 30.0):
            raise ValueError(f"encoder_windows_s={list(windows)} must be increasing seconds from 5 up, ending at 30")
        if self.max_audio_s <= 0:
            raise ValueError(f"max_audio_s={self.max_audio_s} must be > 0")
        if self.stream_max_lead_s < 0:
            raise ValueError(f"stream_max_lead_s={self.stream_max_lead_s} must be >= 0 (0: no bound)")
        if not 0.0 < self.phrase_boost <= MAX_BOOST:
            raise ValueError(f"phrase_boost={self.phrase_boost} is outside (0, {MAX_BOOST:g}]")
        if not 1 <= self.phrase_candidates <= 32:
            raise ValueError(f"phrase_candidates={self.phrase_candidates} is outside 1..32")
        if not 0.0 < self.phrase_min_similarity < 1.0:
            raise ValueError(f"phrase_min_similarity={self.phrase_min_similarity} is outside (0, 1)")
        if not 0.0 <= self.phrase_max_wait_ms <= 60_000:
            raise ValueError(f"phrase_max_wait_ms={self.phrase_max_wait_ms} is outside 0..60000")

    def windows_s(self, *, gpu: bool) -> tuple[float, ...]:
        """The encoder windows in use; ValueError for a window a GPU's decoder cannot hold."""
        if not self.encoder_windows_s:
            return (30.0,) if gpu else (10.0, 20.0, 30.0)
        if gpu and self.encoder_windows_s != (30.0,):
            raise ValueError(f"encoder_windows_s={list(self.encoder_windows_s)}: a GPU encodes the 30 s window only "
                             "(its decoder's CUDA-graph slots hold 1500 positions); set [30] or leave it empty")
        return self.encoder_windows_s


@dataclass(frozen=True, kw_only=True)
class StreamSettings:
    """One request's validated recognition settings (server defaults filled in)."""

    sample_rate_hz: int
    language_code: str
    interim_results: bool
    silence_ms: int
    speech_threshold: float
    min_speech_ms: int
    interim_interval_ms: int
    phrases: tuple[tuple[str, float], ...] = ()  # the request's own (text, boost)
    default_phrases: bool = True
    speculative_results: bool = False


def settings_from_proto(config: asr_pb2.RecognitionConfig, defaults: AsrConfig) -> StreamSettings:
    """Validate a ``RecognitionConfig``; raise InvalidArgumentError naming the offending value."""
    check_audio_format(config.encoding, config.sample_rate_hz)
    rate = config.sample_rate_hz
    language = config.language_code or "en-US"
    if len(language) > 35 or not _LANGUAGE.match(language):
        raise InvalidArgumentError(
            f"language_code={shown(config.language_code)} is not supported; Whisper tiny.en recognises 'en' and "
            "'en-*' (up to 35 characters)")
    ep = config.endpointing
    silence_ms = ep.silence_ms or defaults.silence_ms
    if not silence_in_range(silence_ms):
        raise InvalidArgumentError(f"endpointing.silence_ms={ep.silence_ms} is outside {SILENCE_RANGE}")
    threshold = ep.speech_threshold or defaults.speech_threshold
    if math.isnan(threshold) or not 0.0 < threshold < 1.0:
        raise InvalidArgumentError(f"endpointing.speech_threshold={ep.speech_threshold} is outside (0, 1)")
    min_speech_ms = ep.min_speech_ms or defaults.min_speech_ms
    if min_speech_ms > 5_000:
        raise InvalidArgumentError(f"endpointing.min_speech_ms={ep.min_speech_ms} is above 5000")
    interval = config.interim_interval_ms or defaults.interim_interval_ms
    if not 100 <= interval <= 10_000:
        raise InvalidArgumentError(f"interim_interval_ms={config.interim_interval_ms} is outside 100..10000")
    phrases = tuple(validate_phrases(config.phrases, defaults.phrase_boost))
    return StreamSettings(sample_rate_hz=rate, language_code=language, interim_results=config.interim_results,
                          silence_ms=silence_ms, speech_threshold=float(threshold), min_speech_ms=min_speech_ms,
                          interim_interval_ms=interval, phrases=phrases,
                          default_phrases=not config.disable_default_phrases,
                          speculative_results=config.speculative_results)
