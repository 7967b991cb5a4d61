"""Whisper log-mel features in numpy, computed the way faster-whisper's ``FeatureExtractor`` does.

Whisper was trained on 30 s windows (3000 frames): the utterance's frames followed by zeros. A shorter
window (whisper.cpp's ``audio_ctx``: the first frames, with the first positional embeddings) costs the
encoder proportionally less and, measured on our test sets (docs/asr.md, ``benchmarks/asr_window_bench.py``),
transcribes as well while the speech fills at most half of it; fuller windows lose words, and with too
few zeros after the speech the greedy decoder runs away (repeats). :func:`window_frames` picks the
shortest window the utterance fills at most :data:`WINDOW_MAX_FILL` of.

With the 30 s window the frame count and normalisation match faster-whisper's ``transcribe`` for a clip
shorter than 30 s (160 zero samples appended before the STFT, the last frame dropped, the max taken over
the clip), which is what makes our greedy tokens identical to faster-whisper's; a shorter window holds the
same features, cut short.
"""

from __future__ import annotations

import functools

import numpy as np

SAMPLE_RATE_HZ = 16_000
N_FFT = 400
HOP = 160
N_MELS = 80
N_FRAMES = 3000  # 30 s
MAX_SAMPLES = N_FRAMES * HOP
FRAMES_PER_S = SAMPLE_RATE_HZ // HOP
# The most of a shorter window an utterance may fill (docs/asr.md): concatenated test clips transcribed as well
# as in the 30 s window up to half of a 10 s or 20 s window; beyond, words went missing (12.5-17.5 s in 20 s:
# WER +0.05) or the decoder ran away (8-10 s in 10 s: WER 1.06).
WINDOW_MAX_FILL = 0.5


@functools.cache
def mel_filters(n_mels: int = N_MELS, sample_rate_hz: int = SAMPLE_RATE_HZ, n_fft: int = N_FFT) -> np.ndarray:
    """Slaney-style mel filterbank [n_mels, n_fft//2 + 1] (librosa's ``mel(htk=False, norm='slaney')``)."""
    fft_hz = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate_hz)
    # Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
    linear_step_hz = 200.0 / 3
    break_mel = 1000.0 / linear_step_hz
    log_step = np.log(6.4) / 27.0
    mels = np.linspace(0.0, 45.245640471924965, n_mels + 2)  # 45.2456... = mel(8 kHz)
    edges_hz = linear_step_hz * mels
    above = mels >= break_mel
    edges_hz[above] = 1000.0 * np.exp(log_step * (mels[above] - break_mel))
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2:n_mels + 2] - edges_hz[:n_mels]))[:, None]
    return weights.astype(np.float32)


@functools.cache
def _window() -> np.ndarray:
    return np.hanning(N_FFT + 1)[:-1].astype(np.float32)


def window_frames(samples: int, windows_s: tuple[float, ...]) -> int:
    """Mel frames of the encoder window for a clip of ``samples`` (16 kHz): the shortest of ``windows_s``
    (increasing, the last 30 s) it fills at most :data:`WINDOW_MAX_FILL` of, else the last."""
    for window_s in windows_s:
        if samples / SAMPLE_RATE_HZ <= WINDOW_MAX_FILL * window_s:
            return window_frames_of(window_s)
    return window_frames_of(windows_s[-1])


def window_frames_of(window_s: float) -> int:
    """Mel frames of an encoder window of ``window_s`` seconds."""
    return round(window_s * FRAMES_PER_S)


def log_mel(audio: np.ndarray, frames: int = N_FRAMES) -> np.ndarray:
    """Log-mel of a 16 kHz float32 clip, zero-padded to a window of [80, ``frames``] float32 (30 s by
    default; the clip must fit in it)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"audio must be 1-D, got shape {audio.shape}")
    if not 0 < frames <= N_FRAMES or frames % 2:
        raise ValueError(f"frames={frames} must be even and within 1..{N_FRAMES}")
    if len(audio) > frames * HOP:
        raise ValueError(f"audio has {len(audio)} samples, more than the {frames / FRAMES_PER_S:g} s window "
                         f"({frames * HOP})")
    padded = np.pad(np.pad(audio, (0, HOP)), (N_FFT // 2, N_FFT // 2), mode="reflect")
    n_frames = 1 + (len(padded) - N_FFT) // HOP
    stft_frames = np.lib.stride_tricks.as_strided(
        padded, (n_frames, N_FFT), (HOP * padded.strides[0], padded.strides[0]), writeable=False)
    spectrum = np.fft.rfft(stft_frames * _window(), n=N_FFT, axis=-1).T.astype(np.complex64)
    power = np.abs(spectrum[:, :-1]) ** 2
    log_spec = np.log10(np.clip(mel_filters() @ power, a_min=1e-10, a_max=None))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    log_spec = (log_spec + 4.0) / 4.0
    # faster-whisper decodes content_frames = frames - 1 and pads the rest of the window with zeros.
    content = log_spec[:, : min(log_spec.shape[1] - 1, frames)]
    out = np.zeros((N_MELS, frames), dtype=np.float32)
    out[:, : content.shape[1]] = content
    return out
