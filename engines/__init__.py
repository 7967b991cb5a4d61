"""The engine layer: one interface, its backends, the dynamic batcher, generation engines and the model repository."""

from engines.base import Engine, Tensors
from engines.batcher import ComputeCostModel, DynamicBatcher
from engines.config import BatchingConfig, ModelConfig, ServingConfig, TensorSpec
from engines.errors import (
    BatchShapeError,
    BuildError,
    DeadlineExceededError,
    DeviceUnavailableError,
    EngineClosedError,
    EngineError,
    InferenceError,
    ModelConfigError,
    ModelNotFoundError,
    QueueFullError,
    RequestCancelledError,
)
from engines.generation import GenerationEngine, GenerationScheduler
from engines.repository import ModelRepository, ResolvedModel, create_engines

__all__ = [
    "BatchShapeError", "BatchingConfig", "BuildError", "ComputeCostModel", "DeadlineExceededError",
    "DeviceUnavailableError", "DynamicBatcher", "Engine", "EngineClosedError", "EngineError", "GenerationEngine",
    "GenerationScheduler", "InferenceError", "ModelConfig", "ModelConfigError", "ModelNotFoundError",
    "ModelRepository", "QueueFullError", "RequestCancelledError", "ResolvedModel", "ServingConfig", "TensorSpec",
    "Tensors", "create_engines",
]
