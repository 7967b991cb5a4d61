"""``voxpipe bench``: concurrent real-time conversations against the running stack.

Each simulated user holds a conversation turn after turn: it streams a spoken question at real-time pace,
waits for the answer, listens to the whole reply and thinks 1–3 s before asking again (``--back-to-back``:
a new conversation per question, asked again at once). ``-n 64,128,256`` runs each concurrency in turn;
``--processes`` spreads the users over client processes. Prints per concurrency: voice-to-voice p50/p95/p99
(last voiced sample sent → first reply audio received, endpoint wait included, client-side; and as the
server reports it), each stage's percentiles from the turn reports, failed and degraded turns, the client's
own CPU use, and, where ``nvidia-smi`` exists, GPU utilisation, memory, power and turns per joule. Writes
JSON and a PNG plot (the latency CDF per stage; latency vs concurrency for several levels).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from clients.load import GpuSampler, LoadOptions, LoadResult, run_load
from services.common.settings import StackSettings, split_addresses


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    address: str  # the orchestrator; "host:p1,host:p2" for several processes (users take them in turn)
    wavs: tuple[Path, ...]
    streams: int
    duration_s: float
    realtime: bool
    json_path: Path | None
    plot_path: Path | None
    budget_ms: int
    listen: bool = False
    think_s: tuple[float, float] = (1.0, 3.0)
    interim_results: bool = False
    chunk_ms: int = 20
    trailing_silence_ms: int = 600
    processes: int = 1
    ramp_s: float = 10.0  # listening users start spread over this; turns asked in it are warm-up, not measured
    asr_metrics: tuple[str, ...] = ()  # http://host:port/metrics of each ASR process (interim counts)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``bench`` to the CLI."""
    p = sub.add_parser("bench", help="N concurrent real-time conversations: latency percentiles per stage",
                       description=__doc__)
    p.add_argument("wav_dir", type=Path, nargs="?", help="folder of WAV files (default: the bundled question)")
    p.add_argument("-n", "--streams", default="1",
                   help="concurrent conversations; a comma list runs each in turn, e.g. 64,128,256 (default: 1)")
    p.add_argument("-d", "--duration-s", type=float, default=30.0, help="how long each concurrency runs (default: 30)")
    p.add_argument("--address", help="orchestrator address(es), comma-separated (default: from the configuration)")
    p.add_argument("--fast", action="store_true", help="send audio as fast as possible instead of real time")
    p.add_argument("--back-to-back", action="store_true",
                   help="a new conversation per question, asked again at once (no listening or thinking)")
    p.add_argument("--think-s", default="1,3", help="a user's pause after the reply ends: MIN,MAX seconds (default: 1,3)")
    p.add_argument("--interims", action="store_true", help="ask for interim transcripts (as a live captioning client)")
    p.add_argument("--chunk-ms", type=int, default=20, help="audio per message (default: 20)")
    p.add_argument("--processes", type=int, default=1, help="client processes to spread the users over (default: 1)")
    p.add_argument("--ramp-s", type=float, default=10.0,
                   help="users start spread over this; their turns asked in it are warm-up, not measured (default: 10)")
    p.add_argument("--json", type=Path, dest="json_path", help="write all turns and the summaries as JSON")
    p.add_argument("--plot", type=Path, dest="plot_path",
                   help="write a PNG: latency CDF per stage (one level) or latency vs concurrency (several)")
    p.add_argument("--budget-ms", type=int, default=0, help="turn budget (0 = server default)")
    p.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace, settings: StackSettings) -> int:
    from clients.talk import BUNDLED_QUESTION

    def fail(message: str) -> int:
        print(f"voxpipe bench: {message}", file=sys.stderr)
        return 2

    wavs = tuple(sorted(args.wav_dir.glob("*.wav"))) if args.wav_dir else (BUNDLED_QUESTION,)
    if not wavs:
        return fail(f"no .wav files in {args.wav_dir}")
    try:
        levels = [int(n) for n in str(args.streams).split(",")]
        think = tuple(float(v) for v in args.think_s.split(","))
    except ValueError:
        return fail(f"--streams={args.streams!r} must be integers and --think-s={args.think_s!r} MIN,MAX seconds")
    if any(n < 1 for n in levels):
        return fail(f"--streams={args.streams} must be >= 1")
    if len(think) != 2 or not 0 <= think[0] <= think[1]:
        return fail(f"--think-s={args.think_s} must be MIN,MAX with 0 <= MIN <= MAX")
    if not 10 <= args.chunk_ms <= 1000:
        return fail(f"--chunk-ms={args.chunk_ms} is outside 10..1000")
    if args.processes < 1:
        return fail(f"--processes={args.processes} must be >= 1")
    asr = settings.server("asr")
    asr_metrics = tuple(f"http://{s.host}:{s.metrics_port}/metrics" for s in (asr.process(i) for i in range(asr.processes))
                        if s.metrics_port)
    options = BenchOptions(address=args.address or ",".join(settings.server("orchestrator").addresses), wavs=wavs,
                           streams=levels[0], duration_s=args.duration_s, realtime=not args.fast,
                           json_path=args.json_path, plot_path=args.plot_path, budget_ms=args.budget_ms,
                           listen=not args.back_to_back, think_s=think, interim_results=args.interims,
                           chunk_ms=args.chunk_ms, processes=args.processes, ramp_s=args.ramp_s,
                           asr_metrics=asr_metrics)
    summaries = asyncio.run(bench_levels(options, levels))
    for summary in summaries:
        print(format_summary(summary))
    return 0 if all(s["turns"] for s in summaries) else 1


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "n": 0}
    arr = np.asarray(values)
    return {"p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)),
            "p99": float(np.percentile(arr, 99)), "n": len(values)}


