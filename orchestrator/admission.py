"""Admission control: refuse overload early (RESOURCE_EXHAUSTED) instead of blowing every budget."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from asyncio_throttle import Throttler

from services.common import ResourceExhaustedError


class Admission:
    """Caps concurrent streams, concurrent turns and new turns per second."""

    def __init__(self, *, max_streams: int, max_concurrent_turns: int, max_turns_per_s: float,
                 max_admission_wait_ms: float = 20.0) -> None:
        self.max_streams = max_streams
        self.max_concurrent_turns = max_concurrent_turns
        self.max_turns_per_s = max_turns_per_s
        self._throttler = Throttler(rate_limit=max(int(max_turns_per_s), 1), period=1.0, retry_interval=0.002)
        self._wait_s = max_admission_wait_ms / 1e3
        self.streams = 0
        self.turns = 0

    @asynccontextmanager
    async def stream(self) -> AsyncIterator[None]:
        """Hold one stream slot for the life of a Converse call."""
        if self.streams >= self.max_streams:
            raise ResourceExhaustedError(f"{self.streams} conversations open (max_streams={self.max_streams}); retry later")
        self.streams += 1
        try:
            yield
        finally:
            self.streams -= 1

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold one turn slot; refuses when too many turns run or start, waiting at most a few ms for the rate."""
        if self.turns >= self.max_concurrent_turns:
            raise ResourceExhaustedError(
                f"{self.turns} turns in flight (max_concurrent_turns={self.max_concurrent_turns}); retry later")
        try:
            await asyncio.wait_for(self._throttler.acquire(), self._wait_s)
        except TimeoutError as e:
            raise ResourceExhaustedError(
                f"more than max_turns_per_s={self.max_turns_per_s:g} new turns per second; retry later") from e
        self.turns += 1
        try:
            yield
        finally:
            self.turns -= 1
