"""Whisper log-mel features in numpy, computed the way faster-whisper's ``FeatureExtractor`` does.

The encoder always sees 3000 frames (30 s): the utterance's frames followed by zeros. Whisper was
trained on that padding; feeding fewer frames changes the transcript, so we never trim.
The frame count and normalisation match faster-whisper's ``transcribe`` for a clip shorter than
30 s (160 zero samples appended before the STFT, the last frame dropped, the max taken over the clip),
which is what makes our greedy tokens identical to faster-whisper's.
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


def log_mel(audio: np.ndarray) -> np.ndarray:
    """Log-mel of a 16 kHz float32 clip (<= 30 s), zero-padded to [80, 3000] float32."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"audio must be 1-D, got shape {audio.shape}")
    if len(audio) > MAX_SAMPLES:
        raise ValueError(f"audio has {len(audio)} samples, more than the 30 s window ({MAX_SAMPLES})")
    padded = np.pad(np.pad(audio, (0, HOP)), (N_FFT // 2, N_FFT // 2), mode="reflect")
    n_frames = 1 + (len(padded) - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(
        padded, (n_frames, N_FFT), (HOP * padded.strides[0], padded.strides[0]), writeable=False)
    spectrum = np.fft.rfft(frames * _window(), n=N_FFT, axis=-1).T.astype(np.complex64)
    power = np.abs(spectrum[:, :-1]) ** 2
    log_spec = np.log10(np.clip(mel_filters() @ power, a_min=1e-10, a_max=None))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    log_spec = (log_spec + 4.0) / 4.0
    # faster-whisper decodes content_frames = frames - 1 and pads the rest of the window with zeros.
    content = log_spec[:, : log_spec.shape[1] - 1]
    out = np.zeros((N_MELS, N_FRAMES), dtype=np.float32)
    out[:, : content.shape[1]] = content
    return out
