"""Generation engines: autoregressive decoding of many sequences at once, one step for all of them.

A :class:`GenerationEngine` is one instance of a decoder with a fixed number of **slots**. A sequence is
``prefill``-ed into a free slot (e.g. Whisper: its cross-attention K/V written into the slot's buffers),
then every ``step`` advances every active slot by one token, and a finished slot is ``release``-d. On a
GPU the slots' state lives on the device (KV cache, cross K/V, next token) and a step is one CUDA-graph
replay per batch bucket; on the CPU it is a host cache and one ONNX Runtime call.

The :class:`GenerationScheduler` drives one loop per instance on that instance's own thread (continuous
batching): between steps it admits waiting sequences into free slots, earliest deadline first, drops
cancelled and expired ones, and hands finished results back to the event loop. A sequence costs the
event loop one submission and one result, never a hop per token. Queue bounds, deadlines and
cancellation behave as in the :class:`~engines.batcher.DynamicBatcher`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from engines import metrics, priority
from engines.config import BatchingConfig
from engines.errors import (
    DeadlineExceededError,
    EngineClosedError,
    EngineError,
    InferenceError,
    QueueFullError,
)

P = TypeVar("P")  # what a sequence starts from
R = TypeVar("R")  # what a finished sequence gives

log = logging.getLogger(__name__)


class GenerationEngine(ABC, Generic[P, R]):
    """One decoder instance with ``slots`` sequences decoded together. Called only from its own thread."""

    slots: int

    @abstractmethod
    def prefill(self, batch: Sequence[tuple[int, P]]) -> None:
        """Start each ``(slot, item)`` sequence in its (free) slot."""

    @abstractmethod
    def step(self, active: Sequence[int]) -> dict[int, R]:
        """Advance every slot in ``active`` (ascending) by one token; return the finished ones' results."""

    @abstractmethod
    def release(self, slot: int) -> None:
        """Forget the sequence in ``slot`` (finished, cancelled or failed); the slot is free again."""

    def warmup(self) -> None:
        """Prepare for serving (capture graphs, allocate buffers). Default: nothing."""

    def close(self) -> None:
        """Release the backend's resources. Default: nothing to release."""

    def describe(self) -> str:
        """One line for logs."""
        return f"{type(self).__name__} with {self.slots} slots"


@dataclass(order=True)
class _Sequence(Generic[P, R]):
    sort_key: tuple[float, int]
    item: P = field(compare=False)
    future: asyncio.Future[R] = field(compare=False)
    loop: asyncio.AbstractEventLoop = field(compare=False)
    deadline_s: float | None = field(compare=False)
    enqueued_s: float = field(compare=False)
    cancelled: bool = field(default=False, compare=False)
    urgent: bool = field(default=False, compare=False)

    def resolve(self, result: R | None = None, error: BaseException | None = None) -> None:
        """Set the future from any thread (ignored when the caller has gone)."""

        def set_() -> None:
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)

        try:
            self.loop.call_soon_threadsafe(set_)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


