"""Speculative turns (issue 20), speculation off vs on in the same run, on the e2e benchmark's questions.

For each mode (``[orchestrator] speculation`` false, then true; ``--pairs`` times, alternating) the stack is
started like ``voxpipe up`` on free ports and driven by ``voxpipe bench``: 1 real-time stream, then 4.
Reported per mode (medians over pairs): voice-to-voice p50 and its part after the endpoint (per turn,
voice-to-voice minus the endpoint wait), the endpoint wait, 4-stream p50/p99, the share of turns that
committed a speculation and the latency it hid; and, turn by turn, whether the 1-stream answers (transcript,
intent, movies, reply) are identical with speculation on and off (the same questions in the same order in one
session, so what the session has seen matters too).

    python -m benchmarks.speculation_bench [--seconds 45] [--pairs 1] [--silence-ms 300 800] [--json FILE]

Each endpoint setting (``VOXPIPE_ASR__SILENCE_MS``) is run off and on; each question is followed by that
silence plus 500 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from benchmarks.e2e_bench import make_wavs
from clients.bench import BenchOptions, bench_levels
from services.common import settings as stack_settings

ROOT = Path(__file__).resolve().parents[1]


@contextlib.asynccontextmanager
async def launched_stack(**options: str) -> AsyncIterator[str]:
    """The stack started like ``voxpipe up`` on free ports (``soak.launch_on_free_ports``), with ``options`` as
    ``VOXPIPE_*`` settings (e.g. ``ASR__SILENCE_MS="300"``); yields the orchestrator's address."""
    from benchmarks.soak import launch_on_free_ports
    from services.launcher import shutdown

    stack, _, _, address = await launch_on_free_ports(**{f"VOXPIPE_{k}": v for k, v in options.items()})
    try:
        yield address
    finally:
        await shutdown(stack)


async def one_mode(wavs: tuple[Path, ...], speculation: bool, silence_ms: int, seconds: float, work: Path) -> dict:
    """The stack with speculation on or off and the endpoint after ``silence_ms``: 1 then 4 real-time streams;
    summaries and turns."""
    async with launched_stack(ORCHESTRATOR__SPECULATION=str(speculation).lower(),
                              ASR__SILENCE_MS=str(silence_ms)) as address:
        # Warm-up conversation (first-call costs of every stage), not measured.
        await bench_levels(BenchOptions(address=address, wavs=wavs[:1], streams=1, duration_s=0.1, realtime=False,
                                        json_path=None, plot_path=None, budget_ms=0), [1])
        out = {}
        for streams in (1, 4):
            path = work / f"{'on' if speculation else 'off'}-{silence_ms}-{streams}.json"
            (summary,) = await bench_levels(BenchOptions(address=address, wavs=wavs, streams=streams,
                                                         duration_s=seconds, realtime=True, json_path=path,
                                                         plot_path=None, budget_ms=0,
                                                         trailing_silence_ms=silence_ms + 500), [streams])
            out[str(streams)] = {"summary": summary, "turns": json.loads(path.read_text())["turns"]}  # JSON keys
        return out


def _after_endpoint(turns: list[dict]) -> list[float]:
    return [t["voice_to_voice_ms"] - t["endpoint_wait_ms"] for t in turns
            if t["report"] is not None and not t["cancelled"] and t["voice_to_voice_ms"]]


def _answer(turn: dict) -> tuple:
    return (turn["transcript"], turn["intent"], tuple(i["item_id"] for i in turn["items"]), turn["reply_text"])


def _degraded(turn: dict) -> bool:
    return any(s["degraded"] for s in turn["report"] or ())


def compare(off: list[dict], on: list[dict]) -> dict:
    """Turn-by-turn answers of the 1-stream runs: identical on committed turns. A turn the budget policy
    degraded in either run (another answer by design: popularity list, one sentence) is counted apart."""
    pairs = list(zip(off, on, strict=False))
    degraded = [(a, b) for a, b in pairs if _degraded(a) or _degraded(b)]
    committed = [(a, b) for a, b in pairs if b.get("speculative") and (a, b) not in degraded]
    differ = [(_answer(a), _answer(b)) for a, b in committed if _answer(a) != _answer(b)]
    return {"turns_compared": len(pairs), "degraded_in_either": len(degraded), "committed_compared": len(committed),
            "committed_differ": len(differ), "examples": differ[:3]}