async def bench_levels(options: BenchOptions, levels: list[int]) -> list[dict]:
    """Run each concurrency in turn; one summary each (all written to one JSON / plot when asked)."""
    sampler = GpuSampler() if GpuSampler.available() else None
    if sampler is not None:
        sampler.start()
    summaries, turns = [], {}
    try:
        for n in levels:
            summary, level_turns = await _run_level(replace(options, streams=n), sampler)
            summaries.append(summary)
            turns[n] = level_turns
    finally:
        if sampler is not None:
            sampler.stop()
    if options.json_path:
        await asyncio.to_thread(_write_json, options.json_path, {
            "summary": summaries[0] if len(summaries) == 1 else None, "summaries": summaries,
            "turns": turns[levels[0]] if len(levels) == 1 else None, "turns_by_level": turns})
    if options.plot_path:
        if len(levels) == 1:
            reported = [t for t in turns[levels[0]] if t["report"] is not None and not t["cancelled"]]
            series = defaultdict(list)
            for t in reported:
                for s in t["report"]:
                    series[s["stage"]].append(s["ms"])
            series["voice-to-voice"] = [t["voice_to_voice_ms"] for t in reported if t["voice_to_voice_ms"]]
            await asyncio.to_thread(plot_cdf, dict(series), options.plot_path,
                                    f"voxpipe bench: {levels[0]} stream(s), {len(reported)} turns")
        else:
            await asyncio.to_thread(plot_levels, {"voxpipe": summaries}, options.plot_path, "voxpipe bench")
    return summaries


async def bench(options: BenchOptions) -> dict:
    """One concurrency (``options.streams``); returns its summary (also written as JSON / PNG when asked)."""
    (summary,) = await bench_levels(options, [options.streams])
    return summary


