"""Turning an RPC's gRPC deadline (and the orchestrator's budget header) into a batcher deadline."""

from __future__ import annotations

import math
import time

import grpc

from services.common.context import BUDGET_HEADER
from services.common.errors import InvalidArgumentError, shown


def deadline_of(context: grpc.aio.ServicerContext, *, clock=time.monotonic) -> float | None:
    """Absolute deadline on ``clock`` for this RPC, or None when the caller set neither deadline nor budget.

    The tighter of the gRPC deadline and the ``x-voxpipe-budget-ms`` metadata wins.
    """
    now = clock()
    candidates: list[float] = []
    remaining_s = context.time_remaining()
    if remaining_s is not None:
        candidates.append(now + remaining_s)
    for key, value in context.invocation_metadata() or ():
        if key == BUDGET_HEADER:
            candidates.append(now + budget_ms(value) / 1e3)
    return min(candidates) if candidates else None


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
