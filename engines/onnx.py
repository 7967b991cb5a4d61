"""ONNX Runtime backend: the CPU default; uses CUDA / TensorRT execution providers when present.

The instances of one model share one ``InferenceSession`` (one copy of the weights): ONNX Runtime's
``run`` may be called from several threads at once, and each instance calls it from its own worker
thread, so instances still compute concurrently.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import onnxruntime as ort

from engines.base import Engine, Tensors
from engines.errors import DeviceUnavailableError
from engines.repository import ResolvedModel

# Preference order; only providers this onnxruntime build offers are used.
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def open_session(model: ResolvedModel) -> ort.InferenceSession:
    """One session with the model's threads and providers."""
    serving = model.serving
    options = ort.SessionOptions()
    options.intra_op_num_threads = serving.intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spinning threads burn the few shared cores other stages need; wait on a condition instead.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    providers = []
    if serving.device == "cuda":
        providers = [p for p in _GPU_PROVIDERS if p in ort.get_available_providers()]
        if not providers:
            raise DeviceUnavailableError(
                f"model {model.name!r}: device 'cuda' with backend 'onnx' needs an onnxruntime-gpu build; this "
                f"onnxruntime {ort.__version__} offers {ort.get_available_providers()} (use backend \"torch\")")
    providers.append("CPUExecutionProvider")
    return ort.InferenceSession(str(model.artifact_path), sess_options=options, providers=providers)


class OnnxEngine(Engine):
    """One instance of a model served by ONNX Runtime (its session shared with the other instances)."""

    def __init__(self, model: ResolvedModel, instance: int, session: ort.InferenceSession) -> None:
        super().__init__(model, instance)
        self._session = session
        self.providers = session.get_providers()
        self._output_names = [o.name for o in session.get_outputs()]

    @classmethod
    def create(cls, model: ResolvedModel) -> list[OnnxEngine]:
        """``serving.instances`` engines over one session."""
        session = open_session(model)
        return [cls(model, i, session) for i in range(model.serving.instances)]

    def _run(self, inputs: Mapping[str, Any], device_outputs: Collection[str]) -> Tensors:
        feeds = {k: np.asarray(v) for k, v in inputs.items()}
        values = self._session.run(self._output_names, feeds)
        return dict(zip(self._output_names, values, strict=True))

    def session_io(self) -> tuple[list[str], list[str]]:
        """Input and output names as the ONNX graph declares them."""
        return [i.name for i in self._session.get_inputs()], list(self._output_names)
