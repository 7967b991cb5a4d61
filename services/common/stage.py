"""The base of every stage service: load and warm engines, register servicers, stop cleanly."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence

import grpc

from engines.batcher import DynamicBatcher


class Stage(ABC):
    """One service process's unit of work (ASR, NLP, recommender, TTS or the orchestrator).

    Subclasses set ``name`` and ``service_names`` (full gRPC service names, for health and reflection),
    implement :meth:`register`, and load their engines in :meth:`load` (runs in a worker thread, so it
    may block). Batchers returned by :meth:`batchers` are started after loading and closed on stop.
    """

    name: str = ""
    service_names: tuple[str, ...] = ()

    def load(self) -> None:
        """Load and warm up engines (blocking; called off the event loop). Default: nothing to load."""

    def batchers(self) -> Sequence[DynamicBatcher]:
        """The batchers this stage owns. Default: none."""
        return ()

    @abstractmethod
    def register(self, server: grpc.aio.Server) -> None:
        """Add this stage's servicers to ``server``."""

    async def start(self) -> None:
        """Load engines off the loop, then start the batchers."""
        await asyncio.to_thread(self.load)
        for batcher in self.batchers():
            await batcher.start()

    async def stop(self) -> None:
        """Close batchers (queued work fails with UNAVAILABLE) after the server has drained."""
        for batcher in self.batchers():
            await batcher.close()
