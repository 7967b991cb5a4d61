"""Stage servers for the benchmarks: ``voxpipe serve <stage>`` processes on free ports, always stopped.

While they run, SIGTERM (``kill``, ``timeout``) raises SystemExit in the benchmark, so its clean-up runs and
no server outlives it holding a port and a gigabyte of memory (a killed ``title_bench.py`` used to leave its
two servers running, and the next run's ASR server then failed to start); killed outright (SIGKILL), the servers
get SIGTERM from the kernel (``VOXPIPE_PARENT_PID``, :mod:`services.common.parent`). Each server's output goes to a log
file, whose tail is shown when the server does not come up; a pipe nobody reads would fill and stall it.

    with stage_servers(("asr", "nlp")) as servers:
        address = servers["asr"].address
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from services.common.parent import parent_env
from services.launcher import wait_serving

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Server:
    stage: str
    address: str
    process: subprocess.Popen
    log: Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exit_on_sigterm(signum, frame) -> None:  # noqa: ARG001 - a signal handler's signature
    raise SystemExit(128 + signum)


async def _wait_up(server: Server, timeout_s: float) -> str:
    """Wait until ``server`` is SERVING: "" then, else what went wrong (it exited, or the time ran out)."""
    serving = asyncio.create_task(wait_serving(server.address, timeout_s))
    while not serving.done():
        if server.process.poll() is not None:  # no point waiting out the timeout for a server that is gone
            serving.cancel()
            return f"exited with code {server.process.returncode} before it was SERVING"
        await asyncio.wait({serving}, timeout=0.2)
    try:
        serving.result()
    except TimeoutError:
        return f"was not SERVING after {timeout_s:.0f} s"
    return ""


@contextmanager
def stage_servers(stages: Sequence[str], *, env: Mapping[str, str] | None = None,
                  timeout_s: float = 120.0) -> Iterator[dict[str, Server]]:
    """Start each stage's server (``env`` added to this process's environment, log level WARNING unless set),
    wait until all are SERVING, and stop them (SIGTERM, then SIGKILL after 20 s) however the block ends."""
    environment = {"VOXPIPE_LOG_LEVEL": "WARNING", **os.environ, **(env or {}), **parent_env()}
    logs = Path(tempfile.mkdtemp(prefix="voxpipe-bench-"))
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    servers: dict[str, Server] = {}
    try:
        for stage in stages:
            port, log = free_port(), logs / f"{stage}.log"
            with log.open("wb") as out:
                process = subprocess.Popen([sys.executable, "-m", "clients.cli", "serve", stage, "--port", str(port)],
                                           cwd=ROOT, env=environment, stdout=out, stderr=subprocess.STDOUT)
            servers[stage] = Server(stage, f"127.0.0.1:{port}", process, log)
        for server in servers.values():
            problem = asyncio.run(_wait_up(server, timeout_s))
            if problem:
                tail = server.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the {server.stage} server {problem}; its log ({server.log}) ends:\n{tail}")
        yield servers
    finally:
        for server in servers.values():
            server.process.terminate()
        for server in servers.values():
            try:
                server.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.process.kill()
        signal.signal(signal.SIGTERM, previous)
