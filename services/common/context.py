"""Request and trace ids in ``contextvars``, set per RPC by the server interceptor and bound into logs."""

from __future__ import annotations

import contextvars
import logging
import uuid

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("voxpipe_request_id", default="-")
TRACE_ID: contextvars.ContextVar[str] = contextvars.ContextVar("voxpipe_trace_id", default="-")

REQUEST_ID_HEADER = "x-request-id"
TRACEPARENT_HEADER = "traceparent"
# Remaining turn budget in milliseconds, sent by the orchestrator beside the gRPC deadline.
BUDGET_HEADER = "x-voxpipe-budget-ms"
# The sender's wall clock (ns since the Unix epoch) when it set BUDGET_HEADER: the receiver takes the time the
# request spent in transit (a slow link, a proxy, its own accept queue) off the budget. gRPC's own deadline
# is relative and starts again on arrival, so without this a late request looks fresh.
SENT_AT_HEADER = "x-voxpipe-sent-unix-ns"
# Trailing metadata every stage sends back: milliseconds its handler took to the response (or to the first
# message of a response stream), so a caller can split its own measurement into server time and hop.
SERVER_TIME_HEADER = "x-voxpipe-server-ms"


def server_time_ms(trailing_metadata) -> float | None:
    """The stage's :data:`SERVER_TIME_HEADER` from a call's trailing metadata, if present and well formed."""
    for key, value in trailing_metadata or ():
        if key == SERVER_TIME_HEADER:
            try:
                ms = float(value)
            except (TypeError, ValueError):
                return None
            return ms if ms >= 0 else None
    return None


def new_request_id() -> str:
    """A fresh random request id."""
    return uuid.uuid4().hex[:16]


def trace_id_from_traceparent(value: str) -> str | None:
    """The trace id of a W3C ``traceparent`` header (``00-<trace>-<span>-<flags>``), if well formed."""
    parts = value.split("-")
    if len(parts) == 4 and len(parts[1]) == 32:
        return parts[1]
    return None


class ContextFilter(logging.Filter):
    """Adds ``request_id`` and ``trace_id`` from the current context to every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        record.trace_id = TRACE_ID.get()
        return True


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr with request and trace ids (called once by the entry point)."""
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s [req=%(request_id)s trace=%(trace_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
