"""Fixtures for the recommender stage tests (import the ones a test module uses)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engines.build.recommender import MODEL_NAME
from services.common import StageSettings


@pytest.fixture(scope="session", name="rec_models")
def rec_models_fixture(models_dir: Callable[[str], Path]) -> Path:
    """The model repository root with the recommender (and the NLP model it embeds with) built."""
    return models_dir("recommender")


@pytest.fixture(scope="session", name="rec_model_folder")
def rec_model_folder_fixture(rec_models: Path) -> Path:
    return rec_models / MODEL_NAME


def rec_settings(models: Path, **options: Any) -> StageSettings:
    """Stage settings for the recommender with ``options`` as its ``[recommender]`` section."""
    return StageSettings(name="recommender", models_dir=models, options=options)
