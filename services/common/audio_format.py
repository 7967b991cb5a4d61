"""The one rule for audio a client sends (``RecognitionConfig``, ``ConverseConfig.audio``): LINEAR16 mono at
8–48 kHz. ASR and the orchestrator both ask it, so a bad value gets the same INVALID_ARGUMENT from either."""

from __future__ import annotations

from protos import common_pb2
from services.common.errors import InvalidArgumentError

MIN_RATE_HZ = 8_000
MAX_RATE_HZ = 48_000


def check_audio_format(encoding: int, sample_rate_hz: int, *, prefix: str = "") -> None:
    """Raise InvalidArgumentError naming the field (``prefix`` + name) and its value, unknown enum values included."""
    if encoding != common_pb2.LINEAR16:
        known = encoding in common_pb2.AudioEncoding.values()
        name = common_pb2.AudioEncoding.Name(encoding) if known else f"{encoding} (not an AudioEncoding)"
        raise InvalidArgumentError(f"{prefix}encoding={name} is not supported; send LINEAR16 "
                                   "(16-bit little-endian mono PCM)")
    if not MIN_RATE_HZ <= sample_rate_hz <= MAX_RATE_HZ:
        raise InvalidArgumentError(f"{prefix}sample_rate_hz={sample_rate_hz} is outside {MIN_RATE_HZ}..{MAX_RATE_HZ}")
