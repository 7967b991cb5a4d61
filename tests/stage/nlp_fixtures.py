"""Fixtures for the NLP stage tests (import the ones a test module uses)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engines.build.nlp import MODEL_NAME
from services.common import StageSettings

DATA = Path(__file__).parents[1] / "data"
# nlp_heldout.jsonl: written before the entity rules were tuned (some rules were then fixed after reading
# its errors); nlp_heldout_blind.jsonl: written afterwards and scored once, never tuned on.
HELDOUT_FILES = (DATA / "nlp_heldout.jsonl", DATA / "nlp_heldout_blind.jsonl")


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


def heldout(files: tuple[Path, ...] = HELDOUT_FILES) -> list[dict]:
    """The held-out labelled utterances (never used as intent examples)."""
    return [json.loads(line) for f in files for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]


