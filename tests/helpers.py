"""Helpers shared by the tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc

from services.common import ServerSettings, Stage, StageServer


@asynccontextmanager
async def running_stage(stage: Stage, *, grace_s: float = 0.5) -> AsyncIterator[tuple[StageServer, grpc.aio.Channel]]:
    """Start ``stage`` on a real server on 127.0.0.1:0, yield it with a connected channel, then stop it."""
    server = StageServer(stage, ServerSettings(host="127.0.0.1", port=0, grace_s=grace_s))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            yield server, channel
    finally:
        await server.stop()


def process_running(pid: int) -> bool:
    """The process exists and has not exited (a zombie waiting for its new parent to reap it has). Linux."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status and "\nState:\tX" not in status
