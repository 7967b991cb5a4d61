"""The dynamic batcher: one per engine, shared by every request of a service.

Semantics (the Triton dynamic batcher, plus deadlines):

* a bounded queue — ``submit`` on a full queue raises :class:`QueueFullError` at once;
* a batch closes at ``max_batch_size`` items or ``max_queue_delay_us`` after its oldest request arrived;
* requests are taken earliest-deadline-first (no deadline sorts last, then arrival order);
* **deadline-aware dispatch**: the batch is dispatched early when waiting any longer would make its
  most urgent request miss its deadline, given the compute time measured for that batch size;
* a request cancelled while queued is dropped and never computed; one whose deadline passes while it is
  queued fails with :class:`DeadlineExceededError` at that moment (also while every instance is busy) and is
  never computed;
* every future is resolved, also when the engine raises, and the engine must return one result per item.

Each engine instance has its own single-thread executor, so ``batch_fn`` for instance *i* always runs
on the same thread (one CUDA stream per instance on a GPU); batches go to whichever instance is idle.

An optional ``prepare`` function turns each item into what the batch function takes (features, token ids)
in a pool of host threads before the item is queued. Stages set it for GPU engines, so a GPU instance's
thread only launches the model and CPU work of other requests overlaps it; on a CPU the whole item is the
batch function's (one thread hand-off per batch instead of one per request).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from opentelemetry import trace

from engines import metrics, priority
from engines.config import BatchingConfig
from engines.errors import (
    BatchShapeError,
    DeadlineExceededError,
    EngineClosedError,
    EngineError,
    InferenceError,
    QueueFullError,
)

T = TypeVar("T")
R = TypeVar("R")
BatchFn = Callable[[list[T]], list[R]]
Prepare = Callable[[Any], T]

log = logging.getLogger(__name__)


@dataclass(order=True)
class _Request(Generic[T, R]):
    sort_key: tuple[float, int]
    item: T = field(compare=False)
    future: asyncio.Future[R] = field(compare=False)
    deadline_s: float | None = field(compare=False)
    enqueued_s: float = field(compare=False)
    dispatched_s: float = field(default=0.0, compare=False)
    batch_size: int = field(default=0, compare=False)
    # True while the request counts in ``_live``; whichever of cancel/prune/take sees it first uncounts it.
    counted: bool = field(default=True, compare=False)
    urgent: bool = field(default=False, compare=False)


class ComputeCostModel:
    """Exponentially weighted compute time per batch size, to predict how long a batch will take."""

    def __init__(self, alpha: float = 0.2) -> None:
        self._alpha = alpha
        self._seconds: dict[int, float] = {}

    def observe(self, batch_size: int, seconds: float) -> None:
        """Record one measured batch."""
        old = self._seconds.get(batch_size)
        self._seconds[batch_size] = seconds if old is None else old + self._alpha * (seconds - old)

    def predict(self, batch_size: int) -> float:
        """Predicted seconds for ``batch_size``: measured, else scaled from the nearest measured size."""
        if batch_size in self._seconds:
            return self._seconds[batch_size]
        if not self._seconds:
            return 0.0
        nearest = min(self._seconds, key=lambda n: abs(n - batch_size))
        # Batched compute grows sub-linearly; scaling linearly from below errs on the safe side.
        scale = batch_size / nearest if batch_size > nearest else 1.0
        return self._seconds[nearest] * scale


class DynamicBatcher(Generic[T, R]):
    """Groups concurrent requests into batches for one engine (see the module docstring)."""

    def __init__(
        self,
        name: str,
        batch_fns: Sequence[BatchFn[T, R]],
        config: BatchingConfig,
        *,
        stage: str = "",
        clock: Callable[[], float] = time.monotonic,
        prepare: Prepare[T] | None = None,
        prepare_threads: int = 2,
    ) -> None:
        if not batch_fns:
            raise ValueError(f"batcher {name!r} needs at least one batch function (one per engine instance)")
        self.name = name
        self.stage = stage or name
        self.config = config
        self.cost = ComputeCostModel()
        self._batch_fns = list(batch_fns)
        self._clock = clock
        self._heap: list[_Request[T, R]] = []
        self._live = 0  # queued requests not yet cancelled
        self._seq = itertools.count()
        self._arrival = asyncio.Event()
        self._idle_workers: asyncio.Queue[int] = asyncio.Queue()
        self._executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-{i}") for i in range(len(batch_fns))
        ]
        self._prepare = prepare
        self._host = (ThreadPoolExecutor(max_workers=prepare_threads, thread_name_prefix=f"{name}-host")
                      if prepare is not None else None)
        self._scheduler: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._closed = False
        labels = {"stage": self.stage, "model": name}
        self._labels = labels
        # Labelled children looked up once: at tens of thousands of requests a second the lookups add up.
        self._depth = metrics.QUEUE_DEPTH.labels(**labels)
        self._queue_s = metrics.STAGE_SECONDS.labels(**labels, phase="queue")
        self._compute_s = metrics.STAGE_SECONDS.labels(**labels, phase="compute")
        self._batch_size = metrics.BATCH_SIZE.labels(**labels)

    @property
    def queue_depth(self) -> int:
        """Requests waiting (cancelled ones excluded)."""
        return self._live

    async def start(self) -> None:
        """Start the scheduler task; the batcher owns it until :meth:`close`."""
        if self._scheduler is not None:
            return
        for i in range(len(self._batch_fns)):
            self._idle_workers.put_nowait(i)
        self._scheduler = asyncio.create_task(self._schedule(), name=f"batcher-{self.name}")
        self._scheduler.add_done_callback(self._scheduler_done)

    def _scheduler_done(self, task: asyncio.Task[None]) -> None:
        """A scheduler that dies (a bug) must not leave callers waiting forever: fail what is queued."""
        if task.cancelled() or task.exception() is None:
            return
        log.error("batcher %s: scheduler failed; failing queued requests", self.name, exc_info=task.exception())
        self._closed = True
        for req in self._heap:
            if not req.future.done():
                req.future.set_exception(EngineClosedError(f"batcher {self.name!r} failed: {task.exception()!r}"))

    async def submit(self, item: T, *, deadline_s: float | None = None, urgent: bool | None = None) -> R:
        """Queue ``item`` and wait for its result.

        Args:
            deadline_s: absolute deadline on this batcher's clock (``time.monotonic()``), or None.
            urgent: its class on a GPU (a batch holding an urgent request runs on the high-priority stream);
                None: urgent when the deadline is within ``urgent_slack_ms`` (engines/priority.py).

        Raises:
            QueueFullError: the queue holds ``max_queue_size`` requests.
            DeadlineExceededError: the deadline passed before the result was ready.
            EngineClosedError: the batcher is closed.
            InferenceError: the engine failed on the batch holding this item.
        """
        if self._closed or self._scheduler is None or self._scheduler.done():
            raise EngineClosedError(f"batcher {self.name!r} is not running")
        if self._prepare is not None:
            item = await asyncio.get_running_loop().run_in_executor(self._host, self._prepare, item)
        now = self._clock()
        if deadline_s is not None and deadline_s <= now:
            metrics.REQUESTS_DROPPED.labels(**self._labels, reason="deadline").inc()
            raise DeadlineExceededError(f"{self.name}: deadline already passed on arrival ({(now - deadline_s) * 1e3:.1f} ms ago)")
        if self._live >= self.config.max_queue_size:
            metrics.REQUESTS_DROPPED.labels(**self._labels, reason="queue_full").inc()
            raise QueueFullError(
                f"{self.name}: queue full ({self.config.max_queue_size} requests waiting, max_queue_size)"
            )
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        key = (deadline_s if deadline_s is not None else math.inf, next(self._seq))
        request = _Request(key, item, future, deadline_s, now,
                           urgent=priority.classify(urgent, deadline_s, now, self.config.urgent_slack_ms))
        heapq.heappush(self._heap, request)
        self._live += 1
        self._depth.set(self._live)
        self._arrival.set()
        # Still queued at its deadline, it fails then, even while every worker is busy (the scheduler looks at
        # the queue only when one is free, which may be a whole batch later).
        expiry = (asyncio.get_running_loop().call_later(deadline_s - now, self._expire, request)
                  if deadline_s is not None else None)
        try:
            result = await future
            span = trace.get_current_span()
            if span.is_recording():
                span.set_attributes({f"voxpipe.{self.name}.queue_ms": (request.dispatched_s - now) * 1e3,
                                     f"voxpipe.{self.name}.batch_size": request.batch_size})
            return result
        except asyncio.CancelledError:
            if future.cancelled() and self._forget(future):
                metrics.REQUESTS_DROPPED.labels(**self._labels, reason="cancelled").inc()
            raise
        finally:
            if expiry is not None:
                expiry.cancel()

    async def close(self, timeout_s: float = 5.0) -> None:
        """Stop accepting work, fail what is queued, wait for running batches, stop the workers."""
        self._closed = True
        if self._scheduler is not None:
            self._scheduler.cancel()
            await asyncio.gather(self._scheduler, return_exceptions=True)
        while self._heap:
            req = heapq.heappop(self._heap)
            if not req.future.done():
                req.future.set_exception(EngineClosedError(f"batcher {self.name!r} closed"))
        self._live = 0
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=timeout_s)
        for ex in (*self._executors, *([self._host] if self._host is not None else [])):
            ex.shutdown(wait=False, cancel_futures=True)

    # -- scheduling --------------------------------------------------------------------------------

    def _expire(self, req: _Request[T, R]) -> None:
        """Fail ``req`` at its deadline if it is still queued (a dispatched one runs to its result)."""
        if req.future.done() or not self._uncount(req):
            return
        req.future.set_exception(DeadlineExceededError(
            f"{self.name}: deadline passed after {(self._clock() - req.enqueued_s) * 1e3:.1f} ms in the queue"))
        metrics.REQUESTS_DROPPED.labels(**self._labels, reason="deadline").inc()
        self._depth.set(self._live)

    def _forget(self, future: asyncio.Future[R]) -> bool:
        """Account for a request cancelled while queued; it is skipped when popped. True if it was queued."""
        for req in self._heap:
            if req.future is future:
                counted = self._uncount(req)
                self._depth.set(self._live)
                return counted
        return False

    def _uncount(self, req: _Request[T, R]) -> bool:
        """Remove ``req`` from ``_live`` once, whoever gets to it first (a cancelled request's own
        handler may run after the scheduler already dropped it). True if this call uncounted it."""
        if not req.counted:
            return False
        req.counted = False
        self._live -= 1
        return True

    def _prune(self) -> None:
        """Drop cancelled requests from the top of the heap and fail those whose deadline passed."""
        now = self._clock()
        kept = []
        changed = False
        for req in self._heap:
            if req.future.done():
                self._uncount(req)
                changed = True
                continue
            if req.deadline_s is not None and req.deadline_s <= now:
                self._expire(req)
                changed = True
                continue
            kept.append(req)
        if changed:
            heapq.heapify(kept)
            self._heap = kept
            self._depth.set(self._live)

    def _dispatch_at(self) -> float:
        """When the batch forming now must leave: window close, or earlier to save the earliest deadline."""
        oldest = min(req.enqueued_s for req in self._heap)
        at = oldest + self.config.max_queue_delay_us / 1e6
        earliest = self._heap[0].deadline_s
        if self.config.deadline_aware and earliest is not None:
            grow_to = min(self._live + 1, self.config.max_batch_size)
            at = min(at, earliest - self.cost.predict(grow_to))
        return at

    async def _schedule(self) -> None:
        while True:
            while not self._live:
                self._arrival.clear()
                await self._arrival.wait()
            worker = await self._idle_workers.get()
            try:
                while True:
                    self._prune()
                    if not self._live or self._live >= self.config.max_batch_size:
                        break
                    wait_s = self._dispatch_at() - self._clock()
                    if wait_s <= 0:
                        break
                    self._arrival.clear()
                    try:
                        await asyncio.wait_for(self._arrival.wait(), timeout=wait_s)
                    except TimeoutError:
                        pass
                batch = self._take_batch()
            except BaseException:
                self._idle_workers.put_nowait(worker)
                raise
            if not batch:
                self._idle_workers.put_nowait(worker)
                continue
            task = asyncio.create_task(self._run(worker, batch), name=f"batch-{self.name}-{worker}")
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    def _take_batch(self) -> list[_Request[T, R]]:
        batch: list[_Request[T, R]] = []
        while self._heap and len(batch) < self.config.max_batch_size:
            req = heapq.heappop(self._heap)
            self._uncount(req)
            if req.future.done():
                continue
            batch.append(req)
        self._depth.set(self._live)
        return batch

    async def _run(self, worker: int, batch: list[_Request[T, R]]) -> None:
        loop = asyncio.get_running_loop()
        start = self._clock()
        for req in batch:
            req.dispatched_s, req.batch_size = start, len(batch)
            self._queue_s.observe(start - req.enqueued_s)
        self._batch_size.observe(len(batch))
        items = [req.item for req in batch]
        try:
            results = await loop.run_in_executor(self._executors[worker], priority.run_marked, self._batch_fns[worker],
                                                 items, any(req.urgent for req in batch))
            if len(results) != len(batch):
                raise BatchShapeError(f"{self.name}: engine returned {len(results)} results for a batch of {len(batch)}")
        except Exception as e:
            error = e if isinstance(e, EngineError) else InferenceError(f"{self.name}: {e}")
            if error is not e:
                error.__cause__ = e
            log.warning("batch of %d on %s failed: %s", len(batch), self.name, error)
            for req in batch:
                if not req.future.done():
                    req.future.set_exception(error)
            return
        finally:
            elapsed = self._clock() - start
            self._idle_workers.put_nowait(worker)
        self.cost.observe(len(batch), elapsed)
        self._compute_s.observe(elapsed)
        for req, result in zip(batch, results, strict=True):
            if not req.future.done():
                req.future.set_result(result)
