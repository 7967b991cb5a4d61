"""Our numpy log-mel equals faster-whisper's FeatureExtractor as faster-whisper's transcribe uses it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from services.asr.features import N_FRAMES, N_MELS, log_mel, window_frames

fw_features = pytest.importorskip("faster_whisper.feature_extractor")
fw_audio = pytest.importorskip("faster_whisper.audio")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "asr"


def _reference(audio: np.ndarray) -> np.ndarray:
    features = fw_features.FeatureExtractor()(audio)
    # transcribe() decodes content_frames = frames - 1, padded (with zeros) to the 3000-frame window.
    return fw_audio.pad_or_trim(features[:, : features.shape[-1] - 1])


@pytest.mark.parametrize("seconds", [0.3, 1.0, 2.77, 12.5, 30.0])
def test_matches_faster_whisper_on_synthetic_audio(seconds):
    rng = np.random.default_rng(7)
    t = np.arange(int(seconds * 16_000)) / 16_000
    audio = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    ours = log_mel(audio)
    assert ours.shape == (N_MELS, N_FRAMES) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, _reference(audio), rtol=0, atol=1e-6)


def test_matches_faster_whisper_on_speech():
    audio, rate = sf.read(FIXTURES / "q00.wav", dtype="float32")
    assert rate == 16_000
    np.testing.assert_allclose(log_mel(audio), _reference(audio), rtol=0, atol=1e-6)


def test_window_is_zero_padded_not_trimmed():
    audio = np.full(16_000, 0.1, np.float32)  # 1 s -> 100 content frames
    mel = log_mel(audio)
    assert np.all(mel[:, 100:] == 0.0)
    assert np.any(mel[:, :100] != 0.0)


def test_longer_than_the_window_is_refused():
    with pytest.raises(ValueError, match="more than the 30 s window"):
        log_mel(np.zeros(30 * 16_000 + 1, np.float32))


def test_a_shorter_window_is_the_30_s_window_cut_short():
    """A window of F frames holds the same features as the first F of the 30 s window (the max is the clip's)."""
    audio, _ = sf.read(FIXTURES / "q00.wav", dtype="float32")
    np.testing.assert_array_equal(log_mel(audio, 1000), log_mel(audio)[:, :1000])


@pytest.mark.parametrize(("frames", "message"), [(0, "must be even"), (999, "must be even"), (3002, "must be even"),
                                                 (200, "more than the 2 s window")])
def test_bad_windows_are_refused(frames, message):
    with pytest.raises(ValueError, match=message):
        log_mel(np.zeros(3 * 16_000, np.float32), frames)


@pytest.mark.parametrize(("seconds", "frames"), [(0.5, 1000), (5.0, 1000), (5.01, 2000), (10.0, 2000),
                                                 (10.5, 3000), (29.0, 3000)])
def test_the_shortest_window_an_utterance_fills_at_most_half_of(seconds, frames):
    assert window_frames(round(seconds * 16_000), (10.0, 20.0, 30.0)) == frames
    assert window_frames(round(seconds * 16_000), (30.0,)) == N_FRAMES
