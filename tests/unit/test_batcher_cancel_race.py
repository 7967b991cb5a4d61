"""Regression: cancelling queued requests must never leak the batcher's live count.

A request whose caller is cancelled can be dropped by the scheduler (prune or take) before the
caller's own cancellation handler runs; the live count then stayed one too high, the scheduler
called ``min()`` on an empty heap and died, and every later ``submit`` hung (found by the ASR stage,
which cancels speculative and interim decodes).
"""

from __future__ import annotations

import asyncio
import random
import time

from engines.batcher import DynamicBatcher
from engines.config import BatchingConfig


async def test_random_cancellations_keep_the_count_and_the_scheduler_alive():
    def run(items: list[int]) -> list[int]:
        time.sleep(0.002)
        return items

    batcher = DynamicBatcher("race", [run], BatchingConfig(max_batch_size=4, max_queue_delay_us=1000))
    await batcher.start()
    rng = random.Random(1)
    try:
        for round_ in range(150):
            tasks = [asyncio.create_task(batcher.submit(i)) for i in range(rng.randint(1, 8))]
            await asyncio.sleep(rng.choice([0, 0, 0.0005, 0.001, 0.002]))
            for task in tasks:
                if rng.random() < 0.5:
                    task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            # Every request is answered or cancelled, so nothing may still count as queued ...
            assert batcher.queue_depth == 0, f"round {round_}: {batcher.queue_depth} requests counted after all ended"
            assert all(isinstance(r, (int, asyncio.CancelledError)) for r in results), results
            # ... and the scheduler still answers.
            if round_ % 10 == 0:
                assert await asyncio.wait_for(batcher.submit(-round_), 2.0) == -round_
        assert await asyncio.wait_for(batcher.submit(42), 2.0) == 42
    finally:
        await batcher.close()
