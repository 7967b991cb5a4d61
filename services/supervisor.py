"""Restarting a stage process that exits on its own, so one crash never takes the stack down.

``voxpipe up`` runs one :func:`supervise` task per stage process. When the process exits while the stack is
not stopping, it is started again with the same command and environment after an exponential backoff
(``initial_backoff_s`` doubling up to ``max_backoff_s``). A process that then stays up for
``healthy_reset_s`` has its count of consecutive restarts reset; after ``max_restarts`` consecutive ones
the supervisor gives up on it and says so loudly, and the rest of the stack keeps serving. While a stage is
down its callers degrade around it (the orchestrator's turn report says which stage and why).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RestartPolicy:
    """The ``[supervisor]`` section of the settings."""

    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    healthy_reset_s: float = 60.0
    max_restarts: int = 5
    ready_timeout_s: float = 180.0

    def __post_init__(self) -> None:
        if not 0 <= self.initial_backoff_s <= self.max_backoff_s:
            raise ValueError(f"initial_backoff_s={self.initial_backoff_s} must be within 0..max_backoff_s "
                             f"({self.max_backoff_s})")
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts={self.max_restarts} must be >= 0")
        if self.healthy_reset_s <= 0 or self.ready_timeout_s <= 0:
            raise ValueError("healthy_reset_s and ready_timeout_s must be > 0")

    def backoff_s(self, restarts: int) -> float:
        """Wait before restart number ``restarts`` (1-based) of a consecutive run."""
        return min(self.initial_backoff_s * 2 ** (restarts - 1), self.max_backoff_s)


class Restartable(Protocol):
    """A process the supervisor can start again (``services.launcher.LaunchedStage``)."""

    label: str
    process: asyncio.subprocess.Process
    restarts: int  # in all
    gave_up: bool

    async def start(self) -> asyncio.subprocess.Process:
        """Start the process again (same command and environment)."""
        ...


async def supervise(target: Restartable, stop: asyncio.Event, policy: RestartPolicy,
                    ready: Callable[[Restartable], Awaitable[None]]) -> None:
    """Restart ``target``'s process whenever it exits, until ``stop`` is set or the policy gives up.

    ``ready`` waits until a restarted process serves (raising if it exits or times out first).
    """
    consecutive = 0
    up_since = time.monotonic()
    while True:
        if await _first(target.process.wait(), stop.wait()) == 1:
            return
        code = target.process.returncode
        if time.monotonic() - up_since >= policy.healthy_reset_s:
            consecutive = 0
        consecutive += 1
        if consecutive > policy.max_restarts:
            target.gave_up = True
            log.error("GIVING UP on %s: it exited (code %s) after %d restarts in a row; the rest of the stack "
                      "keeps serving without it", target.label, code, policy.max_restarts)
            return
        wait_s = policy.backoff_s(consecutive)
        log.warning("%s exited unexpectedly (code %s); restart %d of at most %d in a row in %.1f s",
                    target.label, code, consecutive, policy.max_restarts, wait_s)
        if await _first(asyncio.sleep(wait_s), stop.wait()) == 1:
            return
        target.process = await target.start()
        target.restarts += 1
        up_since = time.monotonic()
        outcome = await _first(ready(target), stop.wait())
        if outcome == 1:
            return
        if outcome == 0:
            log.warning("%s is SERVING again (pid %d)", target.label, target.process.pid)
            continue
        log.warning("%s did not come back: %s", target.label, outcome)
        if target.process.returncode is None:
            target.process.kill()
            await target.process.wait()


async def _first(main: Awaitable, stopped: Awaitable) -> int | BaseException:
    """0 when ``main`` finished first, 1 when ``stopped`` did; ``main``'s exception if it failed."""
    tasks = [asyncio.ensure_future(main), asyncio.ensure_future(stopped)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
    if tasks[1] in done:
        return 1
    error = tasks[0].exception()
    return 0 if error is None else error
