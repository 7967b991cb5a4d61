"""ONNX Runtime backend: the CPU default; uses CUDA / TensorRT execution providers when present."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from engines.base import Engine, Tensors
from engines.config import ModelConfig
from engines.errors import ModelConfigError

# Preference order; only providers this onnxruntime build offers are used.
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


class OnnxEngine(Engine):
    """A model served by ONNX Runtime."""

    def __init__(self, config: ModelConfig, folder: Path, *, device: str = "cpu") -> None:
        super().__init__(config, folder)
        path = folder / config.artifact
        if not path.exists():
            raise ModelConfigError(f"{config.name}: artifact {path} is missing: run `voxpipe build`")
        options = ort.SessionOptions()
        options.intra_op_num_threads = config.intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Spinning threads burn the few shared cores other stages need; wait on a condition instead.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.log_severity_level = 3
        available = ort.get_available_providers()
        providers = [p for p in _GPU_PROVIDERS if p in available] if device != "cpu" else []
        providers.append("CPUExecutionProvider")
        self.providers = providers
        self._session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        self._output_names = [o.name for o in self._session.get_outputs()]

    def _run(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        values = self._session.run(self._output_names, dict(inputs))
        return dict(zip(self._output_names, values, strict=True))

    def session_io(self) -> tuple[list[str], list[str]]:
        """Input and output names as the ONNX graph declares them."""
        return [i.name for i in self._session.get_inputs()], list(self._output_names)
