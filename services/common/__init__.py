"""The scaffold every stage service is built on (see docs/DEVELOPING.md)."""

from services.common import grpc_fix
from services.common.deadline import deadline_of
from services.common.errors import (
    DeadlineError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    ResourceExhaustedError,
    ServiceError,
    UnavailableError,
    status_of,
)
from services.common.server import ServeError, ServerHandle, StageServer, build_server, create_server
from services.common.settings import ServerSettings, StackSettings, StageSettings, options_to
from services.common.stage import Stage

grpc_fix.apply()

__all__ = [
    "DeadlineError", "FailedPreconditionError", "InvalidArgumentError", "NotFoundError", "OutOfRangeError",
    "ResourceExhaustedError", "ServeError", "ServerHandle", "ServerSettings", "ServiceError", "StackSettings", "Stage",
    "StageServer", "StageSettings", "UnavailableError", "build_server", "create_server", "deadline_of",
    "options_to", "status_of",
]