async def _run_level(options: BenchOptions, sampler: GpuSampler | None) -> tuple[dict, list[dict]]:
    from tqdm import tqdm

    load = LoadOptions(addresses=split_addresses(options.address), wavs=options.wavs, users=options.streams,
                       duration_s=options.duration_s, realtime=options.realtime, listen=options.listen,
                       think_s=options.think_s, interim_results=options.interim_results, chunk_ms=options.chunk_ms,
                       trailing_silence_ms=options.trailing_silence_ms,
                       budget_ms=options.budget_ms, processes=options.processes, ramp_s=options.ramp_s)
    before = await asyncio.to_thread(_interim_counts, options.asr_metrics)
    started = time.monotonic()
    with tqdm(desc=f"{options.streams} stream(s)", unit="turn", file=sys.stderr) as progress:
        result = await run_load(load, progress)
    ended = time.monotonic()
    after = await asyncio.to_thread(_interim_counts, options.asr_metrics)
    summary = summarize(options, result)
    if before is not None and after is not None:
        summary["interims"] = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    gpu = sampler.window(started, ended) if sampler is not None else None
    if gpu is not None:
        gpu["turns_per_joule"] = summary["turns"] / gpu["energy_j"] if gpu["energy_j"] else None
    summary["gpu"] = gpu
    return summary, result.turns


def _interim_counts(urls: tuple[str, ...]) -> dict[str, float] | None:
    """``voxpipe_asr_interims_total`` by outcome, summed over the ASR processes; None without metrics."""
    if not urls:
        return None
    counts: dict[str, float] = defaultdict(float)
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=2.0) as response:
                text = response.read().decode()
        except OSError:
            return None
        for outcome, value in re.findall(r'^voxpipe_asr_interims_total\{outcome="(\w+)"\} (\S+)$', text, re.MULTILINE):
            counts[outcome] += float(value)
    return dict(counts)


def summarize(options: BenchOptions, result: LoadResult) -> dict:
    """The summary of one concurrency from its turns (``TurnResult.to_json`` form), warm-up turns left out."""
    warmup = options.ramp_s if options.listen else 0.0
    turns = [t for t in result.turns if t.get("asked_s", warmup) >= warmup]
    elapsed = max(result.wall_s - warmup, 1e-9)
    reported = [t for t in turns if t["report"] is not None and not t["cancelled"]]
    voiced = [t for t in reported if t["voice_to_voice_ms"]]
    stage_ms: dict[str, list[float]] = defaultdict(list)
    hop_ms: dict[str, list[float]] = defaultdict(list)
    misses: dict[str, int] = defaultdict(int)
    degraded: dict[str, int] = defaultdict(int)
    for t in reported:
        for s in t["report"]:
            stage_ms[s["stage"]].append(s["ms"])
            if s["server_ms"]:
                hop_ms[s["stage"]].append(s["ms"] - s["server_ms"])
            misses[s["stage"]] += s["missed"]
            degraded[s["stage"]] += s["degraded"]
    failed = [t for t in turns if t["errors"] or t["report"] is None or not t["audio_s"]]
    cpu = result.cpu_s
    return {
        "streams": options.streams, "mode": "listen" if options.listen else "back-to-back",
        "duration_s": round(elapsed, 1), "turns": len(reported), "warmup_turns": len(result.turns) - len(turns),
        "turns_per_s": len(reported) / elapsed if elapsed else 0.0, "errors": result.errors[:20],
        "error_count": len(result.errors), "failed_turns": len(failed) + len(result.errors),
        "degraded_turns": sum(any(s["degraded"] for s in t["report"]) for t in reported),
        "speculative_turns": sum(bool(t.get("speculative")) for t in reported),
        "hidden_ms": percentiles([t["hidden_ms"] for t in reported if t.get("speculative")]),
        "voice_to_voice_ms": percentiles([t["voice_to_voice_ms"] for t in voiced]),
        "client_voice_to_voice_ms": percentiles([t["client_voice_to_voice_ms"] for t in reported
                                                 if t["client_voice_to_voice_ms"]]),
        "endpoint_wait_ms": percentiles([t["endpoint_wait_ms"] for t in reported]),
        "orchestration_ms": percentiles([t["orchestration_ms"] for t in voiced]),
        "overhead_ms": percentiles([t["overhead_ms"] for t in voiced]),
        "hop_ms": {k: percentiles(v) for k, v in hop_ms.items()},
        "stages_ms": {k: percentiles(v) for k, v in stage_ms.items()},
        "budget_miss_rate": {k: misses[k] / len(reported) for k in stage_ms} | {
            "turn": sum(bool(t["missed"]) for t in reported) / len(reported) if reported else 0.0},
        "degradation_rate": {k: degraded[k] / len(reported) for k in stage_ms},
        "client": {"processes": len(cpu), "cpu_cores": sum(cpu) / elapsed if elapsed else 0.0,
                   "busiest_process_cpu": max(cpu) / elapsed if cpu and elapsed else 0.0},
    }


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


