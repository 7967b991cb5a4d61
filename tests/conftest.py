"""Session fixtures: the model repository, built on demand (cached under ~/.cache/voxpipe)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from engines.build import BuildContext, build_stage
from services.common.settings import cache_root


@pytest.fixture(scope="session")
def models_dir() -> Callable[[str], Path]:
    """``models_dir(stage)`` builds that stage's models if missing and returns the repository root."""
    root = Path(os.environ.get("VOXPIPE_MODELS_DIR", cache_root(os.environ) / "models"))
    built: set[str] = set()

    def ensure(stage: str) -> Path:
        if stage not in built:
            build_stage(stage, BuildContext(models_dir=root, downloads_dir=cache_root(os.environ) / "downloads"))
            built.add(stage)
        return root

    return ensure
