"""The model repository: one folder per model, each with its artifacts and ``config.json``.

The repository is where serving settings are decided: :meth:`ModelRepository.resolve` takes the model's
entry for the stack's target device (``config.json`` ``serving``), applies the TOML's per-model overrides
(``[models.<name>]``), checks that the device is usable and the artifact exists, and
:meth:`ModelRepository.load` creates the instances: several instances of one model share one copy of its
weights (one ONNX Runtime session, or one PyTorch module on the GPU) and differ only in their worker
thread and, on a GPU, their CUDA stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.base import Engine
from engines.config import CONFIG_FILE, ModelConfig, ServingConfig
from engines.device import require_device, resolve_target
from engines.errors import ModelConfigError, ModelNotFoundError


def override_key(name: str) -> str:
    """How a model name is looked up in ``[models]`` (environment variables cannot hold '-')."""
    return name.lower().replace("-", "_")


@dataclass(frozen=True, kw_only=True)
class ResolvedModel:
    """A model with its serving settings decided for this process."""

    name: str
    folder: Path
    config: ModelConfig
    serving: ServingConfig

    @property
    def artifact_path(self) -> Path:
        return self.folder / self.config.artifact(self.serving.backend)

    def describe(self) -> str:
        """``whisper-tiny-en-encoder: cuda fp16 torch, 1 instance, batch <= 64, CUDA graphs``."""
        return f"{self.name}: {self.serving.describe()}"


class ModelRepository:
    """Finds, resolves and loads models under one root folder for one target device.

    Args:
        root: the repository folder (``voxpipe build`` writes it).
        target: the stack's device: "cpu", "cuda" or "auto" (cuda when a GPU is usable, else cpu).
        overrides: ``[models.<name>]`` sections of the TOML: serving keys per model.
    """

    def __init__(self, root: Path, *, target: str = "cpu",
                 overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.root = Path(root)
        self.target = resolve_target(target)
        self._overrides = {override_key(k): dict(v) for k, v in (overrides or {}).items()}

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

    def resolve(self, name: str) -> ResolvedModel:
        """The model's serving settings for this repository's target, with the TOML overrides applied.

        Raises:
            ModelNotFoundError: the model was never built.
            ModelConfigError: no entry for the target, a bad override, or a missing artifact.
            DeviceUnavailableError: the settings ask for a GPU this process cannot use.
        """
        folder = self.folder(name)
        config = ModelConfig.load(folder)
        serving = config.serving_for(self.target)
        overrides = self._overrides.get(override_key(name), {})
        if overrides.get("device") == "auto":
            overrides = {**overrides, "device": resolve_target("auto")}
        try:
            serving = serving.with_overrides(overrides)
        except ModelConfigError as e:
            raise ModelConfigError(f"[models.{name}]: {e}") from e
        require_device(serving.device, what=f"model {name!r}")
        model = ResolvedModel(name=name, folder=folder, config=config, serving=serving)
        if not model.artifact_path.exists():
            raise ModelConfigError(f"{name}: artifact {model.artifact_path} is missing: run `voxpipe build`")
        return model

    def load(self, name: str) -> list[Engine]:
        """Load ``name`` as ``serving.instances`` engines that share one copy of the weights."""
        return create_engines(self.resolve(name))


def create_engines(model: ResolvedModel) -> list[Engine]:
    """Instantiate the backend named by ``model.serving.backend``, one engine per instance."""
    backend = model.serving.backend
    if backend == "onnx":
        from engines.onnx import OnnxEngine

        return OnnxEngine.create(model)
    if backend == "torch":
        from engines.torch import TorchEngine

        return TorchEngine.create(model)
    if backend == "tensorrt":
        from engines.tensorrt import TensorRTEngine

        return [TensorRTEngine(model, i) for i in range(model.serving.instances)]
    raise ModelConfigError(f"{model.name}: unknown backend {backend!r}")
