"""The load of ``voxpipe bench``: simulated users talking to the stack, in one or several client processes.

A **user** holds one ``Converse`` stream and talks turn after turn: it streams a real spoken question at
real-time pace (then trailing silence, as a live speaker's pause), waits for the turn's report, listens to
the whole reply (its audio duration, counted from the first audio byte) and thinks 1–3 s before the next
question. Users start spread evenly over ``ramp_s``, and turns asked during the ramp are kept apart as
warm-up (``asked_s``, seconds from the start, is recorded with each turn): hundreds of users starting at
once would measure a thundering herd, not a steady load. With
``listen=False`` a user instead opens a new conversation per question and asks again at once (the
back-to-back loop: the most load per stream, no idle time).

Users are spread over ``processes`` client processes (each with its own event loop and channels) so the
client is not the bottleneck; each process reports its own CPU time. Turns come back as the documented
JSON form (:meth:`clients.api.TurnResult.to_json`) plus ``user`` and ``asked_s``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import resource
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc

from clients.api import Conversation, load_audio, stream_audio

TURN_TIMEOUT_S = 30.0  # a turn not reported within this after its question ends counts as failed


@dataclass(frozen=True, kw_only=True)
class LoadOptions:
    """What the users do. ``addresses``: the orchestrator's processes; user i talks to ``addresses[i % n]``."""

    addresses: tuple[str, ...]
    wavs: tuple[Path, ...]
    users: int
    duration_s: float
    realtime: bool = True
    listen: bool = True
    think_s: tuple[float, float] = (1.0, 3.0)
    interim_results: bool = False
    chunk_ms: int = 20
    trailing_silence_ms: int = 600  # after each question (the endpoint must fit in it)
    budget_ms: int = 0
    processes: int = 1
    ramp_s: float = 10.0  # listening users start spread over this; their turns asked before it ends are warm-up
    seed: int = 0


@dataclass
class LoadResult:
    """Every turn (``TurnResult.to_json`` form), conversations that failed, and the client's CPU use."""

    turns: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: list[float] = field(default_factory=list)  # per client process


def _failure(e: BaseException) -> str:
    detail = e.details() if isinstance(e, grpc.aio.AioRpcError) else str(e)
    return f"{type(e).__name__}: {detail}"


async def _listening_user(options: LoadOptions, clips: list[tuple[bytes, int]], index: int, start: float,
                          stop_at: float, result: LoadResult, rng: random.Random) -> None:
    await asyncio.sleep(options.ramp_s * index / max(1, options.users) + rng.uniform(0.0, 0.1))
    pcm, rate = clips[index % len(clips)]
    address = options.addresses[index % len(options.addresses)]
    turn_no = index
    try:
        async with Conversation(address, sample_rate_hz=rate, budget_ms=options.budget_ms,
                                interim_results=options.interim_results) as conv:
            while time.monotonic() < stop_at:
                pcm, clip_rate = clips[turn_no % len(clips)]
                turn_no += 1
                if clip_rate != rate:
                    continue  # one stream has one sample rate
                asked_s = time.monotonic() - start
                await stream_audio(conv, pcm, rate, realtime=options.realtime, chunk_ms=options.chunk_ms,
                                   trailing_silence_ms=options.trailing_silence_ms)
                turn = await conv.next_turn(timeout_s=TURN_TIMEOUT_S)
                entry = turn.to_json() | {"asked_s": round(asked_s, 3), "user": index}
                result.turns.append(entry)
                if not entry["audio_s"] or turn.first_audio_s is None:
                    continue  # no reply to listen to: ask again after thinking
                heard_s = time.monotonic() - turn.first_audio_s
                await asyncio.sleep(max(0.0, entry["audio_s"] - heard_s) + rng.uniform(*options.think_s))
    except Exception as e:  # a failed conversation is a data point, not the end of the benchmark
        result.errors.append(_failure(e))


async def _back_to_back_user(options: LoadOptions, clips: list[tuple[bytes, int]], index: int, start: float,
                             stop_at: float, result: LoadResult) -> None:
    i = index
    while time.monotonic() < stop_at:
        pcm, rate = clips[i % len(clips)]
        address = options.addresses[i % len(options.addresses)]
        i += 1
        asked_s = time.monotonic() - start
        try:
            async with Conversation(address, sample_rate_hz=rate, budget_ms=options.budget_ms,
                                    interim_results=options.interim_results) as conv:
                await stream_audio(conv, pcm, rate, realtime=options.realtime, chunk_ms=options.chunk_ms,
                                   trailing_silence_ms=options.trailing_silence_ms)
                await conv.close()
                result.turns.extend(t.to_json() | {"asked_s": round(asked_s, 3), "user": index}
                                    for t in conv.completed_turns())
        except Exception as e:
            result.errors.append(_failure(e))


