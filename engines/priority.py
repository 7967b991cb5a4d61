"""Deadline classes on the GPU: which CUDA stream priority the batch being run deserves.

The batchers order work by deadline on the host; this carries the order onto the device. A request is
**urgent** when its caller says so (an ASR final, the first audio window of a reply) or, by default, when
its deadline is within ``BatchingConfig.urgent_slack_ms`` of its arrival. The batcher (and the generation
scheduler, per step) marks each batch on the engine instance's own thread with :func:`running`; a GPU
engine reads :func:`urgent` and launches on its high-priority stream, so under load urgent kernels are
scheduled ahead of slack work (interims, later sentences) queued by other instances and processes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_local = threading.local()


def urgent() -> bool:
    """Whether the batch running on this thread is urgent (False outside a batch)."""
    return getattr(_local, "urgent", False)


@contextmanager
def running(is_urgent: bool) -> Iterator[None]:
    """Mark the work this thread runs inside the block as urgent (or not)."""
    before = urgent()
    _local.urgent = is_urgent
    try:
        yield
    finally:
        _local.urgent = before


def classify(urgent_hint: bool | None, deadline_s: float | None, now_s: float, slack_ms: float) -> bool:
    """A request's class: the caller's hint, else whether its deadline is within ``slack_ms`` of ``now_s``
    (``slack_ms`` 0: nothing is urgent by deadline)."""
    if urgent_hint is not None:
        return urgent_hint
    return deadline_s is not None and slack_ms > 0 and deadline_s - now_s <= slack_ms / 1e3


def run_marked(fn, items, is_urgent: bool):
    """``fn(items)`` with the thread marked (what the batcher submits to an instance's executor)."""
    with running(is_urgent):
        return fn(items)
