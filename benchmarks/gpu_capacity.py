"""How many real-time conversations one GPU serves: the whole stack under rising load (issue 15).

For each **run** (a stack configuration) the script starts ``voxpipe up --device cuda`` with several
processes per stage, then drives ``voxpipe bench`` (simulated users who speak, listen to the whole reply and
think 1–3 s, spread over client processes) at each concurrency in ``--levels``, and stops climbing once a
level fails the capacity rule (voice-to-voice p99 > ``--p99-ms`` or any failed turn) twice beyond it.
Per level it records the bench summary (latency percentiles, per-stage p99, failed and degraded turns,
client CPU, GPU utilisation/memory/energy, interim decodes skipped) and the CPU share of every stage
process (from /proc), so the first resource to saturate shows. Runs:

* ``timeslice``: the stage processes share the GPU by time-slicing (no MPS);
* ``mps``: the same processes as clients of an MPS daemon (``voxpipe up --mps``);
* ``timeslice-nopriority``, ``mps-nopriority``: the same with CUDA stream priorities off (the priority A/B;
  MiniLM's stay on, see docs/bench/capacity.md);
* ``cpu``: a dry run of the script on a CPU-only machine (two orchestrator and NLP processes).

SM caps come from the stage settings (``mps_active_thread_percentage``, none by default); set
``VOXPIPE_<STAGE>__MPS_ACTIVE_THREAD_PERCENTAGE`` around the script to run with caps.

    python3 benchmarks/gpu_capacity.py run --root /tmp/vx --out $OUT --runs timeslice,mps
    python benchmarks/gpu_capacity.py report results/*.json --out docs/bench     # table + plot
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.gpu_stack import voxpipe_up  # noqa: E402

# Processes per stage on a 16-core host (the clients get the rest): the orchestrator relays every audio
# chunk and interim, ASR runs each stream's VAD and log-mels, TTS phonemizes on the CPU.
PROCESSES = {"orchestrator": 3, "asr": 4, "nlp": 2, "recommender": 1, "tts": 3}
CLIENT_PROCESSES = 4
# MiniLM is left out: with its priorities off an NLP process once hit a device-side assert while capturing
# its graphs (docs/bench/capacity.md), not reproduced since.
TORCH_MODELS = ("WHISPER_TINY_EN_ENCODER", "WHISPER_TINY_EN_DECODER", "RECOMMENDER",
                "TTS_EN_US_JOE_MEDIUM_ENCODER", "TTS_EN_US_JOE_MEDIUM_DECODER")
RUNS = ("timeslice", "mps", "timeslice-nopriority", "mps-nopriority", "cpu")


def stack_env(run: str, root: Path) -> dict[str, str]:
    env = {**os.environ, "VOXPIPE_MODELS_DIR": str(root / "models"), "VOXPIPE_CACHE_DIR": str(root / "cache"),
           "PYTHONUNBUFFERED": "1", "VOXPIPE_LOG_LEVEL": "WARNING",
           # Admission limits sized for the load under test (per orchestrator process); the budget stays the GPU's.
           "VOXPIPE_ORCHESTRATOR__MAX_STREAMS": "2048", "VOXPIPE_ORCHESTRATOR__MAX_CONCURRENT_TURNS": "1024",
           "VOXPIPE_ORCHESTRATOR__MAX_TURNS_PER_S": "2000", "VOXPIPE_ORCHESTRATOR__MAX_ADMISSION_WAIT_MS": "200"}
    # The CPU dry run keeps the models to one process each, and checks the multi-process path on the cheap stages.
    processes = PROCESSES if run != "cpu" else {"orchestrator": 2, "nlp": 2, "asr": 1, "recommender": 1, "tts": 1}
    for stage, n in processes.items():
        env[f"VOXPIPE_{stage.upper()}__PROCESSES"] = str(n)
    if run.endswith("-nopriority"):
        for model in TORCH_MODELS:
            env[f"VOXPIPE_MODELS__{model}__STREAM_PRIORITIES"] = "false"
    return env


def stage_pids() -> dict[str, list[int]]:
    """PIDs of the running ``clients.cli serve <stage>`` processes, by stage."""
    found: dict[str, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"clients.cli" in argv and b"serve" in argv:
            found.setdefault(argv[argv.index(b"serve") + 1].decode(), []).append(int(proc.name))
    return found


def cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def run_stack(run: str, args: argparse.Namespace, log) -> list[dict]:
    env = stack_env(run, args.root)
    device = "cpu" if run == "cpu" else "cuda"
    argv = ["--device", device] + (["--mps"] if run.startswith("mps") else [])
    log(f"== run {run}")
    results: list[dict] = []
    with voxpipe_up(argv, env, log):
        bad = 0
        for level in args.levels:
            summary = run_level(run, level, args, env, log)
            results.append(summary)
            (args.out / f"capacity-{run}.json").write_text(json.dumps({"run": run, "levels": results}, indent=1))
            ok = holds(summary, args.p99_ms)
            log(f"   -> {level} conversations: {'holds' if ok else 'does not hold'}")
            bad = 0 if ok else bad + 1
            if bad >= 2:
                break
    return results


def holds(summary: dict, p99_ms: float) -> bool:
    p99 = summary["client_voice_to_voice_ms"]["p99"]
    return summary["failed_turns"] == 0 and summary["turns"] > 0 and p99 is not None and p99 <= p99_ms


def run_level(run: str, level: int, args: argparse.Namespace, env: dict, log) -> dict:
    pids = stage_pids()
    ticks0 = {pid: cpu_ticks(pid) for ps in pids.values() for pid in ps}
    t0 = time.monotonic()
    path = args.out / f"bench-{run}-{level}.json"
    argv = [sys.executable, "-m", "clients.cli", "bench", "clients/data", "-n", str(level), "-d", str(args.seconds),
            "--processes", str(args.client_processes), "--chunk-ms", str(args.chunk_ms), "--ramp-s", str(args.ramp_s),
            "--json", str(path)]
    if args.interims:
        argv.append("--interims")
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False,
                          timeout=args.ramp_s + args.seconds + 180)
    elapsed = time.monotonic() - t0
    log(done.stdout.rstrip())
    if done.returncode not in (0, 1):
        log(done.stderr[-3000:])
    hz = os.sysconf("SC_CLK_TCK")
    cpu = {stage: [round((cpu_ticks(pid) - ticks0.get(pid, 0)) / hz / elapsed, 2) for pid in ps]
           for stage, ps in pids.items()}
    log(f"   stage CPU (cores per process): {cpu}")
    summary = json.loads(path.read_text())["summaries"][0] if path.exists() else {
        "streams": level, "turns": 0, "failed_turns": level, "client_voice_to_voice_ms": {"p99": None}}
    summary["stage_cpu_cores"] = cpu
    return summary


def report(paths: list[Path], out: Path) -> None:
    """A markdown table per run and the latency-vs-concurrency plot, from ``capacity-<run>.json`` files."""
    from clients.bench import plot_levels

    runs = {json.loads(p.read_text())["run"]: json.loads(p.read_text())["levels"] for p in paths}
    lines = ["| run | conversations | turns | failed | degraded | v2v p50 / p95 / p99 (ms) | ASR / NLP / TTS p99 (ms) "
             "| GPU util mean | GPU memory | turns/J | client CPU | interims started / skipped |", "|" + "---|" * 12]
    for run, levels in runs.items():
        for s in levels:
            v = s["client_voice_to_voice_ms"]
            stages = s.get("stages_ms", {})

            def p99(name: str, stages=stages) -> str:
                value = stages.get(name, {}).get("p99")
                return f"{value:.0f}" if value is not None else "-"

            gpu = s.get("gpu") or {}
            interims = s.get("interims") or {}
            skipped = interims.get("skipped_load", 0) + interims.get("skipped_stream", 0)
            lines.append(
                f"| {run} | {s['streams']} | {s['turns']} | {s['failed_turns']} | {s.get('degraded_turns', 0)} | "
                + (f"{v['p50']:.0f} / {v['p95']:.0f} / {v['p99']:.0f}" if v.get("p50") is not None else "-")
                + f" | {p99('asr')} / {p99('nlp')} / {p99('tts')} | "
                + (f"{gpu['util_mean_pct']:.0f} % | {gpu['memory_max_mib'] / 1024:.1f} GiB | "
                   f"{gpu['turns_per_joule']:.3f}" if gpu else "- | - | -")
                + f" | {s.get('client', {}).get('cpu_cores', 0):.1f} cores | "
                + (f"{interims.get('started', 0):.0f} / {skipped:.0f} |" if interims else "- |"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "capacity.md").write_text("\n".join(lines) + "\n")
    plot_levels(runs, out / "capacity.png", "voxpipe on one GPU: voice-to-voice vs concurrent conversations")
    print("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="start the stack per run and climb the levels")
    r.add_argument("--root", type=Path, default=Path("/tmp/vx"))
    r.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    r.add_argument("--runs", default="timeslice,mps")
    r.add_argument("--levels", default="64,128,256,512,768,1024")
    r.add_argument("--seconds", type=float, default=30.0, help="bench duration per level")
    r.add_argument("--ramp-s", type=float, default=10.0, help="users start over this; its turns are warm-up")
    r.add_argument("--p99-ms", type=float, default=800.0)
    r.add_argument("--client-processes", type=int, default=CLIENT_PROCESSES)
    r.add_argument("--chunk-ms", type=int, default=100, help="audio per message (Riva's streaming client sends 100 ms)")
    r.add_argument("--no-interims", dest="interims", action="store_false")
    p = sub.add_parser("report", help="table and plot from capacity-<run>.json files")
    p.add_argument("paths", type=Path, nargs="+")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "bench")
    args = parser.parse_args()
    if args.command == "report":
        report(args.paths, args.out)
        return 0
    args.levels = [int(n) for n in args.levels.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    log_file = (args.out / "capacity.log").open("a")

    def log(text: str) -> None:
        print(text, flush=True)
        log_file.write(text + "\n")
        log_file.flush()

    for run in args.runs.split(","):
        if run not in RUNS:
            parser.error(f"run {run!r} is not one of {', '.join(RUNS)}")
        run_stack(run, args, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
