"""Incoming audio: LINEAR16 bytes -> float32, WAV-header checks, streaming resampling to 16 kHz (soxr)."""

from __future__ import annotations

import struct

import numpy as np
import soxr

from services.common import InvalidArgumentError

TARGET_RATE_HZ = 16_000


def pcm16_to_float(data: bytes, *, what: str = "audio") -> np.ndarray:
    """Little-endian int16 bytes -> float32 in [-1, 1); odd byte counts are refused by name."""
    if len(data) % 2:
        raise InvalidArgumentError(f"{what} has {len(data)} bytes, an odd count; LINEAR16 samples are 2 bytes each")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def strip_wav_header(data: bytes, sample_rate_hz: int) -> bytes:
    """If ``data`` starts with a RIFF/WAVE header, check it (mono, 16-bit PCM, the configured rate) and
    return the PCM payload; otherwise return ``data`` unchanged.

    Raw LINEAR16 carries no channel count, so a WAV header is the only place a stereo upload shows.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return data
    pos = 12
    fmt = None
    while pos + 8 <= len(data):
        chunk_id, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = pos + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise InvalidArgumentError("audio has a truncated WAV fmt chunk")
            fmt = struct.unpack("<HHIIHH", data[body:body + 16])
        elif chunk_id == b"data":
            if fmt is None:
                raise InvalidArgumentError("audio has a WAV data chunk before its fmt chunk")
            format_tag, channels, rate, _, _, bits = fmt
            if channels != 1:
                raise InvalidArgumentError(f"audio has channels={channels} (WAV header); only mono is supported")
            if format_tag not in (1, 0xFFFE) or bits != 16:
                raise InvalidArgumentError(
                    f"audio is WAV format {format_tag} with bits_per_sample={bits}; LINEAR16 needs 16-bit PCM")
            if rate != sample_rate_hz:
                raise InvalidArgumentError(
                    f"audio WAV header says {rate} Hz but config.sample_rate_hz={sample_rate_hz}")
            return data[body:body + size] if body + size <= len(data) else data[body:]
        pos = body + size + (size & 1)
    raise InvalidArgumentError("audio starts with a RIFF/WAVE header but has no data chunk")


class StreamResampler:
    """Chunk-by-chunk resampling to 16 kHz that keeps filter state across chunks (identity at 16 kHz)."""

    def __init__(self, rate_hz: int) -> None:
        self.rate_hz = rate_hz
        self._stream = None if rate_hz == TARGET_RATE_HZ else soxr.ResampleStream(
            rate_hz, TARGET_RATE_HZ, 1, dtype="float32", quality="HQ")

    @property
    def passthrough(self) -> bool:
        return self._stream is None

    def process(self, samples: np.ndarray, *, last: bool = False) -> np.ndarray:
        """Resample one chunk (CPU work: call from an executor unless ``passthrough``)."""
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples, last=last)


def resample(samples: np.ndarray, rate_hz: int) -> np.ndarray:
    """Resample a whole clip to 16 kHz (CPU work: call from an executor)."""
    if rate_hz == TARGET_RATE_HZ:
        return samples
    return soxr.resample(samples, rate_hz, TARGET_RATE_HZ, quality="HQ").astype(np.float32, copy=False)
