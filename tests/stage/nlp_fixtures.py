"""Fixtures for the NLP stage tests (import the ones a test module uses)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engines.build.nlp import MODEL_NAME
from services.common import StageSettings

HELDOUT = Path(__file__).parents[1] / "data" / "nlp_heldout.jsonl"


@pytest.fixture(scope="session", name="nlp_models")
def nlp_models_fixture(models_dir: Callable[[str], Path]) -> Path:
    """The model repository root with MiniLM built (cached)."""
    return models_dir("nlp")


@pytest.fixture(scope="session", name="nlp_model_folder")
def nlp_model_folder_fixture(nlp_models: Path) -> Path:
    return nlp_models / MODEL_NAME


def nlp_settings(models: Path, **options: Any) -> StageSettings:
    """Stage settings for the NLP stage with ``options`` as its ``[nlp]`` section."""
    return StageSettings(name="nlp", models_dir=models, options=options)


def heldout() -> list[dict]:
    """The held-out labelled utterances (never used as intent examples)."""
    return [json.loads(line) for line in HELDOUT.read_text(encoding="utf-8").splitlines() if line.strip()]