def plot_levels(runs: dict[str, list[dict]], path: Path, title: str) -> None:
    """Voice-to-voice p50/p95/p99 (client-side) against concurrency, one line per run and percentile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for (name, summaries), color in zip(runs.items(), ("C0", "C1", "C2", "C3", "C4", "C5"), strict=False):
        for q, style in (("p50", ":"), ("p95", "--"), ("p99", "-")):
            points = [(s["streams"], s["client_voice_to_voice_ms"][q]) for s in summaries
                      if s["client_voice_to_voice_ms"][q] is not None]
            if points:
                ax.plot(*zip(*points, strict=True), style, marker="o", color=color, label=f"{name} {q}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent conversations")
    ax.set_ylabel("voice-to-voice, ms (endpoint wait included)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def format_summary(summary: dict) -> str:
    """The benchmark's table."""
    def fmt(p: dict) -> str:
        return "  ".join(f"{k} {p[k]:7.1f}" if p[k] is not None else f"{k}       -" for k in ("p50", "p95", "p99"))

    lines = [f"{summary['streams']} stream(s) ({summary.get('mode', 'back-to-back')}), {summary['turns']} turns in "
             f"{summary['duration_s']} s ({summary['turns_per_s']:.2f} turns/s), {summary.get('failed_turns', 0)} failed "
             f"turns ({summary['error_count']} failed conversations), {summary.get('degraded_turns', 0)} degraded"]
    for stage, p in summary["stages_ms"].items():
        lines.append(f"  {stage:<22} {fmt(p)}  miss {summary['budget_miss_rate'][stage]:5.1%}  "
                     f"degraded {summary['degradation_rate'][stage]:5.1%}")
    lines.append(f"  {'voice-to-voice (server)':<22} {fmt(summary['voice_to_voice_ms'])}")
    lines.append(f"  {'voice-to-voice (client)':<22} {fmt(summary['client_voice_to_voice_ms'])}")
    lines.append(f"  {'endpoint wait':<22} {fmt(summary['endpoint_wait_ms'])}")
    if summary.get("speculative_turns"):
        lines.append(f"  {'speculative, hidden':<22} {fmt(summary['hidden_ms'])}  "
                     f"({summary['speculative_turns']} of {summary['turns']} turns committed a speculation)")
    lines.append(f"  {'overhead (own + hops)':<22} {fmt(summary['overhead_ms'])}")
    lines.append(f"  {'  orchestrator own time':<22} {fmt(summary['orchestration_ms'])}")
    for stage, p in summary["hop_ms"].items():
        lines.append(f"  {'  hop to ' + stage:<22} {fmt(p)}")
    lines.append(f"  turn budget missed: {summary['budget_miss_rate']['turn']:.1%}")
    client = summary.get("client")
    if client:
        lines.append(f"  client: {client['processes']} process(es), {client['cpu_cores']:.2f} CPU cores in all, "
                     f"busiest process {client['busiest_process_cpu']:.0%} of a core")
    if summary.get("interims"):
        lines.append("  interim decodes: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(summary["interims"].items())))
    gpu = summary.get("gpu")
    if gpu:
        tpj = f"{gpu['turns_per_joule']:.4f}" if gpu.get("turns_per_joule") else "-"
        lines.append(f"  GPU: utilisation mean {gpu['util_mean_pct']:.0f} % (max {gpu['util_max_pct']:.0f}), memory "
                     f"{gpu['memory_max_mib']:.0f} MiB, power {gpu['power_mean_w']:.0f} W, {gpu['energy_j']:.0f} J: "
                     f"{tpj} turns per joule")
    return "\n".join(lines)
