"""The supervisor restarts a stage process that exits on its own, backs off, gives up loudly, and stops when
the stack stops (real child processes; the stage is a sleeping Python)."""

from __future__ import annotations

import asyncio
import logging
import sys

from services.supervisor import RestartPolicy, supervise

FAST = RestartPolicy(initial_backoff_s=0.01, max_backoff_s=0.05, healthy_reset_s=60.0, max_restarts=3)


class Child:
    """A restartable process running ``code`` (Python)."""

    def __init__(self, code: str) -> None:
        self.label = "fake[1]"
        self.code = code
        self.restarts = 0
        self.gave_up = False
        self.started = 0

    async def start(self) -> asyncio.subprocess.Process:
        self.started += 1
        return await asyncio.create_subprocess_exec(sys.executable, "-c", self.code)


async def _ready(child: Child) -> None:
    await asyncio.sleep(0.05)
    if child.process.returncode is not None:
        raise RuntimeError(f"exited with {child.process.returncode} before it was ready")


async def test_a_killed_process_is_started_again_and_the_supervisor_stops_with_the_stack():
    child = Child("import time; time.sleep(60)")
    child.process = await child.start()
    stop = asyncio.Event()
    task = asyncio.create_task(supervise(child, stop, FAST, _ready))
    first = child.process
    first.kill()
    for _ in range(100):
        await asyncio.sleep(0.02)
        if child.restarts == 1 and child.process is not first:
            break
    assert child.restarts == 1 and child.process.returncode is None
    stop.set()
    await asyncio.wait_for(task, 2)
    assert child.process.returncode is None, "stopping is the launcher's job (SIGTERM, drain), not the supervisor's"
    child.process.kill()
    await child.process.wait()
    assert not child.gave_up


async def test_a_process_that_keeps_crashing_is_given_up_on_loudly(caplog):
    child = Child("import sys; sys.exit(3)")
    child.process = await child.start()
    with caplog.at_level(logging.WARNING, logger="services.supervisor"):
        await asyncio.wait_for(supervise(child, asyncio.Event(), FAST, _ready), 10)
    assert child.gave_up and child.restarts == FAST.max_restarts and child.started == 1 + FAST.max_restarts
    assert "GIVING UP on fake[1]" in caplog.text and "code 3" in caplog.text
    assert "restart 1 of at most 3 in a row" in caplog.text


async def test_stopping_during_a_backoff_returns_at_once():
    child = Child("import sys; sys.exit(1)")
    child.process = await child.start()
    stop = asyncio.Event()
    slow = RestartPolicy(initial_backoff_s=30.0, max_restarts=3)
    task = asyncio.create_task(supervise(child, stop, slow, _ready))
    await asyncio.sleep(0.3)  # the child has exited; the supervisor waits out its 30 s backoff
    stop.set()
    await asyncio.wait_for(task, 1)
    assert child.started == 1 and child.restarts == 0


def test_backoff_doubles_up_to_its_cap():
    policy = RestartPolicy(initial_backoff_s=0.5, max_backoff_s=3.0)
    assert [policy.backoff_s(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