async def run_users(options: LoadOptions, user_ids: range, progress=None) -> LoadResult:
    """Run the users ``user_ids`` in this process for the ramp and ``options.duration_s`` (plus the last
    turns' tails)."""
    clips = [await asyncio.to_thread(load_audio, p) for p in options.wavs]
    result = LoadResult()
    cpu0, start = _cpu_s(), time.monotonic()
    stop_at = start + (options.ramp_s if options.listen else 0.0) + options.duration_s
    async with asyncio.TaskGroup() as tg:
        for i in user_ids:
            if options.listen:
                rng = random.Random(options.seed * 100_003 + i)
                tg.create_task(_listening_user(options, clips, i, start, stop_at, result, rng))
            else:
                tg.create_task(_back_to_back_user(options, clips, i, start, stop_at, result))
        if progress is not None:
            tg.create_task(_report_progress(result, stop_at, progress))
    result.wall_s = time.monotonic() - start
    result.cpu_s = [_cpu_s() - cpu0]
    return result


async def _report_progress(result: LoadResult, stop_at: float, progress) -> None:
    seen = 0
    while time.monotonic() < stop_at:
        await asyncio.sleep(0.5)
        progress.update(len(result.turns) - seen)
        seen = len(result.turns)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _worker(options: LoadOptions, user_ids: range, out: multiprocessing.Queue) -> None:
    try:
        result = asyncio.run(run_users(options, user_ids))
    except BaseException as e:  # the parent must hear of it, not wait forever
        result = LoadResult(errors=[f"client process failed: {_failure(e)}"])
    out.put(result)


async def run_load(options: LoadOptions, progress=None) -> LoadResult:
    """All users, in ``options.processes`` client processes (in this one when 1)."""
    if options.processes <= 1:
        return await run_users(options, range(options.users), progress)
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()
    shares = [range(p, options.users, options.processes) for p in range(options.processes)]
    workers = [ctx.Process(target=_worker, args=(replace(options, processes=1), share, out), daemon=True)
               for share in shares if len(share)]
    start = time.monotonic()
    for w in workers:
        w.start()
    merged = LoadResult()
    for _ in workers:
        part: LoadResult = await asyncio.to_thread(out.get)
        merged.turns.extend(part.turns)
        merged.errors.extend(part.errors)
        merged.cpu_s.extend(part.cpu_s)
        if progress is not None:
            progress.update(len(part.turns))
    for w in workers:
        await asyncio.to_thread(w.join)
    merged.wall_s = time.monotonic() - start
    return merged


class GpuSampler:
    """Samples every GPU's utilisation, memory and power with ``nvidia-smi`` in the background."""

    QUERY = "utilization.gpu,memory.used,power.draw"

    def __init__(self, interval_ms: int = 200) -> None:
        self.samples: list[tuple[float, list[tuple[float, float, float]]]] = []  # (monotonic s, per-GPU rows)
        self._interval_ms = interval_ms
        self._process: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("nvidia-smi") is not None

    def start(self) -> None:
        self._process = subprocess.Popen(
            ["nvidia-smi", f"--query-gpu={self.QUERY}", "--format=csv,noheader,nounits", f"-lms={self._interval_ms}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, name="gpu-sampler", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        rows: list[tuple[float, float, float]] = []
        last = None
        for line in self._process.stdout:
            try:
                util, mem, power = (float(v) for v in line.split(","))
            except ValueError:
                continue  # "[N/A]" or a header
            now = time.monotonic()
            if last is not None and now - last > self._interval_ms / 2e3:  # a new sampling round
                self.samples.append((last, rows))
                rows = []
            rows.append((util, mem, power))
            last = now
        if rows and last is not None:
            self.samples.append((last, rows))

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def window(self, start_s: float, end_s: float) -> dict | None:
        """Mean and max utilisation (%), max memory (MiB), mean power (W) and energy (J) between two times."""
        rounds = [(t, rows) for t, rows in self.samples if start_s <= t <= end_s]
        if len(rounds) < 2:
            return None
        utils = [sum(r[0] for r in rows) / len(rows) for _, rows in rounds]
        powers = [sum(r[2] for r in rows) for _, rows in rounds]  # all GPUs together
        energy = sum((t1 - t0) * (p0 + p1) / 2 for (t0, _), (t1, _), p0, p1
                     in zip(rounds, rounds[1:], powers, powers[1:], strict=False))
        return {"util_mean_pct": sum(utils) / len(utils), "util_max_pct": max(utils),
                "memory_max_mib": max(sum(r[1] for r in rows) for _, rows in rounds),
                "power_mean_w": sum(powers) / len(powers), "energy_j": energy,
                "seconds": rounds[-1][0] - rounds[0][0]}
