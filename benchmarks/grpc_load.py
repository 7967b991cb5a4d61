"""Shared helpers for the stage benchmarks: a stage server in its own process, RSS, latency, closed-loop load.

The server runs as a separate process (``python benchmarks/grpc_load.py --serve <stage> --options JSON``)
so its RSS is its own and the client's Python does not share its GIL; it prints ``PORT <n>`` once SERVING.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@dataclass
class ServerProcess:
    """A stage served by a child process."""

    process: subprocess.Popen
    address: str

    def rss_mb(self) -> tuple[float, float]:
        """(current RSS, peak RSS) of the server process in MiB, from /proc."""
        fields = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
        return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)

    def stop(self) -> None:
        """SIGTERM, then wait (the stage drains)."""
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(stage: str, options: dict, models_dir: Path, timeout_s: float = 180.0, *,
                 models: dict | None = None) -> ServerProcess:
    """Start ``stage`` with ``options`` (its TOML section) and ``models`` (``[models.<name>]`` serving
    overrides) in a child process; returns once it listens and is SERVING."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", stage, "--options", json.dumps(options),
           "--models", json.dumps(models or {}), "--models-dir", str(models_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{stage} server exited with {proc.wait()} before serving")
        if line.startswith("PORT "):
            return ServerProcess(proc, f"127.0.0.1:{int(line.split()[1])}")
    proc.kill()
    raise TimeoutError(f"{stage} server not serving after {timeout_s} s")


def percentiles_ms(latencies_s: list[float]) -> dict[str, float]:
    """p50/p95/p99 in milliseconds."""
    xs = sorted(latencies_s)
    if not xs:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan")}

    def pick(q: float) -> float:
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1e3

    return {"p50": statistics.median(xs) * 1e3, "p95": pick(0.95), "p99": pick(0.99)}


async def sequential(call: Callable[[int], Awaitable[object]], n: int, warmup: int = 20) -> list[float]:
    """Latencies of ``n`` calls one after another (after ``warmup`` unmeasured calls)."""
    for i in range(warmup):
        await call(i)
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await call(i)
        out.append(time.perf_counter() - t0)
    return out


async def closed_loop(call: Callable[[int], Awaitable[object]], concurrency: int,
                      seconds: float) -> tuple[float, list[float]]:
    """``concurrency`` clients calling back to back for ``seconds``: (requests/s, latencies)."""
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds
    counter = iter(range(10**9))

    async def client() -> None:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            await call(next(counter))
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(client())
    return len(latencies) / (time.perf_counter() - start), latencies


@dataclass
class Measured:
    """Pooled results of one configuration over all rounds."""

    sequential_s: list[float]
    loaded_s: list[float]
    rates: list[float]
    # Server CPU seconds per request and cores used, per closed-loop round (robust to a busy machine).
    cpu_ms_per_request: list[float] = field(default_factory=list)
    cores_used: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return statistics.median(self.rates) if self.rates else 0.0

    @property
    def cpu_ms(self) -> float:
        return statistics.median(self.cpu_ms_per_request) if self.cpu_ms_per_request else float("nan")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def interleaved(calls: dict[str, Callable[[int], Awaitable[object]]], *, rounds: int, requests: int,
                      seconds: float, concurrency: int, pids: dict[str, int] | None = None) -> dict[str, Measured]:
    """Measure every configuration in turn, ``rounds`` times, so machine noise hits all of them alike.

    Each round gives each configuration ``requests / rounds`` sequential calls and a closed loop of
    ``seconds / rounds``; the throughput reported is the median over rounds.
    """
    out = {name: Measured([], [], []) for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            out[name].sequential_s += await sequential(call, max(1, requests // rounds), warmup=5)
            pid = (pids or {}).get(name)
            cpu0, t0 = (process_cpu_s(pid), time.perf_counter()) if pid else (0.0, 0.0)
            rate, lat = await closed_loop(call, concurrency, seconds / rounds)
            if pid:
                used, wall = process_cpu_s(pid) - cpu0, time.perf_counter() - t0
                out[name].cpu_ms_per_request.append(used / max(1, len(lat)) * 1e3)
                out[name].cores_used.append(used / wall)
            out[name].loaded_s += lat
            out[name].rates.append(rate)
    return out


def machine() -> str:
    """One line describing the machine the numbers come from."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{platform.node()} | {cpu} | {os.cpu_count()} cores | Python {platform.python_version()} | "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


async def _serve(stage: str, options: dict, models: dict, models_dir: Path) -> None:
    from services.common import ServerSettings, StageServer, StageSettings

    module = importlib.import_module(f"services.{stage}")
    settings = StageSettings(name=stage, models_dir=models_dir, options=options, models=models)
    server = StageServer(module.create_stage(settings), ServerSettings(host="127.0.0.1", port=0, grace_s=2.0))
    await server.serve_until_signal(on_ready=lambda s: print(f"PORT {s.port}", flush=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve", required=True)
    parser.add_argument("--options", default="{}")
    parser.add_argument("--models", default="{}")
    parser.add_argument("--models-dir", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(_serve(args.serve, json.loads(args.options), json.loads(args.models), args.models_dir))


if __name__ == "__main__":
    main()
