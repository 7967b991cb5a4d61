"""PyTorch backend: our own modules (``engines.models``) with their weights from ``model.safetensors``.

The GPU path measured here (CUDA; TensorRT cannot be installed in this workplace), and a CPU path used by
tests to check the modules against ONNX Runtime. Per model, one module holds the weights in the serving
precision; each instance shares it and owns a CUDA stream, a worker thread (the batcher's) and, with
``cuda_graphs``, one captured graph per shape bucket:

* a batch is padded with zeros up to the smallest ``batch_buckets`` entry that holds it, and every
  dynamic non-batch axis up to the smallest ``length_buckets`` entry (models mask padding themselves);
* outputs are cut back to the batch's rows (a padded length axis is left to the caller, who knows the
  real lengths), copied to the host unless named in ``device_outputs``;
* shapes beyond the largest bucket run eagerly at their exact size.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from engines import priority
from engines.base import Engine, Tensors
from engines.config import bucket_for
from engines.cuda_graphs import GraphCache
from engines.device import torch_dtype
from engines.errors import ModelConfigError
from engines.repository import ResolvedModel

log = logging.getLogger(__name__)

MODULE_KEY = "torch_module"


def load_module(model: ResolvedModel):
    """The model's module on its device, in its precision, in eval mode (one copy per process)."""
    try:
        import torch
        from safetensors.torch import load_file
    except ImportError as e:
        raise ModelConfigError(f"{model.name}: backend 'torch' needs PyTorch and safetensors "
                               "(pip install 'voxpipe[gpu]')") from e
    from engines.models import build_module

    spec = model.config.metadata.get(MODULE_KEY)
    if not spec:
        raise ModelConfigError(f"{model.name}: config.json metadata has no {MODULE_KEY!r}; rebuild it")
    module = build_module(spec)
    state = load_file(str(model.artifact_path))
    missing, unexpected = module.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    if missing or unexpected:
        raise ModelConfigError(f"{model.name}: weights do not fit the module (missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]})")
    dtype = torch_dtype(model.serving.precision)
    if model.serving.device == "cuda" and dtype == torch.float32:
        # FP32 means FP32: cuDNN would otherwise run float32 convolutions in TF32 (10-bit mantissas); matmuls
        # are already full precision by default. Process-wide, and only ever switched off.
        torch.backends.cudnn.allow_tf32 = False
    module = module.eval().to(device=torch.device(model.serving.device), dtype=dtype)
    if hasattr(module, "on_precision"):
        module.on_precision()
    return module


