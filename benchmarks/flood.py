"""Flood: clients that send audio much faster than real time, against the whole CPU stack.

Starts every stage (``voxpipe up``'s launcher, free ports). ``--streams`` Converse streams each send
``--audio-s`` seconds of real speech (the bundled clips, looped) in 100 ms messages as fast as gRPC lets them,
then half-close; each reads every event. Meanwhile the orchestrator's and ASR's RSS are sampled. Reported:
how each stream ended (status and message), how long its sends took against real time, the RSS peak and the
RSS after, whether a normal user is served right after the flood, and whether every stage stops by SIGTERM
within its grace period with exit 0 (a conversation task left pending would hold it).

    flock /tmp/voxpipe-bench.lock .venv/bin/python benchmarks/flood.py --streams 50 --audio-s 1200
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import sys
import time
import urllib.request
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.soak import WAVS, launch_on_free_ports, rss_mib, user  # noqa: E402
from clients.api import Conversation, load_audio  # noqa: E402


async def flooder(address: str, pcm: bytes, rate: int, audio_s: float) -> dict:
    """Send ``audio_s`` of looped speech as fast as the stream takes it; report how the stream ended."""
    step = rate // 10 * 2
    started = time.monotonic()
    sent_s = 0.0
    outcome = "OK"
    message = ""
    try:
        async with Conversation(address, sample_rate_hz=rate, interim_results=True) as conv:
            offset = 0
            while sent_s < audio_s:
                chunk = pcm[offset:offset + step] or pcm[:step]
                offset = offset + step if offset + step < len(pcm) else 0
                await conv.send_audio(chunk)
                sent_s += len(chunk) / 2 / rate
    except grpc.aio.AioRpcError as e:
        outcome, message = e.code().name, e.details() or ""
    except Exception as e:  # noqa: BLE001 — reported, not hidden
        outcome, message = type(e).__name__, str(e)
    return {"outcome": outcome, "message": message[:200], "sent_s": round(sent_s, 1),
            "wall_s": round(time.monotonic() - started, 1)}


def loop_tasks(settings, stage: str) -> int:
    """The stage process's ``voxpipe_event_loop_tasks`` (from its metrics endpoint)."""
    own = settings.stage(stage).server
    with urllib.request.urlopen(f"http://{own.host}:{own.metrics_port}/metrics", timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith("voxpipe_event_loop_tasks "):
                return int(float(line.split()[1]))
    return -1


async def main(args: argparse.Namespace) -> dict:
    from services.launcher import shutdown

    limit = {"VOXPIPE_ASR__MAX_AUDIO_S": str(args.max_audio_s)} if args.max_audio_s else {}
    stack, settings, procs, address = await launch_on_free_ports(metrics=True, **limit)
    pcm, rate = load_audio(WAVS[0])
    watched = ("orchestrator", "asr")
    peak: dict[str, float] = collections.defaultdict(float)
    try:
        await user(address, [load_audio(p) for p in WAVS], 0, time.monotonic() + 0.1, 0, [], [])  # warm-up
        before = {**{k: round(rss_mib(procs[k].pid), 1) for k in watched},
                  **{f"{k}_tasks": loop_tasks(settings, k) for k in watched}}
        stop = asyncio.Event()

        async def sample() -> None:
            while not stop.is_set():
                for k in watched:
                    if procs[k].returncode is None:
                        peak[k] = max(peak[k], rss_mib(procs[k].pid))
                await asyncio.sleep(0.2)

        sampler = asyncio.create_task(sample())
        started = time.monotonic()
        after_round: list[dict[str, float]] = []
        for _ in range(args.rounds):
            streams = await asyncio.gather(*(flooder(address, pcm, rate, args.audio_s) for _ in range(args.streams)))
            await asyncio.sleep(5)
            after_round.append({**{k: round(rss_mib(procs[k].pid), 1) for k in watched},
                                **{f"{k}_tasks": loop_tasks(settings, k) for k in watched}})
        flood_s = time.monotonic() - started
        stop.set()
        await sampler
        after = after_round[-1]
        turns: list[dict] = []
        errors: list[str] = []
        await user(address, [load_audio(p) for p in WAVS], 1, time.monotonic() + 4.0, 0, turns, errors)  # one turn
        served_after = bool(turns) and not errors and not any(t["errors"] for t in turns)
        after_errors = errors + [e for t in turns for e in t["errors"]]
        exited = [k for k, p in procs.items() if p.returncode is not None]
    finally:
        stopped = time.monotonic()
        await shutdown(stack)
        stop_s = time.monotonic() - stopped
    outcomes = collections.Counter(s["outcome"] for s in streams)
    return {"streams": args.streams, "audio_s": args.audio_s, "max_audio_s": args.max_audio_s or 600.0,
            "flood_wall_s": round(flood_s, 1), "outcomes": dict(outcomes),
            "messages": sorted({f"{s['outcome']}: {s['message']}" for s in streams})[:8],
            "sent_s_median": sorted(s["sent_s"] for s in streams)[len(streams) // 2],
            "wall_s_median": sorted(s["wall_s"] for s in streams)[len(streams) // 2],
            "rss_mib_before": before, "rss_mib_peak": {k: round(v, 1) for k, v in peak.items()},
            "rss_mib_after": after, "rss_mib_after_each_round": after_round, "rounds": args.rounds, "served_after": served_after, "errors_after": after_errors[:4], "processes_exited_during": exited,
            "exit_codes": {k: p.returncode for k, p in procs.items()}, "shutdown_s": round(stop_s, 1),
            "cores": os.cpu_count()}


def report(result: dict) -> str:
    return "\n".join([
        f"flood: {result['rounds']} x {result['streams']} streams x {result['audio_s']:g} s of audio sent as fast as accepted "
        f"(max_audio_s={result['max_audio_s']:g}) on {result['cores']} cores, {result['flood_wall_s']} s",
        f"  outcomes: {result['outcomes']}; median sent {result['sent_s_median']} s of audio in "
        f"{result['wall_s_median']} s",
        *(f"    {m}" for m in result["messages"]),
        f"  RSS MiB (and loop tasks) before {result['rss_mib_before']}  peak {result['rss_mib_peak']}  after each of "
        f"{result['rounds']} rounds {result['rss_mib_after_each_round']}",
        f"  a normal user served right after: {result['served_after']} {result['errors_after'] or ''}; "
        "stages exited during: "
        f"{result['processes_exited_during'] or 'none'}",
        f"  SIGTERM: stopped in {result['shutdown_s']} s, exit codes {result['exit_codes']}",
    ])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--audio-s", type=float, default=1200.0, help="audio each stream tries to send")
    parser.add_argument("--max-audio-s", type=float, default=0.0, help="the ASR's max_audio_s (0: the default)")
    parser.add_argument("--rounds", type=int, default=1, help="floods one after another (outcomes: the last)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = asyncio.run(main(args))
    print(report(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