def summarise(runs: dict[str, list[dict]]) -> dict:
    """One endpoint setting's runs ({"off": [...], "on": [...]}, one entry per pair) in medians."""
    out = {}
    for mode, pairs in runs.items():
        one = [p["1"] for p in pairs]
        four = [p["4"] for p in pairs]
        turns1 = [t for r in one for t in r["turns"] if t["report"] is not None and not t["cancelled"]]
        out[mode] = {
            "v2v_p50_ms": statistics.median(r["summary"]["voice_to_voice_ms"]["p50"] for r in one),
            "after_endpoint_p50_ms": statistics.median(_after_endpoint(turns1)),
            "endpoint_wait_p50_ms": statistics.median(r["summary"]["endpoint_wait_ms"]["p50"] for r in one),
            "turns_1": len(turns1),
            "committed_1": sum(bool(t.get("speculative")) for t in turns1),
            "hidden_p50_ms": statistics.median([t["hidden_ms"] for t in turns1 if t.get("speculative")] or [0.0]),
            "v2v4_p50_ms": statistics.median(r["summary"]["voice_to_voice_ms"]["p50"] for r in four),
            "v2v4_p99_ms": statistics.median(r["summary"]["voice_to_voice_ms"]["p99"] for r in four),
            "committed_4": sum(r["summary"].get("speculative_turns", 0) for r in four),
            "turns_4": sum(r["summary"]["turns"] for r in four),
            "failed": sum(r["summary"]["failed_turns"] for r in one + four),
        }
    answers = [compare(off["1"]["turns"], on["1"]["turns"]) for off, on in zip(runs["off"], runs["on"], strict=True)]
    out["answers"] = {k: sum(a[k] for a in answers) if k != "examples" else [e for a in answers for e in a[k]][:3]
                      for k in answers[0]}
    return out


def report(silence_ms: int, s: dict) -> str:
    off, on = s["off"], s["on"]
    rows = [
        ("voice-to-voice p50, 1 stream", "v2v_p50_ms"), ("  of it after the endpoint (per turn, p50)", "after_endpoint_p50_ms"),
        ("  endpoint wait p50", "endpoint_wait_p50_ms"), ("speculation hid (p50, committed turns)", "hidden_p50_ms"),
        ("voice-to-voice p50, 4 streams", "v2v4_p50_ms"), ("voice-to-voice p99, 4 streams", "v2v4_p99_ms"),
    ]
    lines = [f"endpoint after {silence_ms} ms of silence", f"{'':<44} {'off':>8} {'on':>8}  on/off"]
    for label, key in rows:
        ratio = f"{on[key] / off[key]:.2f}x" if off[key] else "-"
        lines.append(f"{label:<44} {off[key]:8.1f} {on[key]:8.1f}  {ratio}")
    lines.append(f"committed speculations: 1 stream {on['committed_1']}/{on['turns_1']} "
                 f"({on['committed_1'] / max(on['turns_1'], 1):.0%}), 4 streams {on['committed_4']}/{on['turns_4']}")
    a = s["answers"]
    lines.append(f"answers, 1 stream, turn by turn: {a['committed_differ']} of {a['committed_compared']} committed turns "
                 f"differ from speculation off ({a['degraded_in_either']} of {a['turns_compared']} turns degraded by the "
                 "budget policy in either run, left out)")
    lines.append(f"failed turns: off {off['failed']}, on {on['failed']}")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict:
    settings = stack_settings.from_env(os.environ)
    runs: dict[int, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        wavs = tuple(await make_wavs(settings.models_dir, work, settings.device))
        for silence_ms in args.silence_ms:
            runs[silence_ms] = {"off": [], "on": []}
            for _ in range(args.pairs):
                for mode in ("off", "on"):
                    runs[silence_ms][mode].append(await one_mode(wavs, mode == "on", silence_ms, args.seconds, work))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=45.0, help="per stack run and concurrency")
    parser.add_argument("--pairs", type=int, default=1, help="off/on pairs per endpoint setting, alternating")
    parser.add_argument("--silence-ms", type=int, nargs="+", default=[300, 800],
                        help="endpoint silences to run (the ASR default is 300)")
    parser.add_argument("--json", type=Path, help="also write the summaries and every turn here")
    args = parser.parse_args()
    started = time.time()
    runs = asyncio.run(main_async(args))
    summaries = {silence_ms: summarise(r) for silence_ms, r in runs.items()}
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}; machine: {platform.node()}, "
          f"{os.cpu_count()} cores; {args.pairs} pair(s) of {args.seconds:g} s runs per concurrency")
    for silence_ms, summary in summaries.items():
        print(report(silence_ms, summary))
    if args.json:
        args.json.write_text(json.dumps({"summaries": summaries, "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
