"""The TTS stage's options (the ``[tts]`` section of the stack TOML)."""

from __future__ import annotations

from dataclasses import dataclass

from services.tts.voice import DEFAULT_VOICE

MIN_SAMPLE_RATE_HZ = 8_000
MAX_SAMPLE_RATE_HZ = 48_000
MIN_LENGTH_SCALE = 0.25
MAX_LENGTH_SCALE = 4.0
RESAMPLE_QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")


@dataclass(frozen=True, kw_only=True)
class TtsConfig:
    """How the TTS stage synthesises and streams (serving settings are the models': ``[models.<name>]``)."""

    voice: str = DEFAULT_VOICE  # default voice; requests may name another loaded one
    max_text_chars: int = 2_000
    # Longer sentences are cut at clause breaks so the first audio is never held up by one huge sentence.
    max_sentence_chars: int = 400
    # Sentences synthesised ahead of the one being sent (0 = strictly one at a time).
    lookahead_sentences: int = 1
    # Audio per response message; a sentence is sent as one or more chunks of at most this length.
    max_chunk_ms: int = 1_000
    # VITS sampling noise; negative = the voice's own default (0.667 / 0.8 for Piper voices).
    noise_scale: float = -1.0
    noise_w_scale: float = -1.0
    # The first sentence is decoded in windows of this many latent frames (256 samples each), then
    # twice as many, ...: its first audio leaves after one short window. 0 = decode it whole.
    first_audio_frames: int = 32
    # Fixed output gain. Piper scales each sentence to full range instead, which makes loudness jump
    # between sentences (raw peaks vary 0.26..0.73 for similar RMS) and needs the whole sentence first.
    gain_db: float = 2.5
    resample_quality: str = "HQ"

    def __post_init__(self) -> None:
        positive = ("max_text_chars", "max_sentence_chars", "max_chunk_ms")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lookahead_sentences < 0:
            raise ValueError(f"lookahead_sentences must be >= 0, got {self.lookahead_sentences}")
        if self.first_audio_frames < 0:
            raise ValueError(f"first_audio_frames must be >= 0 (0 = no split), got {self.first_audio_frames}")
        if not -40.0 <= self.gain_db <= 20.0:
            raise ValueError(f"gain_db must be within -40..20, got {self.gain_db}")
        if self.resample_quality not in RESAMPLE_QUALITIES:
            raise ValueError(f"resample_quality {self.resample_quality!r} not one of {RESAMPLE_QUALITIES}")
