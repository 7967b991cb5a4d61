"""The base of every stage service: load and warm engines, register servicers, stop cleanly."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol

import grpc

from engines import metrics
from engines.repository import ModelRepository, ResolvedModel
from services.common.settings import StageSettings

log = logging.getLogger(__name__)


class Scheduler(Protocol):
    """What a stage starts after loading and closes on stop: a DynamicBatcher or a GenerationScheduler."""

    async def start(self) -> None: ...

    async def close(self, timeout_s: float = 5.0) -> None: ...


class Warmable(Protocol):
    """What the scaffold warms after loading and closes on stop: an ``Engine`` or a ``GenerationEngine``."""

    def warmup(self) -> None: ...

    def close(self) -> None: ...


class Stage(ABC):
    """One service process's unit of work (ASR, NLP, recommender, TTS or the orchestrator).

    Subclasses set ``name`` and ``service_names`` (full gRPC service names, for health and reflection),
    implement :meth:`register`, and load their engines in :meth:`load` (runs in a worker thread, so it
    may block). The scaffold then calls every engine's ``warmup`` (:meth:`engines`), the stage's
    :meth:`warm`, and starts the schedulers of :meth:`batchers`; on stop it closes the schedulers, then
    every engine.
    """

    name: str = ""
    service_names: tuple[str, ...] = ()

    def load(self) -> None:
        """Load engines and build the schedulers (blocking; called off the event loop). Default: nothing."""

    def engines(self) -> Sequence[Warmable]:
        """Every engine (and generation engine) :meth:`load` created. Default: none."""
        return ()

    def warm(self) -> None:
        """After every engine's ``warmup``: one real input through each path, so first requests skip lazy
        initialisation (blocking, off the event loop). Default: nothing."""

    def batchers(self) -> Sequence[Scheduler]:
        """The batchers and generation schedulers this stage owns. Default: none."""
        return ()

    @abstractmethod
    def register(self, server: grpc.aio.Server) -> None:
        """Add this stage's servicers to ``server``."""

    async def start(self) -> None:
        """Load and warm off the loop, then start the batchers."""
        await asyncio.to_thread(self._load_and_warm)
        for batcher in self.batchers():
            await batcher.start()

    def _load_and_warm(self) -> None:
        self.load()
        for engine in self.engines():
            engine.warmup()
        self.warm()

    def drain(self) -> None:
        """The server is draining (SIGTERM): it takes no new RPCs; end long-lived streams at their next clean
        point so that they finish within the grace period. Default: nothing."""

    async def stop(self) -> None:
        """Close batchers (queued work fails with UNAVAILABLE) after the server has drained, then the engines."""
        for batcher in self.batchers():
            await batcher.close()
        engines = self.engines()
        if engines:
            await asyncio.to_thread(lambda: [engine.close() for engine in engines])


def model_repository(settings: StageSettings) -> ModelRepository:
    """The stage's view of the model repository: the stack's target device and the [models] overrides."""
    return ModelRepository(settings.models_dir, target=settings.device, overrides=settings.models)


def announce(stage: str, model: ResolvedModel) -> None:
    """Say where a model runs: one startup log line and the ``voxpipe_model_info`` gauge."""
    serving = model.serving
    log.info("%s: %s", stage, model.describe())
    metrics.MODEL_INFO.labels(stage=stage, model=model.name, device=serving.device, precision=serving.precision,
                              backend=serving.backend, instances=str(serving.instances)).set(1)
