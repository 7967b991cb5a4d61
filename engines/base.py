"""The engine interface every backend implements.

An engine is one instance of a loaded model. ``run`` is synchronous and is only ever called from that
instance's own worker thread (the batcher gives each instance a single-thread executor; on a GPU the
instance also owns one CUDA stream), so backends need no locking of their own. Instances of one model
share its weights (see :mod:`engines.repository`).

Inputs are host arrays (numpy) or, on a GPU backend, device tensors another engine left on the device;
outputs come back to the host as numpy unless the caller names them in ``device_outputs`` (they then stay
device tensors, e.g. Whisper's cross-attention K/V on their way to the decoder).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from engines.config import ModelConfig, ServingConfig, TensorSpec
from engines.errors import InferenceError

if TYPE_CHECKING:
    from engines.repository import ResolvedModel

Tensors = dict[str, Any]  # numpy arrays, or device tensors of the engine's backend


class Engine(ABC):
    """One instance of a model: named, typed inputs in, named outputs out, batch on axis 0."""

    def __init__(self, model: ResolvedModel, instance: int = 0) -> None:
        self.model = model
        self.instance = instance

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def serving(self) -> ServingConfig:
        return self.model.serving

    @property
    def device(self) -> str:
        return self.serving.device

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.config.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.config.outputs

    def run(self, inputs: Mapping[str, Any], *, device_outputs: Collection[str] = ()) -> Tensors:
        """Run one batch. Inputs are checked against the config before the backend sees them.

        Args:
            device_outputs: outputs to leave on the device (GPU backends; ignored on the CPU).
        """
        self._check_inputs(inputs)
        try:
            return self._run(inputs, device_outputs)
        except Exception as e:  # backend errors of any type become one typed error
            raise InferenceError(f"{self.name}: backend {self.serving.backend} failed: {e}") from e

    @abstractmethod
    def _run(self, inputs: Mapping[str, Any], device_outputs: Collection[str]) -> Tensors:
        """Backend-specific inference on validated inputs."""

    def warmup(self) -> None:
        """Prepare for serving: capture CUDA graphs, allocate buffers (GPU backends). Default: nothing.

        Stages call it for every engine they load, then run one real input through each path.
        """

    def run_dummy(self) -> Tensors:
        """Run once on zeros of the config's shapes (1 for dynamic axes): a smoke test of a loaded model."""
        dummy = {}
        for spec in self.inputs:
            shape = tuple(1 if d < 0 else d for d in spec.dims)
            dummy[spec.name] = np.zeros(shape, dtype=spec.dtype)
        return self.run(dummy)

    def close(self) -> None:
        """Release the backend's resources. Default: nothing to release."""

    def _check_inputs(self, inputs: Mapping[str, Any]) -> None:
        if not self.inputs:
            return
        expected = {s.name for s in self.inputs}
        missing = expected - set(inputs)
        if missing:
            raise InferenceError(f"{self.name}: missing inputs {sorted(missing)}")
        for spec in self.inputs:
            arr = inputs[spec.name]
            # Device tensors carry the serving precision (fp16 on a GPU); only host arrays are dtype-checked.
            if isinstance(arr, np.ndarray) and arr.dtype != np.dtype(spec.dtype):
                raise InferenceError(f"{self.name}: input {spec.name!r} has dtype {arr.dtype}, expected {spec.dtype}")
            shape = tuple(arr.shape)
            if len(shape) != len(spec.dims) or any(d >= 0 and d != a for d, a in zip(spec.dims, shape, strict=True)):
                raise InferenceError(f"{self.name}: input {spec.name!r} has shape {shape}, expected {spec.dims}")