class TorchEngine(Engine):
    """One instance of a PyTorch model: the shared module, its own CUDA stream and graphs."""

    def __init__(self, model: ResolvedModel, instance: int, module: Any) -> None:
        super().__init__(model, instance)
        import torch

        self._torch = torch
        self.module = module
        self.torch_device = torch.device(model.serving.device)
        self.dtype = torch_dtype(model.serving.precision)
        cuda = self.torch_device.type == "cuda"
        # (normal, high) priority streams; the batch's class picks one (engines/priority.py). Graphs are captured
        # on the normal one and replayed on whichever is current.
        self._streams: tuple[Any, ...] = ()
        if cuda:
            normal = torch.cuda.Stream(device=self.torch_device)
            high = (torch.cuda.Stream(device=self.torch_device, priority=torch.cuda.Stream.priority_range()[1])
                    if model.serving.stream_priorities else normal)
            self._streams = (normal, high)
        self.graphs = (GraphCache(self._streams[0], name=f"{model.name}-{instance}") if model.serving.cuda_graphs
                       else None)
        # A module whose forward has a data-dependent shape (a host sync) cannot be one graph; a runner of its
        # own captures its parts (services/tts/encoder_torch.py) and the generic path runs it eagerly.
        self._whole_graphs = self.graphs is not None and getattr(module, "capturable", True)
        self._static: dict[tuple[int, int], list[Any]] = {}
        self._pinned: dict[tuple[str, Any], Any] = {}  # host staging buffers by input (GPU only)

    @classmethod
    def create(cls, model: ResolvedModel) -> list[TorchEngine]:
        """``serving.instances`` engines over one module."""
        module = load_module(model)
        return [cls(model, i, module) for i in range(model.serving.instances)]

    # -- helpers other device-resident code (generation engines) uses ------------------------------

    @property
    def stream(self) -> Any:
        """The CUDA stream the running batch launches on: the high-priority one when it is urgent
        (engines/priority.py); None on the CPU."""
        if not self._streams:
            return None
        return self._streams[1] if priority.urgent() else self._streams[0]

    def stream_context(self):
        """``with engine.stream_context():`` runs kernels on this instance's stream for the batch's class, after
        whatever the calling thread queued on its current stream (device inputs built there, e.g. a padded
        batch, are complete before this stream reads them); a no-op on the CPU."""
        stream = self.stream
        if stream is None:
            return contextlib.nullcontext()
        stream.wait_stream(self._torch.cuda.current_stream(self.torch_device))
        for other in self._streams:
            if other is not stream:  # state this instance wrote on its other stream (e.g. a prefill) comes first
                stream.wait_stream(other)
        return self._torch.cuda.stream(stream)

    def synchronize(self) -> None:
        """Wait for this instance's queued kernels (on both its streams)."""
        for stream in set(self._streams):
            stream.synchronize()

    def to_device(self, value: Any, name: str = "") -> Any:
        """A host array (or a tensor on any device) as a tensor on this device; floats in the serving dtype.

        Host arrays go through a pinned staging buffer of this instance (a copy from pageable memory runs at
        a fraction of the bus's speed: 61 MB of log-mels for 64 utterances took ~5 ms). Each input ``name``
        has its own buffer, reused only after this instance's stream has synchronised (every run ends so).
        """
        torch = self._torch
        if isinstance(value, torch.Tensor):
            tensor = value.to(self.torch_device)
        elif self._streams:
            host = torch.from_numpy(np.ascontiguousarray(value))
            staging = self._staging(name, host.dtype, host.numel())
            staging.copy_(host.reshape(-1))
            tensor = staging.to(self.torch_device, non_blocking=True).reshape(host.shape)
        else:
            tensor = torch.from_numpy(np.ascontiguousarray(value))
        return tensor.to(self.dtype) if tensor.is_floating_point() else tensor

    def _staging(self, name: str, dtype: Any, numel: int) -> Any:
        """A pinned host buffer for input ``name`` of at least ``numel`` elements (grown by doubling)."""
        buffer = self._pinned.get((name, dtype))
        if buffer is None or buffer.numel() < numel:
            size = max(numel, 2 * buffer.numel() if buffer is not None else 0)
            buffer = self._torch.empty(size, dtype=dtype, pin_memory=True)
            self._pinned[(name, dtype)] = buffer
        return buffer[:numel]

    # -- the generic run -----------------------------------------------------------------------------

    def warmup(self) -> None:
        """Capture every (batch, length) bucket's graph, largest first (nothing to do without whole-model graphs)."""
        if not self._whole_graphs:
            return
        serving = self.serving
        lengths = serving.length_buckets if self._length_axes() else (0,)
        for batch in sorted(serving.batch_buckets, reverse=True):
            for length in sorted(lengths, reverse=True):
                self._graph_outputs(batch, length)

    def _length_axes(self) -> list[tuple[int, int]]:
        """(input index, axis) of every dynamic non-batch axis."""
        return [(i, a) for i, spec in enumerate(self.inputs) for a, d in enumerate(spec.dims) if a > 0 and d < 0]

    def _static_inputs(self, batch: int, length: int) -> list[Any]:
        key = (batch, length)
        if key not in self._static:
            torch = self._torch
            tensors = []
            for spec in self.inputs:
                shape = [batch if a == 0 else (length if d < 0 else d) for a, d in enumerate(spec.dims)]
                dtype = self.dtype if spec.dtype.startswith("float") else getattr(torch, spec.dtype)
                tensors.append(torch.zeros(shape, dtype=dtype, device=self.torch_device))
            self._static[key] = tensors
        return self._static[key]

    def _graph_outputs(self, batch: int, length: int) -> tuple[Any, ...]:
        key = (batch, length)
        assert self.graphs is not None
        if key in self.graphs:
            return self.graphs.replay(key)
        if self._length_axes() and not self.serving.length_buckets:
            raise ModelConfigError(f"{self.name}: cuda_graphs on a model with a dynamic length axis needs "
                                   "length_buckets")
        static = self._static_inputs(batch, length)

        def fn():
            out = self.module(*static)
            return out if isinstance(out, tuple) else (out,)

        with self._torch.inference_mode():
            outputs = self.graphs.capture(key, fn)
        log.debug("%s: captured a CUDA graph for batch %d, length %d", self.name, batch, length)
        return outputs

    def _run(self, inputs: Mapping[str, Any], device_outputs: Collection[str]) -> Tensors:
        torch = self._torch
        try:
            with torch.inference_mode(), self.stream_context():
                tensors = [self.to_device(inputs[spec.name], spec.name) for spec in self.inputs]
                outputs = self._forward(tensors, device_outputs)
                result = {}
                for name, tensor in zip(self._output_names(), outputs, strict=True):
                    if name in device_outputs:
                        result[name] = tensor
                    else:
                        host = tensor.float() if tensor.is_floating_point() else tensor
                        result[name] = host.cpu().numpy()
        finally:
            # Device outputs are read by other instances' streams, and the staging buffers are reused.
            self.synchronize()
        return result

    def _forward(self, tensors: list[Any], device_outputs: Collection[str]) -> tuple[Any, ...]:
        """The module on a batch: padded to its bucket, by graph replay where one is captured."""
        rows = tensors[0].shape[0]
        axes = self._length_axes()
        length = max((tensors[i].shape[a] for i, a in axes), default=0)
        serving = self.serving
        fits = (rows <= (serving.batch_buckets[-1] if serving.batch_buckets else rows)
                and (not axes or not serving.length_buckets or length <= serving.length_buckets[-1]))
        if fits:
            batch = bucket_for(rows, serving.batch_buckets)
            padded_length = bucket_for(length, serving.length_buckets) if axes else 0
        if self._whole_graphs and fits:
            static = self._static_inputs(batch, padded_length)
            for target, tensor in zip(static, tensors, strict=True):
                target.zero_()
                target[tuple(slice(0, n) for n in tensor.shape)].copy_(tensor)
            outputs = self._graph_outputs(batch, padded_length)
            return tuple(o[:rows].clone() if n in device_outputs else o[:rows]
                         for o, n in zip(outputs, self._output_names(), strict=False))
        if fits and (batch != rows or padded_length != length):
            tensors = [self._pad(t, batch, padded_length, i, axes) for i, t in enumerate(tensors)]
        out = self.module(*tensors)
        return tuple(o[:rows] for o in (out if isinstance(out, tuple) else (out,)))

    def _output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]

    def _pad(self, tensor: Any, batch: int, length: int, index: int, axes: list[tuple[int, int]]) -> Any:
        pads = [0] * (2 * tensor.dim())
        for i, a in axes:
            if i == index:
                pads[2 * (tensor.dim() - 1 - a) + 1] = length - tensor.shape[a]
        pads[2 * (tensor.dim() - 1) + 1] = batch - tensor.shape[0]
        return self._torch.nn.functional.pad(tensor, pads)
