"""The model repository: one folder per model, each with its artifact and ``config.json``."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from engines.base import Engine
from engines.config import CONFIG_FILE, ModelConfig
from engines.errors import ModelConfigError, ModelNotFoundError


def cache_root() -> Path:
    """Root of voxpipe's caches (models, downloads, generated test sets): ``VOXPIPE_CACHE_DIR`` or
    ``~/.cache/voxpipe``."""
    return Path(os.environ.get("VOXPIPE_CACHE_DIR", Path.home() / ".cache" / "voxpipe"))


def default_models_dir() -> Path:
    """``~/.cache/voxpipe/models``; the CLI overrides it from ``VOXPIPE_MODELS_DIR``."""
    return Path.home() / ".cache" / "voxpipe" / "models"


class ModelRepository:
    """Finds, describes and loads models under one root folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def names(self) -> list[str]:
        """Models present (folders with a config)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / CONFIG_FILE).is_file())

    def folder(self, name: str) -> Path:
        """The folder of ``name``; raises if the model was never built."""
        folder = self.root / name
        if not (folder / CONFIG_FILE).is_file():
            raise ModelNotFoundError(
                f"model {name!r} not found in {self.root} (have: {', '.join(self.names()) or 'none'}); "
                "run `voxpipe build`"
            )
        return folder

    def config(self, name: str) -> ModelConfig:
        """The stored config of ``name``."""
        return ModelConfig.load(self.folder(name))

    def load(self, name: str, *, device: str = "cpu", instances: int | None = None,
             intra_op_threads: int | None = None) -> list[Engine]:
        """Load ``name`` as one engine per instance, with optional overrides of the stored config."""
        folder = self.folder(name)
        config = ModelConfig.load(folder)
        overrides = {}
        if instances is not None:
            overrides["instances"] = instances
        if intra_op_threads is not None:
            overrides["intra_op_threads"] = intra_op_threads
        if overrides:
            config = replace(config, **overrides)
        return [create_engine(config, folder, device=device) for _ in range(config.instances)]


def create_engine(config: ModelConfig, folder: Path, *, device: str = "cpu") -> Engine:
    """Instantiate the backend named by ``config.backend``."""
    if config.backend == "onnx":
        from engines.onnx import OnnxEngine

        return OnnxEngine(config, folder, device=device)
    if config.backend == "torch":
        from engines.torch import TorchEngine

        return TorchEngine(config, folder, device=device)
    if config.backend == "tensorrt":
        from engines.tensorrt import TensorRTEngine

        return TensorRTEngine(config, folder)
    raise ModelConfigError(f"{config.name}: unknown backend {config.backend!r}")
