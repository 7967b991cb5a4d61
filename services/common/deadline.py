"""Turning an RPC's gRPC deadline (and the orchestrator's budget header) into a batcher deadline."""

from __future__ import annotations

import time

import grpc

from services.common.context import BUDGET_HEADER


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
            try:
                candidates.append(now + float(value) / 1e3)
            except ValueError:
                pass  # a malformed hint is ignored; the gRPC deadline still applies
    return min(candidates) if candidates else None
