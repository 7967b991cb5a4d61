"""Model builds: turn pip-packaged weights into the model repository (``voxpipe build``).

Each stage has a module ``engines.build.<stage>`` exposing ``build(ctx: BuildContext) -> list[Path]``
(the model folders it wrote). Builds are cached: a folder whose ``config.json`` records the same
source checksum is left alone unless ``ctx.force`` is set.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from services.common.settings import MODEL_STAGES as STAGES  # one build per model stage


@dataclass(frozen=True, kw_only=True)
class BuildContext:
    """Where a build reads sources and writes models."""

    models_dir: Path
    downloads_dir: Path
    force: bool = False


def save_weights(state: dict, path: Path) -> Path:
    """A PyTorch state dict as ``safetensors`` (the PyTorch backend's artifact), readable like the rest of
    the repository (``save_file`` creates it private)."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    path.chmod(0o644)
    return path


def build_stage(stage: str, ctx: BuildContext) -> list[Path]:
    """Build one stage's models; returns the model folders written (or already current)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    module = importlib.import_module(f"engines.build.{stage}")
    return module.build(ctx)
