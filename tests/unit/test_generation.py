"""The generation scheduler (continuous batching) on a fake engine whose steps are gated by events."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from engines.config import BatchingConfig
from engines.errors import DeadlineExceededError, EngineClosedError, InferenceError, QueueFullError
from engines.generation import GenerationEngine, GenerationScheduler


class CountingEngine(GenerationEngine[int, list[int]]):
    """A sequence started from ``n`` emits its slot ``n`` times, one per step; every step is recorded."""

    def __init__(self, slots: int, *, gate: threading.Event | None = None, fail_on: int | None = None,
                 step_s: float = 0.0) -> None:
        self.slots = slots
        self.remaining: dict[int, int] = {}
        self.emitted: dict[int, list[int]] = {}
        self.steps: list[tuple[int, ...]] = []
        self.released: list[int] = []
        self.gate = gate
        self.fail_on = fail_on
        self.step_s = step_s

    def prefill(self, batch: Sequence[tuple[int, int]]) -> None:
        for slot, n in batch:
            assert slot not in self.remaining, "a busy slot was handed out"
            self.remaining[slot], self.emitted[slot] = n, []

    def step(self, active: Sequence[int]) -> dict[int, list[int]]:
        if self.gate is not None:
            self.gate.wait(5)
        time.sleep(self.step_s)
        if self.fail_on is not None and self.fail_on in active:
            raise RuntimeError("boom")
        self.steps.append(tuple(active))
        done = {}
        for slot in active:
            self.emitted[slot].append(slot)
            self.remaining[slot] -= 1
            if self.remaining[slot] == 0:
                done[slot] = self.emitted[slot]
        return done

    def release(self, slot: int) -> None:
        self.remaining.pop(slot, None)
        self.released.append(slot)


async def _started(engines, **batching) -> GenerationScheduler:
    scheduler = GenerationScheduler("fake", engines, BatchingConfig(**batching))
    await scheduler.start()
    return scheduler


async def test_sequences_share_steps_and_finish_independently():
    engine = CountingEngine(slots=4)
    scheduler = await _started([engine])
    results = await asyncio.gather(*(scheduler.generate(n) for n in (3, 1, 2)))
    await scheduler.close()
    assert [len(r) for r in results] == [3, 1, 2]
    assert max(len(s) for s in engine.steps) > 1, "concurrent sequences never shared a step"
    assert sorted(engine.released) == sorted({slot for r in results for slot in r})


async def test_more_sequences_than_slots_wait_for_a_free_slot():
    engine = CountingEngine(slots=2)
    scheduler = await _started([engine])
    results = await asyncio.gather(*(scheduler.generate(2) for _ in range(5)))
    await scheduler.close()
    assert all(len(r) == 2 for r in results)
    assert all(len(step) <= 2 for step in engine.steps)
    assert {slot for r in results for slot in r} <= {0, 1}, "slots are handed out lowest first"


async def test_queue_full_is_refused_at_once():
    gate = threading.Event()
    scheduler = await _started([CountingEngine(slots=1, gate=gate)], max_queue_size=1)
    first = asyncio.create_task(scheduler.generate(1))
    await asyncio.sleep(0.05)  # admitted: the slot is busy, the queue empty
    second = asyncio.create_task(scheduler.generate(1))
    await asyncio.sleep(0.01)
    with pytest.raises(QueueFullError, match="max_queue_size"):
        await scheduler.generate(1)
    gate.set()
    assert len(await first) == len(await second) == 1
    await scheduler.close()


async def test_cancelled_sequence_frees_its_slot():
    gate = threading.Event()
    engine = CountingEngine(slots=1, gate=gate)
    scheduler = await _started([engine])
    long = asyncio.create_task(scheduler.generate(1000))
    await asyncio.sleep(0.05)
    long.cancel()
    gate.set()
    assert await asyncio.wait_for(scheduler.generate(2), 5) == [0, 0]
    assert 0 in engine.released
    await scheduler.close()


async def test_deadline_passing_while_decoding_fails_the_sequence():
    engine = CountingEngine(slots=2)
    scheduler = await _started([engine])
    with pytest.raises(DeadlineExceededError):
        await scheduler.generate(10**9, deadline_s=time.monotonic() + 0.05)
    assert await scheduler.generate(1) == [0]
    await scheduler.close()


async def test_a_failed_step_fails_its_sequences_and_the_loop_goes_on():
    engine = CountingEngine(slots=2, fail_on=1, step_s=0.001)
    scheduler = await _started([engine])
    first = asyncio.create_task(scheduler.generate(10**6))
    await asyncio.sleep(0.02)
    with pytest.raises(InferenceError, match="boom"):
        await scheduler.generate(100)  # slot 1: its step fails, and takes slot 0's sequence with it
    with pytest.raises(InferenceError):
        await first
    engine.fail_on = None
    assert await scheduler.generate(1) == [0]
    await scheduler.close()


async def test_close_fails_waiting_and_active_sequences():
    gate = threading.Event()
    scheduler = await _started([CountingEngine(slots=1, gate=gate)])
    tasks = [asyncio.create_task(scheduler.generate(5)) for _ in range(3)]
    await asyncio.sleep(0.05)
    closing = asyncio.create_task(scheduler.close())
    await asyncio.sleep(0.01)
    gate.set()
    await closing
    for task in tasks:
        with pytest.raises(EngineClosedError):
            await task
    with pytest.raises(EngineClosedError):
        await scheduler.generate(1)


async def test_two_instances_both_decode():
    engines = [CountingEngine(slots=1, step_s=0.002), CountingEngine(slots=1, step_s=0.002)]
    scheduler = await _started(engines)
    await asyncio.gather(*(scheduler.generate(20) for _ in range(2)))
    await scheduler.close()
    assert all(e.steps for e in engines)
