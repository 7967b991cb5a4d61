"""PyTorch backend: a TorchScript artifact on CUDA (the GPU path verified here) or CPU.

Each instance owns one CUDA stream; ``run`` is only called from the instance's worker thread, so the
instance's kernels are ordered on its stream while other instances (and, under MPS, other processes)
run concurrently. ``precision="fp16"`` casts the module and floating inputs to half precision.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from engines.base import Engine, Tensors
from engines.config import ModelConfig
from engines.errors import ModelConfigError


class TorchEngine(Engine):
    """A TorchScript model (``artifact``, e.g. ``model.pt``) whose forward takes the inputs in config order."""

    def __init__(self, config: ModelConfig, folder: Path, *, device: str = "cpu") -> None:
        super().__init__(config, folder)
        try:
            import torch
        except ImportError as e:
            raise ModelConfigError(f"{config.name}: backend 'torch' needs PyTorch installed") from e
        self._torch = torch
        path = folder / config.artifact
        if not path.exists():
            raise ModelConfigError(f"{config.name}: artifact {path} is missing: run `voxpipe build`")
        if device == "cuda" and not torch.cuda.is_available():
            raise ModelConfigError(f"{config.name}: device 'cuda' requested but torch sees no GPU")
        self.device = torch.device("cuda" if device == "cuda" else "cpu")
        self._half = config.precision == "fp16" and self.device.type == "cuda"
        module = torch.jit.load(str(path), map_location=self.device).eval()
        self._module = module.half() if self._half else module
        self._stream = torch.cuda.Stream(device=self.device) if self.device.type == "cuda" else None
        self._input_names = [s.name for s in config.inputs]
        self._output_names = [s.name for s in config.outputs]
        if not self._input_names or not self._output_names:
            raise ModelConfigError(f"{config.name}: backend 'torch' needs inputs and outputs named in config.json")

    def _to_device(self, array: np.ndarray):
        tensor = self._torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type == "cuda":
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        if self._half and tensor.is_floating_point():
            tensor = tensor.half()
        return tensor

    def _run(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        torch = self._torch
        with torch.inference_mode():
            if self._stream is None:
                outputs = self._module(*(self._to_device(inputs[n]) for n in self._input_names))
            else:
                with torch.cuda.stream(self._stream):
                    outputs = self._module(*(self._to_device(inputs[n]) for n in self._input_names))
                self._stream.synchronize()
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        result = {}
        for name, spec, tensor in zip(self._output_names, self.outputs, outputs, strict=True):
            result[name] = tensor.float().cpu().numpy().astype(spec.dtype, copy=False) if tensor.is_floating_point() \
                else tensor.cpu().numpy()
        return result