class GenerationScheduler(Generic[P, R]):
    """Continuous batching over one or more :class:`GenerationEngine` instances (see the module docstring).

    ``batching.max_queue_size`` bounds the sequences waiting for a slot; ``max_batch_size`` is not used
    (an instance's ``slots`` is its batch).
    """

    def __init__(self, name: str, engines: Sequence[GenerationEngine[P, R]], batching: BatchingConfig, *,
                 stage: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        if not engines:
            raise ValueError(f"generation scheduler {name!r} needs at least one engine instance")
        self.name = name
        self.stage = stage or name
        self.config = batching
        self._engines = list(engines)
        self._clock = clock
        self._labels = {"stage": self.stage, "model": name}
        self._cond = threading.Condition()
        self._pending: list[_Sequence[P, R]] = []
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._active = [0] * len(self._engines)

    @property
    def queue_depth(self) -> int:
        """Sequences waiting for a slot (cancelled ones excluded)."""
        with self._cond:
            return sum(1 for s in self._pending if not s.cancelled)

    @property
    def active(self) -> int:
        """Sequences being decoded, over all instances."""
        return sum(self._active)

    @property
    def slots(self) -> int:
        """Sequences the instances can decode at once."""
        return sum(engine.slots for engine in self._engines)

    async def start(self) -> None:
        """Start one decoding thread per instance; the scheduler owns them until :meth:`close`."""
        if self._threads:
            return
        for i, engine in enumerate(self._engines):
            thread = threading.Thread(target=self._loop, args=(i, engine), name=f"{self.name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    async def generate(self, item: P, *, deadline_s: float | None = None, urgent: bool | None = None) -> R:
        """Decode one sequence from ``item``; returns the engine's result for it.

        Args:
            deadline_s: absolute deadline on this scheduler's clock (``time.monotonic()``), or None.
            urgent: its class on a GPU (a step holding an urgent sequence runs on the high-priority stream);
                None: urgent when the deadline is within ``urgent_slack_ms`` (engines/priority.py).

        Raises:
            QueueFullError: ``max_queue_size`` sequences are waiting for a slot.
            DeadlineExceededError: the deadline passed before the sequence finished.
            EngineClosedError: the scheduler is closed.
            InferenceError: the engine failed on a step holding this sequence.
        """
        if self._closed or not self._threads:
            raise EngineClosedError(f"generation scheduler {self.name!r} is not running")
        now = self._clock()
        if deadline_s is not None and deadline_s <= now:
            metrics.REQUESTS_DROPPED.labels(**self._labels, reason="deadline").inc()
            raise DeadlineExceededError(f"{self.name}: deadline already passed on arrival")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        key = (deadline_s if deadline_s is not None else math.inf, next(self._seq))
        sequence = _Sequence(key, item, future, loop, deadline_s, now,
                             urgent=priority.classify(urgent, deadline_s, now, self.config.urgent_slack_ms))
        with self._cond:
            waiting = sum(1 for s in self._pending if not s.cancelled)
            if waiting >= self.config.max_queue_size:
                metrics.REQUESTS_DROPPED.labels(**self._labels, reason="queue_full").inc()
                raise QueueFullError(f"{self.name}: queue full ({waiting} sequences waiting for a slot, "
                                     "max_queue_size)")
            heapq.heappush(self._pending, sequence)
            metrics.QUEUE_DEPTH.labels(**self._labels).set(waiting + 1)
            self._cond.notify_all()
        try:
            return await future
        except asyncio.CancelledError:
            sequence.cancelled = True  # the decoding thread drops it at its next step
            with self._cond:
                self._cond.notify_all()
            raise

    async def close(self, timeout_s: float = 5.0) -> None:
        """Stop: fail waiting and active sequences with EngineClosedError, join the threads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            await asyncio.to_thread(thread.join, max(0.0, deadline - time.monotonic()))

    # -- the decoding thread -----------------------------------------------------------------------

    def _loop(self, index: int, engine: GenerationEngine[P, R]) -> None:
        free = list(range(engine.slots))
        active: dict[int, _Sequence[P, R]] = {}
        try:
            while True:
                admitted = self._admit(free, bool(active))
                if admitted is None:
                    break
                if admitted:
                    self._prefill(engine, admitted, free, active)
                self._drop_gone(engine, free, active)
                self._active[index] = len(active)
                if active:
                    self._step(engine, free, active)
        except BaseException as e:  # a bug in an engine must not leave callers waiting
            log.exception("generation %s-%d: decoding thread failed", self.name, index)
            for seq in active.values():
                seq.resolve(error=EngineClosedError(f"{self.name}: decoding thread failed: {e!r}"))
            raise
        finally:
            for seq in active.values():
                seq.resolve(error=EngineClosedError(f"generation scheduler {self.name!r} closed"))
            self._active[index] = 0
            with self._cond:
                if self._closed:
                    for seq in self._pending:
                        seq.resolve(error=EngineClosedError(f"generation scheduler {self.name!r} closed"))
                    self._pending.clear()

    def _admit(self, free: list[int], busy: bool) -> list[tuple[int, _Sequence[P, R]]] | None:
        """Waiting sequences for the free slots (lowest slots first, so active slots stay packed and the
        batch bucket small); blocks while there is nothing to do; None once closed."""
        with self._cond:
            while not self._closed and not busy and not any(not s.cancelled for s in self._pending):
                self._cond.wait()
            if self._closed:
                return None
            admitted = []
            now = self._clock()
            while self._pending and free:
                seq = heapq.heappop(self._pending)
                if seq.cancelled or seq.future.done():
                    metrics.REQUESTS_DROPPED.labels(**self._labels, reason="cancelled").inc()
                    continue
                if seq.deadline_s is not None and seq.deadline_s <= now:
                    metrics.REQUESTS_DROPPED.labels(**self._labels, reason="deadline").inc()
                    seq.resolve(error=DeadlineExceededError(
                        f"{self.name}: deadline passed after {(now - seq.enqueued_s) * 1e3:.1f} ms waiting for a slot"))
                    continue
                admitted.append((heapq.heappop(free), seq))
                metrics.STAGE_SECONDS.labels(**self._labels, phase="queue").observe(now - seq.enqueued_s)
            metrics.QUEUE_DEPTH.labels(**self._labels).set(len(self._pending))
            return admitted

    def _prefill(self, engine: GenerationEngine[P, R], admitted: list[tuple[int, _Sequence[P, R]]],
                 free: list[int], active: dict[int, _Sequence[P, R]]) -> None:
        try:
            with priority.running(any(seq.urgent for _, seq in admitted)):
                engine.prefill([(slot, seq.item) for slot, seq in admitted])
        except Exception as e:
            error = self._error(e, "prefill")
            for slot, seq in admitted:
                seq.resolve(error=error)
                self._release(engine, slot, free)
            return
        active.update(admitted)

    def _drop_gone(self, engine: GenerationEngine[P, R], free: list[int],
                   active: dict[int, _Sequence[P, R]]) -> None:
        now = self._clock()
        for slot, seq in list(active.items()):
            if seq.cancelled or seq.future.done():
                metrics.REQUESTS_DROPPED.labels(**self._labels, reason="cancelled").inc()
            elif seq.deadline_s is not None and seq.deadline_s <= now:
                metrics.REQUESTS_DROPPED.labels(**self._labels, reason="deadline").inc()
                seq.resolve(error=DeadlineExceededError(
                    f"{self.name}: deadline passed while decoding ({(now - seq.enqueued_s) * 1e3:.1f} ms)"))
            else:
                continue
            del active[slot]
            self._release(engine, slot, free)

    def _step(self, engine: GenerationEngine[P, R], free: list[int], active: dict[int, _Sequence[P, R]]) -> None:
        slots = sorted(active)
        started = self._clock()
        try:
            with priority.running(any(seq.urgent for seq in active.values())):
                finished = engine.step(slots)
        except Exception as e:
            error = self._error(e, f"step of {len(slots)}")
            for slot in slots:
                active.pop(slot).resolve(error=error)
                self._release(engine, slot, free)
            return
        metrics.BATCH_SIZE.labels(**self._labels).observe(len(slots))
        metrics.STAGE_SECONDS.labels(**self._labels, phase="compute").observe(self._clock() - started)
        for slot, result in finished.items():
            active.pop(slot).resolve(result)
            self._release(engine, slot, free)

    def _release(self, engine: GenerationEngine[P, R], slot: int, free: list[int]) -> None:
        engine.release(slot)
        heapq.heappush(free, slot)

    def _error(self, e: Exception, what: str) -> EngineError:
        log.warning("generation %s: %s failed: %s", self.name, what, e)
        if isinstance(e, EngineError):
            return e
        error = InferenceError(f"{self.name}: {what} failed: {e}")
        error.__cause__ = e
        return error
