"""Model configuration: what sits beside each artifact in the model repository.

A model folder holds its artifacts (``model.onnx`` for ONNX Runtime, ``model.safetensors`` for the
PyTorch backend) and a ``config.json`` that this module reads and writes. Field names carry their units.

**Serving settings have one source of truth per model**: the ``serving`` block of ``config.json``,
one :class:`ServingConfig` per *target* (``cpu``: the stack runs on CPUs; ``cuda``: the stack runs on a
GPU). Each entry says where the model actually runs (``device``), on which backend, in which precision,
with how many instances, how it batches and which shapes it pads to. The model repository resolves the
entry for the stack's target and applies the per-model overrides of the TOML (``[models.<name>]``); no
stage sets batching or instances of its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from engines.errors import ModelConfigError

CONFIG_FILE = "config.json"
BACKENDS = ("onnx", "torch", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
DEVICES = ("cpu", "cuda")
TARGETS = ("cpu", "cuda", "auto")
DTYPES = ("float32", "float16", "int64", "int32", "bool", "uint8")


@dataclass(frozen=True, kw_only=True)
class TensorSpec:
    """One named, typed input or output. ``-1`` in ``dims`` marks a dynamic axis; axis 0 is the batch."""

    name: str
    dtype: str
    dims: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ModelConfigError(f"tensor {self.name!r}: dtype {self.dtype!r} not one of {DTYPES}")
        object.__setattr__(self, "dims", tuple(int(d) for d in self.dims))


@dataclass(frozen=True, kw_only=True)
class BatchingConfig:
    """Dynamic batcher settings for one model (Triton's ``dynamic_batching`` block, plus deadlines).

    For a generation engine ``max_batch_size`` is the number of sequences one instance decodes together
    (its slots) and ``max_queue_size`` bounds the sequences waiting for a slot.
    """

    max_batch_size: int = 8
    max_queue_delay_us: int = 2_000
    max_queue_size: int = 256
    deadline_aware: bool = True
    # A request whose deadline is this close when it arrives is urgent (unless its caller says otherwise):
    # on a GPU its batch runs on the instance's high-priority CUDA stream (engines/priority.py).
    urgent_slack_ms: float = 500.0

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ModelConfigError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_queue_delay_us < 0:
            raise ModelConfigError(f"max_queue_delay_us must be >= 0, got {self.max_queue_delay_us}")
        if self.max_queue_size < 1:
            raise ModelConfigError(f"max_queue_size must be >= 1, got {self.max_queue_size}")
        if self.urgent_slack_ms < 0:
            raise ModelConfigError(f"urgent_slack_ms must be >= 0, got {self.urgent_slack_ms}")


# TOML keys of ``[models.<name>]`` that set a batching field rather than a ServingConfig field.
_BATCHING_KEYS = {f.name for f in fields(BatchingConfig)}


@dataclass(frozen=True, kw_only=True)
class ServingConfig:
    """How one model is served for one target: device, backend, precision, instances, batching, shapes.

    ``batch_buckets`` and ``length_buckets`` are the padded shapes a GPU backend runs (so buffers are
    reused and CUDA graphs captured once per bucket); empty means "run the exact shape" (the CPU default,
    where padding only costs time). ``cuda_graphs`` captures one graph per bucket at warm-up.
    """

    device: str = "cpu"
    backend: str = "onnx"
    precision: str = "fp32"
    instances: int = 1
    intra_op_threads: int = 1
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    batch_buckets: tuple[int, ...] = ()
    length_buckets: tuple[int, ...] = ()
    cuda_graphs: bool = False
    # GPU: each instance has a high- and a low-priority CUDA stream, and urgent batches take the high one
    # (engines/priority.py). False: one stream per instance, every batch at the same priority.
    stream_priorities: bool = True

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ModelConfigError(f"device {self.device!r} not one of {DEVICES}")
        if self.backend not in BACKENDS:
            raise ModelConfigError(f"backend {self.backend!r} not one of {BACKENDS}")
        if self.precision not in PRECISIONS:
            raise ModelConfigError(f"precision {self.precision!r} not one of {PRECISIONS}")
        if self.instances < 1:
            raise ModelConfigError(f"instances must be >= 1, got {self.instances}")
        if self.intra_op_threads < 1:
            raise ModelConfigError(f"intra_op_threads must be >= 1, got {self.intra_op_threads}")
        for name in ("batch_buckets", "length_buckets"):
            buckets = tuple(int(b) for b in getattr(self, name))
            if any(b < 1 for b in buckets) or list(buckets) != sorted(set(buckets)):
                raise ModelConfigError(f"{name} must be increasing positive sizes, got {list(buckets)}")
            object.__setattr__(self, name, buckets)
        if self.batch_buckets and self.batch_buckets[-1] < self.batching.max_batch_size:
            raise ModelConfigError(f"the largest batch bucket ({self.batch_buckets[-1]}) is below max_batch_size "
                                   f"({self.batching.max_batch_size})")
        if self.cuda_graphs and self.device != "cuda":
            raise ModelConfigError("cuda_graphs needs device 'cuda'")

    def with_overrides(self, overrides: Mapping[str, Any]) -> ServingConfig:
        """A copy with TOML keys applied (``[models.<name>]``: any field, or a batching field by name).

        Raises:
            ModelConfigError: an unknown key or an invalid value, naming it.
        """
        own = {f.name for f in fields(self)} - {"batching"}
        unknown = sorted(set(overrides) - own - _BATCHING_KEYS)
        if unknown:
            raise ModelConfigError(f"unknown keys {unknown}; known: {sorted(own | _BATCHING_KEYS)}")
        try:
            mine = {k: _typed(k, v, getattr(self, k)) for k, v in overrides.items() if k in own}
            batching = {k: _typed(k, v, getattr(self.batching, k)) for k, v in overrides.items() if k in _BATCHING_KEYS}
            return replace(self, **mine, batching=replace(self.batching, **batching))
        except (TypeError, ValueError) as e:
            raise ModelConfigError(str(e)) from e

    def describe(self) -> str:
        """One line for logs: ``cuda fp16 torch, 2 instances, batch <= 64, CUDA graphs``."""
        parts = [f"{self.device} {self.precision} {self.backend}",
                 f"{self.instances} instance{'s' if self.instances != 1 else ''}",
                 f"batch <= {self.batching.max_batch_size}"]
        if self.cuda_graphs:
            parts.append("CUDA graphs")
        return ", ".join(parts)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ServingConfig:
        """Build from the ``config.json`` form; unknown keys are an error."""
        raw = dict(raw)
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise ModelConfigError(f"serving entry has unknown keys {sorted(unknown)}")
        raw["batching"] = BatchingConfig(**raw.get("batching", {}))
        for key in ("batch_buckets", "length_buckets"):
            raw[key] = tuple(raw.get(key, ()))
        return cls(**raw)


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Everything the engine layer needs to load and serve one model."""

    name: str
    # Artifact file per backend, e.g. {"onnx": "model.onnx", "torch": "model.safetensors"}.
    artifacts: Mapping[str, str] = field(default_factory=lambda: {"onnx": "model.onnx"})
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    # One entry per target the model can be served for ("cpu", "cuda").
    serving: Mapping[str, ServingConfig] = field(default_factory=lambda: {"cpu": ServingConfig()})
    # Free-form facts recorded by the build (source checksum, versions, golden-check results).
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for backend in self.artifacts:
            if backend not in BACKENDS:
                raise ModelConfigError(f"model {self.name!r}: artifact backend {backend!r} not one of {BACKENDS}")
        for target in self.serving:
            if target not in DEVICES:
                raise ModelConfigError(f"model {self.name!r}: serving target {target!r} not one of {DEVICES}")

    def serving_for(self, target: str) -> ServingConfig:
        """The serving entry for ``target`` ("cpu" or "cuda").

        Raises:
            ModelConfigError: the model has no entry for that target.
        """
        if target not in self.serving:
            raise ModelConfigError(f"model {self.name!r} has no serving entry for {target!r} "
                                   f"(it has: {', '.join(sorted(self.serving))}); rebuild it with `voxpipe build`")
        return self.serving[target]

    def artifact(self, backend: str) -> str:
        """The artifact file the ``backend`` loads."""
        try:
            return self.artifacts[backend]
        except KeyError:
            raise ModelConfigError(f"model {self.name!r} has no {backend} artifact (has: "
                                   f"{', '.join(sorted(self.artifacts)) or 'none'}); rebuild it with `voxpipe build`"
                                   ) from None

    def to_json(self) -> str:
        """Serialise to the ``config.json`` text."""
        raw = asdict(self)
        raw["artifacts"] = dict(self.artifacts)
        raw["serving"] = {k: asdict(v) for k, v in self.serving.items()}
        return json.dumps(raw, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelConfig:
        """Build from a parsed ``config.json``; unknown keys are an error, not silently dropped."""
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            if unknown & {"backend", "artifact", "batching", "instances", "precision"}:
                raise ModelConfigError(f"model {raw.get('name')!r} was built by an older voxpipe (config keys "
                                       f"{sorted(unknown)}); run `voxpipe build`")
            raise ModelConfigError(f"model config has unknown keys {sorted(unknown)}")
        raw = dict(raw)
        raw["inputs"] = tuple(TensorSpec(**t) for t in raw.get("inputs", ()))
        raw["outputs"] = tuple(TensorSpec(**t) for t in raw.get("outputs", ()))
        try:
            raw["serving"] = {k: ServingConfig.from_dict(v) for k, v in raw.get("serving", {}).items()}
        except (TypeError, ModelConfigError) as e:
            raise ModelConfigError(f"model {raw.get('name')!r}: {e}") from e
        return cls(**raw)

    def save(self, folder: Path) -> Path:
        """Write ``config.json`` into ``folder`` and return its path."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / CONFIG_FILE
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, folder: Path) -> ModelConfig:
        """Read ``folder/config.json``."""
        path = folder / CONFIG_FILE
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError as e:
            raise ModelConfigError(f"no {CONFIG_FILE} in {folder}: run `voxpipe build`") from e
        except json.JSONDecodeError as e:
            raise ModelConfigError(f"{path} is not valid JSON: {e}") from e
        return cls.from_dict(raw)


def _typed(key: str, value: Any, current: Any) -> Any:
    """An override as the type of the value it replaces (environment variables arrive as strings)."""
    if not isinstance(value, str) or isinstance(current, str):
        return tuple(value) if isinstance(current, tuple) else value
    text = value.strip()
    if isinstance(current, bool):
        if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ValueError(f"{key}={value!r} is not a boolean")
        return text.lower() in ("1", "true", "yes")
    if isinstance(current, tuple):  # "1,2,4"
        return tuple(int(x) for x in text.split(",") if x.strip())
    try:
        return type(current)(text)
    except ValueError:
        raise ValueError(f"{key}={value!r} is not a valid {type(current).__name__}") from None


def cpu_serving(*, max_batch_size: int, max_queue_delay_us: int, max_queue_size: int, instances: int = 1,
                intra_op_threads: int = 1, precision: str = "fp32") -> ServingConfig:
    """The CPU entry every build writes: ONNX Runtime, exact shapes."""
    return ServingConfig(device="cpu", backend="onnx", precision=precision, instances=instances,
                         intra_op_threads=intra_op_threads,
                         batching=BatchingConfig(max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us,
                                                 max_queue_size=max_queue_size))


def gpu_serving(*, max_batch_size: int, max_queue_delay_us: int, max_queue_size: int, instances: int = 1,
                length_buckets: tuple[int, ...] = (), cuda_graphs: bool = True,
                precision: str = "fp16") -> ServingConfig:
    """The CUDA entry of a PyTorch model: FP16, power-of-two batch buckets up to ``max_batch_size``."""
    buckets = tuple(b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if b < max_batch_size) + (max_batch_size,)
    return ServingConfig(device="cuda", backend="torch", precision=precision, instances=instances,
                         batching=BatchingConfig(max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us,
                                                 max_queue_size=max_queue_size),
                         batch_buckets=buckets, length_buckets=length_buckets, cuda_graphs=cuda_graphs)


def bucket_for(size: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket holding ``size`` (``size`` itself when there are no buckets).

    Raises:
        ModelConfigError: ``size`` is larger than the largest bucket.
    """
    if not buckets:
        return size
    for b in buckets:
        if b >= size:
            return b
    raise ModelConfigError(f"size {size} is larger than the largest bucket {buckets[-1]}")
