"""The engine layer: one interface, its backends, the dynamic batcher and the model repository."""

from engines.base import Engine, Tensors
from engines.batcher import ComputeCostModel, DynamicBatcher
from engines.config import BatchingConfig, ModelConfig, TensorSpec
from engines.errors import (
    BatchShapeError,
    BuildError,
    DeadlineExceededError,
    EngineClosedError,
    EngineError,
    InferenceError,
    ModelConfigError,
    ModelNotFoundError,
    QueueFullError,
    RequestCancelledError,
)
from engines.repository import ModelRepository, create_engine, default_models_dir

__all__ = [
    "BatchShapeError", "BatchingConfig", "BuildError", "ComputeCostModel", "DeadlineExceededError",
    "DynamicBatcher", "Engine", "EngineClosedError", "EngineError", "InferenceError", "ModelConfig",
    "ModelConfigError", "ModelNotFoundError", "ModelRepository", "QueueFullError", "RequestCancelledError",
    "TensorSpec", "Tensors", "create_engine", "default_models_dir",
]
