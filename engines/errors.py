"""The engine layer's error tree.

    EngineError                      (base; ``retryable`` says whether a retry may succeed)
    ├── ModelConfigError             a model folder or config is missing or wrong
    │   └── DeviceUnavailableError   a model was asked to run on a device this process cannot use
    ├── ModelNotFoundError           no such model in the repository
    ├── BuildError                   a model build or its golden check failed
    ├── QueueFullError               the batcher's bounded queue is full       (retryable)
    ├── DeadlineExceededError        the request's deadline passed before or during compute
    ├── RequestCancelledError        the caller went away while the request was queued
    ├── InferenceError               the backend raised while computing a batch
    ├── BatchShapeError              the backend returned a different number of items than it was given
    └── EngineClosedError            the engine or batcher is shut down                  (retryable)

Servicers map these to gRPC status codes at the edge (``services.common.errors``).
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the engine layer raises."""

    retryable: bool = False


class ModelConfigError(EngineError):
    """A model folder or its config is missing or invalid."""


class ModelNotFoundError(EngineError):
    """The repository has no model of that name."""


class DeviceUnavailableError(ModelConfigError):
    """A model was configured for a device (a CUDA GPU) that this process cannot use."""


class BuildError(EngineError):
    """Building a model (or its golden check) failed."""


class QueueFullError(EngineError):
    """The batcher's queue is at ``max_queue_size``."""

    retryable = True


class DeadlineExceededError(EngineError):
    """The request's deadline passed before its result was ready."""


class RequestCancelledError(EngineError):
    """The request was cancelled while it waited in the queue."""


class InferenceError(EngineError):
    """The backend raised while running a batch."""


class BatchShapeError(InferenceError):
    """The backend returned a number of results different from the batch size."""


class EngineClosedError(EngineError):
    """The engine or its batcher is closed."""

    retryable = True
