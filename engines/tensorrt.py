"""TensorRT backend (TensorRT 10+ Python API): an engine built from the ONNX artifact, cached beside it.

TensorRT cannot be installed in the workplace where voxpipe is developed, so this backend's tests skip
where ``tensorrt`` does not import; the PyTorch-CUDA backend is the GPU path measured there. The engine
is built with an optimisation profile over the batch axis (1..max_batch_size) and any other dynamic axes
(1..``metadata["max_dynamic_dim"]``, default 1024), FP16 when ``precision="fp16"``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

import numpy as np

from engines.base import Engine, Tensors
from engines.errors import ModelConfigError
from engines.repository import ResolvedModel

PLAN_FILE = "model.plan"


class TensorRTEngine(Engine):
    """An ONNX model compiled by TensorRT; one execution context and one CUDA stream per instance."""

    def __init__(self, model: ResolvedModel, instance: int = 0) -> None:
        super().__init__(model, instance)
        config = model.config
        try:
            import tensorrt as trt
            import torch  # device buffers and the stream; always present where TensorRT is
        except ImportError as e:
            raise ModelConfigError(f"{config.name}: backend 'tensorrt' needs the tensorrt and torch packages") from e
        self._trt, self._torch = trt, torch
        self._logger = trt.Logger(trt.Logger.WARNING)
        plan = model.folder / PLAN_FILE
        if not plan.exists():
            plan.write_bytes(self._build(model.artifact_path))
        runtime = trt.Runtime(self._logger)
        self._engine = runtime.deserialize_cuda_engine(plan.read_bytes())
        if self._engine is None:
            raise ModelConfigError(f"{config.name}: could not deserialise {plan} (built by another TensorRT version?)")
        self._context = self._engine.create_execution_context()
        self._stream = torch.cuda.Stream()

    def _build(self, onnx_path: Path) -> bytes:
        trt = self._trt
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ModelConfigError(f"{self.name}: TensorRT could not parse {onnx_path}: {errors}")
        build_config = builder.create_builder_config()
        if self.serving.precision == "fp16":
            build_config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        max_batch = self.serving.batching.max_batch_size
        max_dim = int(self.config.metadata.get("max_dynamic_dim", 1024))
        for spec in self.inputs:
            lo = tuple(1 if d < 0 else d for d in spec.dims)
            hi = tuple((max_batch if i == 0 else max_dim) if d < 0 else d for i, d in enumerate(spec.dims))
            opt = tuple((max(1, max_batch // 2) if i == 0 else min(128, max_dim)) if d < 0 else d
                        for i, d in enumerate(spec.dims))
            profile.set_shape(spec.name, lo, opt, hi)
        build_config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, build_config)
        if serialized is None:
            raise ModelConfigError(f"{self.name}: TensorRT failed to build an engine from {onnx_path}")
        return bytes(serialized)

    def _run(self, inputs: Mapping[str, np.ndarray], device_outputs: Collection[str]) -> Tensors:
        torch = self._torch
        keep = []
        with torch.cuda.stream(self._stream):
            for spec in self.inputs:
                tensor = torch.from_numpy(np.ascontiguousarray(inputs[spec.name])).cuda(non_blocking=True)
                keep.append(tensor)
                self._context.set_input_shape(spec.name, tuple(tensor.shape))
                self._context.set_tensor_address(spec.name, tensor.data_ptr())
            outputs = {}
            for spec in self.outputs:
                shape = tuple(self._context.get_tensor_shape(spec.name))
                out = torch.empty(shape, dtype=getattr(torch, spec.dtype), device="cuda")
                self._context.set_tensor_address(spec.name, out.data_ptr())
                outputs[spec.name] = out
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("execute_async_v3 returned False")
        self._stream.synchronize()
        return {name: t if name in device_outputs else t.cpu().numpy() for name, t in outputs.items()}
