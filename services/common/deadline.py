"""Turning an RPC's gRPC deadline (and the orchestrator's budget header) into a batcher deadline."""

from __future__ import annotations

import math
import time

import grpc

from services.common.context import BUDGET_HEADER, SENT_AT_HEADER
from services.common.errors import InvalidArgumentError, shown

MAX_TRANSIT_MS = 1000.0  # a wall-clock transit outside 0..this is taken for clock skew between hosts, and ignored


def transit_ms(sent_unix_ns: int, *, wall_ns=time.time_ns, max_ms: float = MAX_TRANSIT_MS) -> float:
    """Milliseconds since ``sent_unix_ns`` by this host's wall clock: exact on one host; across hosts it includes
    the clocks' offset, so a value outside 0..``max_ms`` counts as 0 (unknown)."""
    if sent_unix_ns <= 0:
        return 0.0
    ms = (wall_ns() - sent_unix_ns) / 1e6
    return ms if 0.0 <= ms <= max_ms else 0.0


def deadline_of(context: grpc.aio.ServicerContext, *, clock=time.monotonic, wall_ns=time.time_ns) -> float | None:
    """Absolute deadline on ``clock`` for this RPC, or None when the caller set neither deadline nor budget.

    The tighter of the gRPC deadline and the ``x-voxpipe-budget-ms`` metadata wins; the budget is counted from
    when the caller sent it (``x-voxpipe-sent-unix-ns``), so time in transit is spent, not granted again.
    """
    now = clock()
    candidates: list[float] = []
    remaining_s = context.time_remaining()
    if remaining_s is not None:
        candidates.append(now + remaining_s)
    metadata = dict(context.invocation_metadata() or ())
    if BUDGET_HEADER in metadata:
        spent_ms = transit_ms(_sent_at(metadata.get(SENT_AT_HEADER, "")), wall_ns=wall_ns)
        candidates.append(now + (budget_ms(metadata[BUDGET_HEADER]) - spent_ms) / 1e3)
    return min(candidates) if candidates else None


def _sent_at(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 0  # absent or malformed: no transit known


def budget_ms(value: str) -> float:
    """The ``x-voxpipe-budget-ms`` metadata as milliseconds (0 or more; 0 = already spent).

    Raises:
        InvalidArgumentError: not a finite number, or negative (naming the value).
    """
    try:
        ms = float(value)
    except ValueError:
        ms = math.nan
    if not math.isfinite(ms) or ms < 0:
        raise InvalidArgumentError(f"metadata {BUDGET_HEADER}={shown(value)} must be a number of milliseconds >= 0")
    return ms
