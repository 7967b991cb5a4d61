"""Model configuration: what sits beside each artifact in the model repository.

A model folder holds the artifact (``model.onnx`` for the ONNX Runtime backend) and a
``config.json`` that this module reads and writes. Field names carry their units.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from engines.errors import ModelConfigError

CONFIG_FILE = "config.json"
BACKENDS = ("onnx", "torch", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
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
    """Dynamic batcher settings for one model (Triton's ``dynamic_batching`` block, plus deadlines)."""

    max_batch_size: int = 8
    max_queue_delay_us: int = 2_000
    max_queue_size: int = 256
    deadline_aware: bool = True

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ModelConfigError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_queue_delay_us < 0:
            raise ModelConfigError(f"max_queue_delay_us must be >= 0, got {self.max_queue_delay_us}")
        if self.max_queue_size < 1:
            raise ModelConfigError(f"max_queue_size must be >= 1, got {self.max_queue_size}")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Everything the engine layer needs to load and serve one model."""

    name: str
    backend: str = "onnx"
    artifact: str = "model.onnx"
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    instances: int = 1
    precision: str = "fp32"
    intra_op_threads: int = 1
    # Free-form facts recorded by the build (source checksum, versions, golden-check results).
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ModelConfigError(f"model {self.name!r}: backend {self.backend!r} not one of {BACKENDS}")
        if self.precision not in PRECISIONS:
            raise ModelConfigError(f"model {self.name!r}: precision {self.precision!r} not one of {PRECISIONS}")
        if self.instances < 1:
            raise ModelConfigError(f"model {self.name!r}: instances must be >= 1, got {self.instances}")

    def to_json(self) -> str:
        """Serialise to the ``config.json`` text."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelConfig:
        """Build from a parsed ``config.json``; unknown keys are an error, not silently dropped."""
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ModelConfigError(f"model config has unknown keys {sorted(unknown)}")
        raw = dict(raw)
        raw["inputs"] = tuple(TensorSpec(**t) for t in raw.get("inputs", ()))
        raw["outputs"] = tuple(TensorSpec(**t) for t in raw.get("outputs", ()))
        raw["batching"] = BatchingConfig(**raw.get("batching", {}))
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
