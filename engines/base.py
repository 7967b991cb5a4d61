"""The engine interface every backend implements.

An engine holds one loaded model instance. ``run`` is synchronous and is only ever called from that
instance's own worker thread (the batcher gives each instance a single-thread executor; on a GPU the
instance also owns one CUDA stream), so backends need no locking of their own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from engines.config import ModelConfig, TensorSpec
from engines.errors import InferenceError

Tensors = dict[str, np.ndarray]


class Engine(ABC):
    """One loaded instance of a model: named, typed inputs in, named outputs out, batch on axis 0."""

    def __init__(self, config: ModelConfig, folder: Path) -> None:
        self.config = config
        self.folder = folder

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.config.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.config.outputs

    def run(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        """Run one batch. Inputs are checked against the config before the backend sees them."""
        self._check_inputs(inputs)
        try:
            return self._run(inputs)
        except Exception as e:  # backend errors of any type become one typed error
            raise InferenceError(f"{self.name}: backend {self.config.backend} failed: {e}") from e

    @abstractmethod
    def _run(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        """Backend-specific inference on validated inputs."""

    def warmup(self) -> None:
        """Run once on small dummy inputs so first requests do not pay for lazy initialisation."""
        dummy = {}
        for spec in self.inputs:
            shape = tuple(1 if d < 0 else d for d in spec.dims)
            dummy[spec.name] = np.zeros(shape, dtype=spec.dtype)
        self.run(dummy)

    def close(self) -> None:
        """Release the backend's resources. Default: nothing to release."""

    def _check_inputs(self, inputs: Mapping[str, np.ndarray]) -> None:
        if not self.inputs:
            return
        expected = {s.name for s in self.inputs}
        missing = expected - set(inputs)
        if missing:
            raise InferenceError(f"{self.name}: missing inputs {sorted(missing)}")
        for spec in self.inputs:
            arr = inputs[spec.name]
            if arr.dtype != np.dtype(spec.dtype):
                raise InferenceError(f"{self.name}: input {spec.name!r} has dtype {arr.dtype}, expected {spec.dtype}")
            if arr.ndim != len(spec.dims) or any(d >= 0 and d != a for d, a in zip(spec.dims, arr.shape, strict=True)):
                raise InferenceError(f"{self.name}: input {spec.name!r} has shape {arr.shape}, expected {spec.dims}")
