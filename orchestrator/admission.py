"""Admission control: refuse overload early (RESOURCE_EXHAUSTED) instead of blowing every budget."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from asyncio_throttle import Throttler

from services.common import ResourceExhaustedError


class Slots:
    """A counted limit that is taken without awaiting, so no two callers can both see the last free slot."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken = 0

    def try_take(self) -> bool:
        if self.taken >= self.limit:
            return False
        self.taken += 1
        return True

    def release(self) -> None:
        self.taken -= 1


class Admission:
    """Caps concurrent streams, concurrent turns and new turns per second."""

    def __init__(self, *, max_streams: int, max_concurrent_turns: int, max_turns_per_s: float,
                 max_admission_wait_ms: float = 20.0) -> None:
        self.max_turns_per_s = max_turns_per_s
        self._streams = Slots(max_streams)
        self._turns = Slots(max_concurrent_turns)
        self._throttler = Throttler(rate_limit=max(int(max_turns_per_s), 1), period=1.0, retry_interval=0.002)
        self._wait_s = max_admission_wait_ms / 1e3

    @property
    def streams(self) -> int:
        return self._streams.taken

    @property
    def turns(self) -> int:
        return self._turns.taken

    @asynccontextmanager
    async def stream(self) -> AsyncIterator[None]:
        """Hold one stream slot for the life of a Converse call."""
        if not self._streams.try_take():
            raise ResourceExhaustedError(
                f"{self.streams} conversations open (max_streams={self._streams.limit}); retry later")
        try:
            yield
        finally:
            self._streams.release()

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold one turn slot; refuses when too many turns run or start, waiting at most a few ms for the rate.

        The slot is reserved before the wait for the rate, so turns waiting there count against the cap.
        """
        if not self._turns.try_take():
            raise ResourceExhaustedError(
                f"{self.turns} turns in flight (max_concurrent_turns={self._turns.limit}); retry later")
        try:
            try:
                # Not asyncio.wait_for: on Python 3.11 it returns the result when the inner call has finished as
                # the turn is cancelled, swallowing the cancellation (the turn would run on, uncancellable).
                async with asyncio.timeout(self._wait_s):
                    await self._throttler.acquire()
            except TimeoutError as e:
                raise ResourceExhaustedError(
                    f"more than max_turns_per_s={self.max_turns_per_s:g} new turns per second; retry later") from e
            yield
        finally:
            self._turns.release()
