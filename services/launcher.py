"""``voxpipe up``: every available stage as a local process, on the CPU or a GPU.

Each stage runs as ``python -m clients.cli serve <stage>`` with the same settings the TOML and
``VOXPIPE_*`` variables give (the stack's device is passed on as ``VOXPIPE_DEVICE``); a stage with
``processes = N`` runs as N such processes, process i on ``port + 100 i``. The launcher waits until every
process reports SERVING over ``grpc.health.v1``, prints where each listens, restarts a process that exits on
its own (:mod:`services.supervisor`), and forwards SIGINT/SIGTERM so each drains and exits; if the launcher is
killed outright, each stage gets SIGTERM from the kernel and drains all the same (:mod:`services.common.parent`). With ``mps`` the
stages are clients of an NVIDIA MPS daemon (:mod:`services.mps`), which the launcher starts first (or joins)
and stops last (only one it started).
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

from services import available_stages, mps
from services.common.parent import parent_env
from services.common.settings import STAGE_ORDER, SettingsError, StackSettings, cache_root, options_to
from services.supervisor import RestartPolicy, supervise

log = logging.getLogger(__name__)


class LaunchError(RuntimeError):
    """A stage exited or never became SERVING; its own log says why."""


@dataclass(kw_only=True)
class LaunchedStage:
    """One process of a stage: where it listens, how it is started, and the process running now."""

    name: str
    address: str
    metrics_port: int
    argv: tuple[str, ...]
    env: dict[str, str]
    process: asyncio.subprocess.Process
    index: int = 0
    restarts: int = 0
    gave_up: bool = False

    @property
    def label(self) -> str:
        return f"{self.name}[{self.index}]" if self.index else self.name

    async def start(self) -> asyncio.subprocess.Process:
        """Start the process again, with the command and environment it was first started with."""
        return await asyncio.create_subprocess_exec(*self.argv, env=self.env)


@dataclass(frozen=True, kw_only=True)
class Stack:
    """What :func:`launch` started: the stage processes and, with ``mps``, the MPS daemon they use."""

    stages: list[LaunchedStage]
    mps: mps.MpsDaemon | None = None


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


async def launch(settings: StackSettings, *, stages: list[str] | None = None, use_mps: bool = False,
                 ready_timeout_s: float = 180.0) -> Stack:
    """Start the stages (all available ones by default), each as its configured number of processes, and
    wait until every process is SERVING. With ``use_mps`` first start (or join) an MPS control daemon.

    Raises:
        LaunchError: a process exited or never became SERVING, or MPS could not be started.
    """
    names = stages or [s for s in STAGE_ORDER if s in available_stages()]
    if use_mps and settings.device == "cpu":
        raise LaunchError("--mps shares a GPU between the stages' processes: it needs --device cuda (or auto)")
    try:
        settings.check_ports(names)
        servers = {name: settings.server(name) for name in names}
    except SettingsError as e:
        raise LaunchError(str(e)) from e
    daemon = None
    if use_mps:
        try:
            daemon = await mps.start(cache_root(os.environ) / "run", os.environ)
        except mps.MpsError as e:
            raise LaunchError(str(e)) from e
    stack = Stack(stages=[], mps=daemon)
    try:
        for name in names:
            server = servers[name]
            for i in range(server.processes):
                own = server.process(i)
                env = {**os.environ, "VOXPIPE_DEVICE": settings.device, **(daemon.env() if daemon else {}), **parent_env(),
                       f"VOXPIPE_{name.upper()}__PORT": str(own.port),
                       f"VOXPIPE_{name.upper()}__METRICS_PORT": str(own.metrics_port)}
                argv = (sys.executable, "-m", "clients.cli", "serve", name)
                process = await asyncio.create_subprocess_exec(*argv, env=env)
                stack.stages.append(LaunchedStage(name=name, address=own.address, metrics_port=own.metrics_port,
                                                  argv=argv, env=env, process=process, index=i))
        waits = [asyncio.create_task(_wait_or_exit(s, ready_timeout_s)) for s in stack.stages]
        await asyncio.gather(*waits)
    except BaseException:
        await shutdown(stack)
        raise
    return stack


async def _wait_or_exit(stage: LaunchedStage, timeout_s: float) -> None:
    serving = asyncio.create_task(wait_serving(stage.address, timeout_s))
    exited = asyncio.create_task(stage.process.wait())
    done, _ = await asyncio.wait({serving, exited}, return_when=asyncio.FIRST_COMPLETED)
    if serving in done:
        exited.cancel()
        try:
            serving.result()
        except TimeoutError as e:
            raise LaunchError(f"{stage.label} at {stage.address} did not report SERVING within {timeout_s:.0f} s") from e
        return
    serving.cancel()
    raise LaunchError(f"{stage.label} exited with code {stage.process.returncode} before it was SERVING "
                      "(its error is printed above)")


async def shutdown(stack: Stack, timeout_s: float = 20.0) -> None:
    """Drain callers before the stages they call: SIGTERM the orchestrator's processes and wait for them (turns
    in flight still reach the model stages), then the model stages'; SIGKILL a process still running after
    ``timeout_s``. Then stop the MPS daemon if this stack started it."""
    callers = [s for s in stack.stages if s.name == "orchestrator"]
    for group in (callers, [s for s in stack.stages if s.name != "orchestrator"]):
        for stage in group:
            if stage.process.returncode is None:
                stage.process.send_signal(signal.SIGTERM)
        for stage in group:
            try:
                await asyncio.wait_for(stage.process.wait(), timeout_s)
            except TimeoutError:
                log.warning("%s did not stop within %.0f s; killing it", stage.label, timeout_s)
                stage.process.kill()
                await stage.process.wait()
    if stack.mps is not None:
        await mps.stop(stack.mps)


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
    """Where each stage's processes listen, as a small table."""
    rows = [("stage", "gRPC address", "metrics")]
    rows += [(s.label, s.address, f":{s.metrics_port}/metrics" if s.metrics_port else "-") for s in launched]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


async def up(settings: StackSettings, *, use_mps: bool = False, policy: RestartPolicy | None = None) -> int:
    """Run the stack until SIGINT/SIGTERM, restarting any process that exits on its own (see
    :mod:`services.supervisor`); returns the exit code (1 if the supervisor gave up on a process)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stack = await launch(settings, use_mps=use_mps)
    launched = stack.stages
    if not launched:
        print("no stage is available to start", file=sys.stderr)
        return 1
    print(format_table(launched), flush=True)
    if stack.mps is not None:
        print(f"MPS: {'started' if stack.mps.started else 'joined'} the control daemon at {stack.mps.pipe_dir}",
              flush=True)
    print("all stages SERVING; Ctrl-C to stop", flush=True)
    policy = policy or options_to(RestartPolicy, settings.sections.get("supervisor", {}), "supervisor")
    supervisors = [asyncio.create_task(supervise(s, stop, policy, lambda s: _wait_or_exit(s, policy.ready_timeout_s)),
                                       name=f"supervise-{s.label}") for s in launched]
    try:
        await stop.wait()
    finally:
        stop.set()
        await asyncio.gather(*supervisors, return_exceptions=True)
        await shutdown(stack)
    given_up = [s.label for s in launched if s.gave_up]
    if given_up:
        print(f"voxpipe up: gave up restarting {', '.join(given_up)} (see the log above)", file=sys.stderr)
    return 1 if given_up else 0
