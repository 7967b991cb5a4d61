"""``voxpipe bench``: N concurrent real-time conversations against the running stack.

Each stream loops over a folder of WAVs for the given duration, one turn per file. Prints p50/p95/p99
per stage and voice-to-voice, throughput, budget-miss and degradation rates; writes JSON and a PNG plot
(latency CDF per stage).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from clients.api import Conversation, TurnResult, load_audio, stream_audio
from services.common.settings import StackSettings


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    address: str
    wavs: tuple[Path, ...]
    streams: int
    duration_s: float
    realtime: bool
    json_path: Path | None
    plot_path: Path | None
    budget_ms: int


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``bench`` to the CLI."""
    p = sub.add_parser("bench", help="N concurrent real-time conversations: latency percentiles per stage",
                       description=__doc__)
    p.add_argument("wav_dir", type=Path, nargs="?", help="folder of WAV files (default: the bundled question)")
    p.add_argument("-n", "--streams", type=int, default=1, help="concurrent conversations (default: 1)")
    p.add_argument("-d", "--duration-s", type=float, default=30.0, help="how long to run (default: 30)")
    p.add_argument("--address", help="orchestrator address (default: from the configuration)")
    p.add_argument("--fast", action="store_true", help="send audio as fast as possible instead of real time")
    p.add_argument("--json", type=Path, dest="json_path", help="write all turns and the summary as JSON")
    p.add_argument("--plot", type=Path, dest="plot_path", help="write a latency CDF per stage as PNG")
    p.add_argument("--budget-ms", type=int, default=0, help="turn budget (0 = server default)")
    p.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace, settings: StackSettings) -> int:
    from clients.talk import BUNDLED_QUESTION

    wavs = tuple(sorted(args.wav_dir.glob("*.wav"))) if args.wav_dir else (BUNDLED_QUESTION,)
    if not wavs:
        print(f"voxpipe bench: no .wav files in {args.wav_dir}", file=sys.stderr)
        return 2
    if args.streams < 1:
        print(f"voxpipe bench: --streams={args.streams} must be >= 1", file=sys.stderr)
        return 2
    options = BenchOptions(address=args.address or settings.stage("orchestrator").server.address, wavs=wavs,
                           streams=args.streams, duration_s=args.duration_s, realtime=not args.fast,
                           json_path=args.json_path, plot_path=args.plot_path, budget_ms=args.budget_ms)
    summary = asyncio.run(bench(options))
    print(format_summary(summary))
    return 0 if summary["turns"] else 1


async def _stream(options: BenchOptions, clips: list[tuple[bytes, int]], index: int, stop_at: float,
                  turns: list[TurnResult], errors: list[str], progress) -> None:
    i = index
    while time.monotonic() < stop_at:
        pcm, rate = clips[i % len(clips)]
        i += 1
        try:
            async with Conversation(options.address, sample_rate_hz=rate, budget_ms=options.budget_ms,
                                    interim_results=False) as conv:
                await stream_audio(conv, pcm, rate, realtime=options.realtime)
                await conv.close()
                got = conv.completed_turns()
        except Exception as e:  # one failed conversation is a data point, not the end of the benchmark
            detail = e.details() if isinstance(e, grpc.aio.AioRpcError) else str(e)
            errors.append(f"{type(e).__name__}: {detail}")
            continue
        turns.extend(got)
        progress.update(len(got))


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "n": 0}
    arr = np.asarray(values)
    return {"p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)),
            "p99": float(np.percentile(arr, 99)), "n": len(values)}


