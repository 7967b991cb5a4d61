"""Overload: the whole CPU stack at a steady load, then at 3x, then back, in one run per admission setting.

Starts every stage (``voxpipe up``'s launcher, free ports) with ``[orchestrator] max_concurrent_turns`` set to
each value of ``--max-turns``, and runs three phases of ``--phase-s`` seconds of ``voxpipe bench``'s simulated
users (speak in real time, listen to the whole reply, think 1-3 s): ``--users`` (about 70 % of the VM's
capacity: the soak's load), ``3 x --users``, then ``--users`` again. Per phase: turns answered, turns refused
(RESOURCE_EXHAUSTED), other errors, degraded turns, voice-to-voice p50/p99 of answered turns, and every
stage process's peak RSS.

    flock /tmp/voxpipe-bench.lock .venv/bin/python benchmarks/overload.py --users 4 --max-turns 16,4 \\
        --out docs/bench/overload.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.soak import WAVS, launch_on_free_ports, rss_mib, user  # noqa: E402
from clients.api import load_audio  # noqa: E402


async def phase(address: str, clips, users: int, seconds: float, procs: dict) -> dict:
    turns: list[dict] = []
    errors: list[str] = []
    peak: dict[str, float] = {}
    stop_at = time.monotonic() + seconds

    async def sample() -> None:
        while time.monotonic() < stop_at + 5:
            for k, p in procs.items():
                if p.returncode is None:
                    peak[k] = max(peak.get(k, 0.0), rss_mib(p.pid))
            await asyncio.sleep(0.5)

    await asyncio.gather(sample(), *(user(address, clips, i + 1, stop_at, 0, turns, errors) for i in range(users)))
    answered = [t for t in turns if not t["errors"] and t["v2v"]]
    refused = [t for t in turns if "RESOURCE_EXHAUSTED" in t["errors"]]
    v2v = [t["v2v"] for t in answered]
    streams_refused = [e for e in errors if "max_streams" in e]
    return {"users": users, "turns": len(turns), "answered": len(answered), "refused": len(refused),
            "streams_refused": len(streams_refused),
            "other_errors": sorted({e for t in turns for e in t["errors"] if e != "RESOURCE_EXHAUSTED"})
            + [e for e in errors if e not in streams_refused][:5],
            "v2v_p50_ms": round(float(np.percentile(v2v, 50)), 1) if v2v else None,
            "v2v_p99_ms": round(float(np.percentile(v2v, 99)), 1) if v2v else None,
            "rss_mib_peak": {k: round(v, 1) for k, v in peak.items()}}


async def run(max_turns: int, args: argparse.Namespace) -> dict:
    """One stack with ``max_concurrent_turns=max_turns`` (and ``--max-streams``), through the three phases."""
    from services.launcher import shutdown

    admission = {"VOXPIPE_ORCHESTRATOR__MAX_CONCURRENT_TURNS": str(max_turns)}
    if args.max_streams:
        admission["VOXPIPE_ORCHESTRATOR__MAX_STREAMS"] = str(args.max_streams)
    stack, _, procs, address = await launch_on_free_ports(**admission)
    clips = [load_audio(p) for p in WAVS]
    try:
        await user(address, clips, 0, time.monotonic() + 0.1, 0, [], [])  # warm-up
        phases = []
        for users in (args.users, 3 * args.users, args.users):
            phases.append(await phase(address, clips, users, args.phase_s, procs))
        exited = [k for k, p in procs.items() if p.returncode is not None]
    finally:
        await shutdown(stack)
    return {"max_concurrent_turns": max_turns, "max_streams": args.max_streams or 64, "phases": phases,
            "processes_exited": exited}


def report(results: list[dict], args: argparse.Namespace) -> str:
    lines = [f"overload on {os.cpu_count()} cores: {args.users} users, then {3 * args.users}, then {args.users}; "
             f"{args.phase_s:g} s each"]
    for r in results:
        lines.append(f"max_concurrent_turns={r['max_concurrent_turns']} max_streams={r['max_streams']} "
                     f"(stage exits: {r['processes_exited'] or 'none'})")
        for name, p in zip(("steady", "3x", "recovered"), r["phases"], strict=True):
            lines.append(f"  {name:>9} {p['users']:>3} users: {p['turns']:>4} turns, {p['answered']:>4} answered "
                         f"(v2v p50 {p['v2v_p50_ms']} / p99 {p['v2v_p99_ms']} ms), {p['refused']:>3} turns and "
                         f"{p['streams_refused']} conversations refused, "
                         f"other errors {p['other_errors'] or 'none'}; peak RSS MiB {p['rss_mib_peak']}")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=4, help="the steady load (the soak's)")
    parser.add_argument("--phase-s", type=float, default=60.0)
    parser.add_argument("--max-turns", default="16,4", help="max_concurrent_turns values to compare")
    parser.add_argument("--max-streams", type=int, default=0, help="[orchestrator] max_streams (0: default 64)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = [asyncio.run(run(int(m), args)) for m in args.max_turns.split(",")]
    print(report(results, args))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
