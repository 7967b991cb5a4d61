"""The service error tree, mapped to gRPC status codes only at the servicer edge.

    ServiceError                     (base; ``code`` is the gRPC status it maps to)
    ├── InvalidArgumentError         INVALID_ARGUMENT   a request field is malformed or out of its domain
    ├── OutOfRangeError              OUT_OF_RANGE       e.g. audio longer than the configured maximum
    ├── NotFoundError                NOT_FOUND          an unknown voice, item or model
    ├── FailedPreconditionError      FAILED_PRECONDITION the stream is in the wrong state for this message
    ├── ResourceExhaustedError       RESOURCE_EXHAUSTED admission control or a full queue    (retryable)
    ├── UnavailableError             UNAVAILABLE        a dependency is down or the server is draining (retryable)
    ├── DeadlineError                DEADLINE_EXCEEDED  the request's budget ran out
    └── UpstreamError                (its own)          a downstream stage's status, passed on

Engine errors (``engines.errors``) are mapped by :func:`status_of` as well, so servicers simply let them
propagate.
"""

from __future__ import annotations

import grpc

from engines import errors as engine_errors


class ServiceError(Exception):
    """Base of the errors a servicer raises on purpose; the message is sent to the client."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    retryable: bool = False


class InvalidArgumentError(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class OutOfRangeError(ServiceError):
    code = grpc.StatusCode.OUT_OF_RANGE


class NotFoundError(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPreconditionError(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhaustedError(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    retryable = True


class UnavailableError(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE
    retryable = True


class DeadlineError(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class UpstreamError(ServiceError):
    """A downstream stage's status passed on unchanged (e.g. its INVALID_ARGUMENT about the client's audio)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


_ENGINE_CODES: tuple[tuple[type[engine_errors.EngineError], grpc.StatusCode], ...] = (
    (engine_errors.QueueFullError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (engine_errors.DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (engine_errors.RequestCancelledError, grpc.StatusCode.CANCELLED),
    (engine_errors.EngineClosedError, grpc.StatusCode.UNAVAILABLE),
    (engine_errors.ModelNotFoundError, grpc.StatusCode.NOT_FOUND),
)


MAX_MESSAGE_CHARS = 1000  # a status message never grows past this (gRPC caps trailing metadata at 8-16 KiB)


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters with the full length said: a message
    names the bad value without echoing a 100,000-character input back."""
    text = repr(value)
    if len(text) <= limit:
        return text
    length = f" ({len(value)} characters)" if isinstance(value, (str, bytes)) else ""
    return text[:limit] + "…" + length


def bounded(message: str) -> str:
    """A status message cut to :data:`MAX_MESSAGE_CHARS`."""
    return message if len(message) <= MAX_MESSAGE_CHARS else message[:MAX_MESSAGE_CHARS] + "… (message cut)"


def first_error(group: BaseExceptionGroup, prefer: tuple[type[BaseException], ...] = (ServiceError,)) -> BaseException:
    """The error a client should see from a TaskGroup failure: the first leaf of a ``prefer`` type, else the first.

    The servicer edge maps single errors to a status, not groups.
    """
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        error = pending.pop(0)
        if isinstance(error, BaseExceptionGroup):
            pending[:0] = error.exceptions
        else:
            leaves.append(error)
    return next((e for e in leaves if isinstance(e, prefer)), leaves[0])


def status_of(error: BaseException) -> grpc.StatusCode:
    """The gRPC status code an exception maps to (INTERNAL for anything unexpected)."""
    if isinstance(error, ServiceError):
        return error.code
    for kind, code in _ENGINE_CODES:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL
