"""Dynamic batcher semantics, with a fake engine gated by events so timing is deterministic."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from engines import (
    BatchingConfig,
    BatchShapeError,
    DeadlineExceededError,
    DynamicBatcher,
    EngineClosedError,
    InferenceError,
    QueueFullError,
)


class GatedEngine:
    """Records each batch; blocks inside a batch while ``gate`` is clear (runs on the worker thread)."""

    def __init__(self, *, fail: bool = False, drop_one: bool = False) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batches: list[list[int]] = []
        self.fail = fail
        self.drop_one = drop_one

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.entered.set()
        self.gate.wait(timeout=10)
        if self.fail:
            raise RuntimeError("boom")
        out = [x * 10 for x in items]
        return out[:-1] if self.drop_one else out


def make(engine, **kw) -> DynamicBatcher[int, int]:
    config = BatchingConfig(**{"max_batch_size": 4, "max_queue_delay_us": 1_000, "max_queue_size": 16, **kw})
    return DynamicBatcher("fake", [engine], config)


async def occupy(batcher: DynamicBatcher, engine: GatedEngine) -> asyncio.Task:
    """Submit one request and wait until the worker is blocked inside it."""
    task = asyncio.create_task(batcher.submit(-1))
    await asyncio.to_thread(engine.entered.wait, 5)
    return task


async def test_requests_arriving_together_form_one_batch():
    engine = GatedEngine()
    engine.gate.set()
    batcher = make(engine, max_queue_delay_us=50_000)
    await batcher.start()
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)))
    assert results == [0, 10, 20]
    assert engine.batches == [[0, 1, 2]]
    await batcher.close()


async def test_window_closes_for_a_lone_request():
    engine = GatedEngine()
    engine.gate.set()
    batcher = make(engine, max_queue_delay_us=20_000)
    await batcher.start()
    assert await asyncio.wait_for(batcher.submit(7), timeout=5) == 70
    assert engine.batches == [[7]]
    await batcher.close()


async def test_batch_never_exceeds_max_batch_size():
    engine = GatedEngine()
    batcher = make(engine, max_batch_size=4)
    await batcher.start()
    first = await occupy(batcher, engine)
    rest = [asyncio.create_task(batcher.submit(i)) for i in range(6)]
    await asyncio.sleep(0.05)
    engine.gate.set()
    assert await asyncio.gather(first, *rest) == [-10, 0, 10, 20, 30, 40, 50]
    assert [len(b) for b in engine.batches] == [1, 4, 2]
    await batcher.close()


async def test_earliest_deadline_first():
    engine = GatedEngine()
    batcher = make(engine, max_batch_size=1)
    await batcher.start()
    first = await occupy(batcher, engine)
    now = time.monotonic()
    tasks = [asyncio.create_task(batcher.submit(i, deadline_s=now + 10 - i)) for i in range(4)]
    tasks.append(asyncio.create_task(batcher.submit(99)))  # no deadline: last
    await asyncio.sleep(0.05)
    engine.gate.set()
    await asyncio.gather(first, *tasks)
    assert engine.batches[1:] == [[3], [2], [1], [0], [99]]
    await batcher.close()


async def test_deadline_aware_dispatch_leaves_before_the_window_closes():
    engine = GatedEngine()
    engine.gate.set()
    # A 60 s window would blow a 2 s deadline; the measured compute time (0.5 s) says when to leave:
    # at about deadline - 0.5 s, which leaves slack for a loaded machine's late wake-ups.
    batcher = make(engine, max_queue_delay_us=60_000_000)
    batcher.cost.observe(1, 0.5)
    batcher.cost.observe(2, 0.5)
    await batcher.start()
    start = time.monotonic()
    assert await batcher.submit(5, deadline_s=start + 2.0) == 50  # not DeadlineExceededError
    elapsed = time.monotonic() - start
    assert 1.0 < elapsed < 2.0  # it waited to batch, then left before the deadline
    await batcher.close()


async def test_without_deadline_awareness_the_window_misses_the_deadline():
    engine = GatedEngine()
    engine.gate.set()
    batcher = make(engine, max_queue_delay_us=2_000_000, deadline_aware=False)
    await batcher.start()
    with pytest.raises(DeadlineExceededError):
        await batcher.submit(5, deadline_s=time.monotonic() + 0.1)
    assert engine.batches == []  # expired in the queue: never computed
    await batcher.close()


async def test_cancelled_while_queued_is_never_computed():
    engine = GatedEngine()
    batcher = make(engine)
    await batcher.start()
    first = await occupy(batcher, engine)
    doomed = asyncio.create_task(batcher.submit(666))
    kept = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0.01)
    doomed.cancel()
    await asyncio.sleep(0.01)
    assert batcher.queue_depth == 1
    engine.gate.set()
    assert await first == -10 and await kept == 10
    assert all(666 not in b for b in engine.batches)
    with pytest.raises(asyncio.CancelledError):
        await doomed
    await batcher.close()


async def test_full_queue_rejects_with_typed_error():
    engine = GatedEngine()
    batcher = make(engine, max_queue_size=2)
    await batcher.start()
    first = await occupy(batcher, engine)
    queued = [asyncio.create_task(batcher.submit(i)) for i in range(2)]
    await asyncio.sleep(0.01)
    with pytest.raises(QueueFullError, match="max_queue_size"):
        await batcher.submit(3)
    assert QueueFullError.retryable
    engine.gate.set()
    await asyncio.gather(first, *queued)
    await batcher.close()


async def test_engine_exception_resolves_every_future():
    engine = GatedEngine(fail=True)
    engine.gate.set()
    batcher = make(engine, max_queue_delay_us=20_000)
    await batcher.start()
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert len(results) == 3 and all(isinstance(r, InferenceError) for r in results)
    assert isinstance(results[0].__cause__, RuntimeError)
    # The batcher keeps serving after a failed batch.
    engine.fail = False
    assert await batcher.submit(4) == 40
    await batcher.close()


async def test_wrong_output_count_fails_the_batch():
    engine = GatedEngine(drop_one=True)
    engine.gate.set()
    batcher = make(engine, max_queue_delay_us=20_000)
    await batcher.start()
    results = await asyncio.gather(*(batcher.submit(i) for i in range(2)), return_exceptions=True)
    assert all(isinstance(r, BatchShapeError) for r in results)
    await batcher.close()


async def test_deadline_in_the_past_is_rejected_at_once():
    engine = GatedEngine()
    batcher = make(engine)
    await batcher.start()
    with pytest.raises(DeadlineExceededError):
        await batcher.submit(1, deadline_s=time.monotonic() - 1)
    await batcher.close()


async def test_a_queued_request_fails_at_its_deadline_while_every_worker_is_busy():
    # The scheduler only looks at the queue when a worker is free; a request's deadline must not wait for that.
    engine = GatedEngine()
    batcher = make(engine, max_queue_delay_us=0)
    await batcher.start()
    first = await occupy(batcher, engine)
    queued_at = time.monotonic()
    late = asyncio.create_task(batcher.submit(7, deadline_s=queued_at + 0.05))
    patient = asyncio.create_task(batcher.submit(8))
    with pytest.raises(DeadlineExceededError, match="in the queue"):
        await asyncio.wait_for(late, 2)  # the worker is still blocked: the deadline alone ended it
    assert time.monotonic() - queued_at < 1.0 and not engine.gate.is_set()
    assert batcher.queue_depth == 1
    engine.gate.set()
    assert await first == -10 and await patient == 80
    assert all(7 not in b for b in engine.batches)
    await batcher.close()


async def test_close_fails_queued_requests_and_refuses_new_ones():
    engine = GatedEngine()
    batcher = make(engine, max_batch_size=1)
    await batcher.start()
    first = await occupy(batcher, engine)
    queued = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0.01)
    closing = asyncio.create_task(batcher.close(timeout_s=5))
    await asyncio.sleep(0.01)
    engine.gate.set()
    await closing
    assert await first == -10  # the running batch completed
    with pytest.raises(EngineClosedError):
        await queued
    with pytest.raises(EngineClosedError):
        await batcher.submit(2)


async def test_several_instances_run_batches_concurrently():
    engines = [GatedEngine(), GatedEngine()]
    config = BatchingConfig(max_batch_size=1, max_queue_delay_us=0, max_queue_size=8)
    batcher = DynamicBatcher("two", engines, config)
    await batcher.start()
    a = asyncio.create_task(batcher.submit(1))
    b = asyncio.create_task(batcher.submit(2))
    # Both workers are inside a batch at the same time.
    await asyncio.to_thread(engines[0].entered.wait, 5)
    await asyncio.to_thread(engines[1].entered.wait, 5)
    for e in engines:
        e.gate.set()
    assert sorted(await asyncio.gather(a, b)) == [10, 20]
    await batcher.close()


async def test_a_failed_scheduler_fails_queued_requests_instead_of_hanging():
    engine = GatedEngine()
    batcher = make(engine, max_batch_size=1)
    await batcher.start()
    first = await occupy(batcher, engine)
    queued = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0.01)

    def broken() -> None:
        raise RuntimeError("scheduler bug")

    batcher._take_batch = broken  # simulate a bug inside the scheduler loop
    engine.gate.set()
    with pytest.raises(EngineClosedError, match="scheduler bug"):
        await asyncio.wait_for(queued, 5)
    with pytest.raises(EngineClosedError):
        await batcher.submit(2)
    assert await first == -10
    await batcher.close()
