"""Golden check for the ASR build: our ONNX greedy tokens vs faster-whisper fp32 greedy tokens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from engines.errors import BuildError


def load_wav_16k(path: Path) -> np.ndarray:
    """A 16 kHz mono WAV as float32 in [-1, 1] (the fixtures are written that way)."""
    audio, rate = sf.read(path, dtype="float32")
    if rate != 16_000 or audio.ndim != 1:
        raise BuildError(f"{path}: expected 16 kHz mono, got {rate} Hz, shape {audio.shape}")
    return audio


def reference_tokens(model, audio: np.ndarray) -> list[int]:
    """faster-whisper greedy tokens (beam 1, temperature 0, no timestamps, no conditioning)."""
    segments, _ = model.transcribe(
        audio, language="en", beam_size=1, best_of=1, temperature=0.0, without_timestamps=True,
        condition_on_previous_text=False, vad_filter=False, no_speech_threshold=None,
        compression_ratio_threshold=None, log_prob_threshold=None,
    )
    return [t for s in segments for t in s.tokens]


def compare_fixtures(encoder_dir: Path, decoder_dir: Path, ct2_dir: Path, wavs: list[Path]) -> list[dict]:
    """Transcribe each WAV both ways; one dict per file with both token lists and ``match``."""
    try:
        from faster_whisper import WhisperModel
    except ImportError as e:
        raise BuildError("the ASR golden check needs faster-whisper (pip install 'voxpipe[dev]')") from e
    from engines.repository import ModelRepository
    from services.asr.generation import create_generators, transcribe

    if encoder_dir.parent != decoder_dir.parent:
        raise BuildError("the encoder and decoder folders must be in one repository")
    repo = ModelRepository(encoder_dir.parent, target="cpu")
    (encoder,) = repo.load(encoder_dir.name)[:1]
    generator = create_generators(repo.resolve(decoder_dir.name))[0]
    reference = WhisperModel(str(ct2_dir), device="cpu", compute_type="float32", cpu_threads=2)
    results = []
    for wav in wavs:
        audio = load_wav_16k(wav)
        ours = list(transcribe(encoder, generator, audio).tokens)
        ref = reference_tokens(reference, audio)
        results.append({"file": wav.name, "ours": ours, "reference": ref, "match": ours == ref})
    return results
