"""``voxpipe up``: every available stage as a local process, on the CPU or a GPU.

Each stage runs as ``python -m clients.cli serve <stage>`` with the same settings the TOML and
``VOXPIPE_*`` variables give (the stack's device is passed on as ``VOXPIPE_DEVICE``). The launcher waits
until every stage reports SERVING over ``grpc.health.v1``, prints where each listens, and forwards
SIGINT/SIGTERM so each drains and exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services import available_stages
from services.common.settings import STAGE_ORDER, StackSettings

log = logging.getLogger(__name__)


class LaunchError(RuntimeError):
    """A stage exited or never became SERVING; its own log says why."""


@dataclass(frozen=True, kw_only=True)
class LaunchedStage:
    name: str
    address: str
    metrics_port: int
    process: asyncio.subprocess.Process


async def wait_serving(address: str, timeout_s: float, service: str = "") -> None:
    """Poll ``grpc.health.v1`` at ``address`` until SERVING; raise TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} not SERVING after {timeout_s:.0f} s")
            await asyncio.sleep(0.2)


async def launch(settings: StackSettings, *, stages: list[str] | None = None,
                 ready_timeout_s: float = 180.0) -> list[LaunchedStage]:
    """Start the stages (all available ones by default) and wait until each is SERVING."""
    names = stages or [s for s in STAGE_ORDER if s in available_stages()]
    launched: list[LaunchedStage] = []
    try:
        for name in names:
            stage = settings.stage(name)
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "clients.cli", "serve", name,
                env={**os.environ, "VOXPIPE_DEVICE": settings.device})
            launched.append(LaunchedStage(name=name, address=stage.server.address,
                                          metrics_port=stage.server.metrics_port, process=process))
        waits = [asyncio.create_task(_wait_or_exit(s, ready_timeout_s)) for s in launched]
        await asyncio.gather(*waits)
    except BaseException:
        await shutdown(launched)
        raise
    return launched


async def _wait_or_exit(stage: LaunchedStage, timeout_s: float) -> None:
    serving = asyncio.create_task(wait_serving(stage.address, timeout_s))
    exited = asyncio.create_task(stage.process.wait())
    done, _ = await asyncio.wait({serving, exited}, return_when=asyncio.FIRST_COMPLETED)
    if serving in done:
        exited.cancel()
        try:
            serving.result()
        except TimeoutError as e:
            raise LaunchError(f"{stage.name} at {stage.address} did not report SERVING within {timeout_s:.0f} s") from e
        return
    serving.cancel()
    raise LaunchError(f"{stage.name} exited with code {stage.process.returncode} before it was SERVING "
                      "(its error is printed above)")


async def shutdown(launched: list[LaunchedStage], timeout_s: float = 20.0) -> None:
    """SIGTERM every stage (they drain), then SIGKILL what is still running after ``timeout_s``."""
    for stage in reversed(launched):
        if stage.process.returncode is None:
            stage.process.send_signal(signal.SIGTERM)
    for stage in launched:
        try:
            await asyncio.wait_for(stage.process.wait(), timeout_s)
        except TimeoutError:
            log.warning("%s did not stop within %.0f s; killing it", stage.name, timeout_s)
            stage.process.kill()
            await stage.process.wait()


def model_lines(host: str, metrics_port: int, timeout_s: float = 2.0) -> list[str]:
    """Where a stage's models run, from its Prometheus endpoint (``voxpipe_model_info``); [] without one."""
    import re
    import urllib.request

    if not metrics_port:
        return []
    try:
        with urllib.request.urlopen(f"http://{host}:{metrics_port}/metrics", timeout=timeout_s) as response:
            text = response.read().decode()
    except OSError as e:
        return [f"(models: metrics endpoint :{metrics_port} not readable: {e})"]
    lines = []
    for labels in re.findall(r"^voxpipe_model_info\{([^}]*)\} 1\.0$", text, flags=re.MULTILINE):
        info = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        lines.append(f"{info['model']}: {info['device']} {info['precision']} {info['backend']}, "
                     f"{info['instances']} instance(s)")
    return lines


def format_table(launched: list[LaunchedStage]) -> str:
    """Where each stage listens, as a small table."""
    rows = [("stage", "gRPC address", "metrics")]
    rows += [(s.name, s.address, f":{s.metrics_port}/metrics" if s.metrics_port else "-") for s in launched]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


async def up(settings: StackSettings) -> int:
    """Run the stack until SIGINT/SIGTERM; returns the exit code."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    launched = await launch(settings)
    if not launched:
        print("no stage is available to start", file=sys.stderr)
        return 1
    print(format_table(launched), flush=True)
    print("all stages SERVING; Ctrl-C to stop", flush=True)
    exits = [asyncio.create_task(s.process.wait()) for s in launched]
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({stopper, *exits}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if stopper not in done:
        dead = [s.name for s, t in zip(launched, exits, strict=True) if t in done]
        print(f"stage(s) {', '.join(dead)} exited; stopping the stack", file=sys.stderr)
        code = 1
    stopper.cancel()
    await shutdown(launched)
    for t in exits:
        t.cancel()
    return code