async def bench(options: BenchOptions) -> dict:
    """Run the benchmark; returns the summary (also written as JSON / PNG when asked)."""
    from tqdm import tqdm

    clips = [await asyncio.to_thread(load_audio, p) for p in options.wavs]
    turns: list[TurnResult] = []
    errors: list[str] = []
    start = time.monotonic()
    with tqdm(desc=f"{options.streams} stream(s)", unit="turn", file=sys.stderr) as progress:
        async with asyncio.TaskGroup() as tg:
            for s in range(options.streams):
                tg.create_task(_stream(options, clips, s, start + options.duration_s, turns, errors, progress))
    elapsed = time.monotonic() - start
    stage_ms: dict[str, list[float]] = defaultdict(list)
    misses: dict[str, int] = defaultdict(int)
    degraded: dict[str, int] = defaultdict(int)
    reported = [t for t in turns if t.report is not None and not t.report.cancelled]
    hop_ms: dict[str, list[float]] = defaultdict(list)
    for t in reported:
        for s in t.report.stages:
            stage_ms[s.stage].append(s.ms)
            if s.server_ms:
                hop_ms[s.stage].append(s.ms - s.server_ms)
            misses[s.stage] += s.missed
            degraded[s.stage] += s.degraded
    summary = {
        "streams": options.streams, "duration_s": round(elapsed, 1), "turns": len(reported),
        "turns_per_s": len(reported) / elapsed if elapsed else 0.0, "errors": errors[:20], "error_count": len(errors),
        "voice_to_voice_ms": percentiles([t.report.voice_to_voice_ms for t in reported if t.report.voice_to_voice_ms]),
        "client_voice_to_voice_ms": percentiles([t.client_voice_to_voice_ms for t in reported if t.client_voice_to_voice_ms]),
        "endpoint_wait_ms": percentiles([t.report.endpoint_wait_ms for t in reported]),
        "orchestration_ms": percentiles([t.report.orchestration_ms for t in reported if t.report.voice_to_voice_ms]),
        "overhead_ms": percentiles([t.report.overhead_ms for t in reported if t.report.voice_to_voice_ms]),
        "hop_ms": {k: percentiles(v) for k, v in hop_ms.items()},
        "stages_ms": {k: percentiles(v) for k, v in stage_ms.items()},
        "budget_miss_rate": {k: misses[k] / len(reported) for k in stage_ms} | {
            "turn": sum(t.report.missed for t in reported) / len(reported) if reported else 0.0},
        "degradation_rate": {k: degraded[k] / len(reported) for k in stage_ms},
    }
    if options.json_path:
        await asyncio.to_thread(_write_json, options.json_path,
                                {"summary": summary, "turns": [t.to_json() for t in turns]})
    if options.plot_path:
        await asyncio.to_thread(plot_cdf, stage_ms | {"voice-to-voice": [t.report.voice_to_voice_ms for t in reported]},
                                options.plot_path, f"voxpipe bench: {options.streams} stream(s), {len(reported)} turns")
    return summary


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def plot_cdf(series: dict[str, list[float]], path: Path, title: str) -> None:
    """Latency CDF per stage as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, values in series.items():
        if values:
            v = np.sort(np.asarray(values))
            ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=name)
    ax.set_xlabel("milliseconds")
    ax.set_ylabel("fraction of turns")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def format_summary(summary: dict) -> str:
    """The benchmark's table."""
    def fmt(p: dict) -> str:
        return "  ".join(f"{k} {p[k]:7.1f}" if p[k] is not None else f"{k}       -" for k in ("p50", "p95", "p99"))

    lines = [f"{summary['streams']} stream(s), {summary['turns']} turns in {summary['duration_s']} s "
             f"({summary['turns_per_s']:.2f} turns/s), {summary['error_count']} failed conversations"]
    for stage, p in summary["stages_ms"].items():
        lines.append(f"  {stage:<22} {fmt(p)}  miss {summary['budget_miss_rate'][stage]:5.1%}  "
                     f"degraded {summary['degradation_rate'][stage]:5.1%}")
    lines.append(f"  {'voice-to-voice (server)':<22} {fmt(summary['voice_to_voice_ms'])}")
    lines.append(f"  {'voice-to-voice (client)':<22} {fmt(summary['client_voice_to_voice_ms'])}")
    lines.append(f"  {'endpoint wait':<22} {fmt(summary['endpoint_wait_ms'])}")
    lines.append(f"  {'overhead (own + hops)':<22} {fmt(summary['overhead_ms'])}")
    lines.append(f"  {'  orchestrator own time':<22} {fmt(summary['orchestration_ms'])}")
    for stage, p in summary["hop_ms"].items():
        lines.append(f"  {'  hop to ' + stage:<22} {fmt(p)}")
    lines.append(f"  turn budget missed: {summary['budget_miss_rate']['turn']:.1%}")
    return "\n".join(lines)
