"""A voice: the model folder's ``voice.json`` and ``config.json`` turned into what synthesis needs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engines.config import ModelConfig
from engines.errors import ModelConfigError
from services.tts.phonemize import EspeakPhonemizer, PhonemeIdMap, Phonemizer

# The voice the TTS build packages (engines/build/tts.py builds these folders from these names).
VOICE = "en_US-joe-medium"
MODEL_NAME = f"tts-{VOICE}"
ENCODER_NAME = f"{MODEL_NAME}-encoder"
DECODER_NAME = f"{MODEL_NAME}-decoder"
VOICE_FILE = "voice.json"
DEFAULT_VOICE = VOICE
DEFAULT_MODEL = MODEL_NAME


@dataclass(frozen=True, kw_only=True)
class Scales:
    """VITS sampling scales: prior noise, speaking-rate (length) and duration noise."""

    noise: float
    length: float
    noise_w: float

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.noise, self.length, self.noise_w)


@dataclass(frozen=True, kw_only=True)
class Voice:
    """Everything about one voice except its engine: names, rate, phonemes, default scales."""

    name: str
    model_name: str
    language_code: str
    sample_rate_hz: int
    licence: str
    scales: Scales
    phonemizer: Phonemizer
    id_map: PhonemeIdMap


def load_voice(folder: Path) -> Voice:
    """Read a built voice folder (``voxpipe build tts``)."""
    config = ModelConfig.load(folder)
    try:
        raw = json.loads((folder / VOICE_FILE).read_text())
    except FileNotFoundError as e:
        raise ModelConfigError(f"{folder} has no {VOICE_FILE}: run `voxpipe build tts`") from e
    if raw.get("phoneme_type", "espeak") != "espeak":
        raise ModelConfigError(f"{folder}: phoneme_type {raw.get('phoneme_type')!r} is not supported (espeak only)")
    meta = config.metadata
    clusters = raw.get("vowel_clusters")
    return Voice(
        name=meta.get("voice", folder.name),
        model_name=config.name,
        language_code=meta.get("language_code", "en-US"),
        sample_rate_hz=int(raw["audio"]["sample_rate"]),
        licence=meta.get("voice_licence", ""),
        scales=Scales(noise=float(meta.get("noise_scale", 0.667)), length=float(meta.get("length_scale", 1.0)),
                      noise_w=float(meta.get("noise_w_scale", 0.8))),
        phonemizer=EspeakPhonemizer(raw["espeak"]["voice"],
                                    vowel_clusters={tuple(c) for c in clusters} if clusters else None),
        id_map=PhonemeIdMap(raw["phoneme_id_map"]),
    )
