"""NLP stage benchmark: held-out accuracy, batch-1 latency and concurrency-32 throughput through gRPC, RSS.

Each configuration (fp32 with batching off, on with no queue delay, on with 500 us, on with one 2-thread
session instead of the default two 1-thread ones; int8 with batching on) runs the real stage in its own
child process (``benchmarks/grpc_load.py``); all are up at once (idle ones cost nothing) and are measured
in interleaved rounds, so the shared machine's noise hits every configuration alike. Batching off
(``max_batch_size=1``) is the baseline. Load texts are the held-out utterances, cycled. Results go to
docs/bench/nlp.md. Wrap in the shared lock:

    flock /tmp/voxpipe-bench.lock python benchmarks/nlp_bench.py [--seconds 12] [--requests 400]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc  # noqa: E402

from benchmarks.grpc_load import interleaved, machine, percentiles_ms, start_server  # noqa: E402
from engines.build import BuildContext, build_stage  # noqa: E402
from protos import nlp_pb2, nlp_pb2_grpc  # noqa: E402
from services.nlp.evaluation import score  # noqa: E402
from tests.stage.nlp_fixtures import HELDOUT_FILES, heldout  # noqa: E402

LOAD_TEXTS = [r["text"] for r in heldout()]


async def accuracy(stub) -> list[str]:
    """Scores per held-out file and overall, with every error of the overall set listed."""
    lines = []
    for path in (*HELDOUT_FILES, None):
        rows = heldout((path,)) if path else heldout()
        replies = await asyncio.gather(*(stub.Understand(nlp_pb2.UnderstandRequest(text=r["text"]), timeout=60)
                                         for r in rows))
        rep = score(rows, [(r.intent, {(e.type, e.value) for e in r.entities}) for r in replies])
        name = path.name if path else "all held-out"
        ents = "  ".join(f"{t} P={rep.entities[t].precision:.3f} R={rep.entities[t].recall:.3f}"
                         for t in ("genre", "decade", "year", "title", "rating"))
        lines.append(f"{name:26s} n={rep.n:3d}  intent acc={rep.intent_accuracy:.3f}  {ents}")
        lines.append(f"{'':26s} unknown: {rep.unknown_confusion()}")
        if path is None:
            lines += [f"{'':26s} error: {e}" for e in rep.errors]
    return lines


async def run(servers: dict, args) -> tuple[dict, dict[str, list[str]]]:
    async with contextlib.AsyncExitStack() as stack:
        stubs = {}
        for name, server in servers.items():
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(server.address))
            stubs[name] = nlp_pb2_grpc.UnderstanderStub(channel)

        def caller(stub):
            def call(i: int):
                return stub.Understand(nlp_pb2.UnderstandRequest(text=LOAD_TEXTS[i % len(LOAD_TEXTS)]), timeout=60)
            return call

        measured = await interleaved({n: caller(s) for n, s in stubs.items()}, rounds=args.rounds,
                                     requests=args.requests, seconds=args.seconds, concurrency=args.concurrency,
                                     pids={n: s.process.pid for n, s in servers.items()})
        acc = {n: await accuracy(s) for n, s in stubs.items() if n.endswith("batching on, delay 0")}
    return measured, acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=Path.home() / ".cache" / "voxpipe" / "models")
    parser.add_argument("--downloads-dir", type=Path, default=Path.home() / ".cache" / "voxpipe" / "downloads")
    parser.add_argument("--requests", type=int, default=400, help="sequential batch-1 requests per configuration")
    parser.add_argument("--seconds", type=float, default=12.0, help="closed-loop seconds per configuration")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--models", nargs="+", default=["minilm", "minilm-int8"], help="model folders to compare")
    args = parser.parse_args()
    build_stage("nlp", BuildContext(models_dir=args.models_dir, downloads_dir=args.downloads_dir))

    print(f"# NLP benchmark  {machine()}")
    print(f"# command: {' '.join(sys.argv)}")
    configs = {}
    for m in args.models:
        # (model, its serving overrides); everything else as the model's config.json says.
        configs[f"{m}, batching on, delay 0"] = (m, {"max_batch_size": 32, "max_queue_delay_us": 0})
        if m == args.models[0]:
            configs[f"{m}, batching on, delay 500 us"] = (m, {"max_batch_size": 32, "max_queue_delay_us": 500})
            configs[f"{m}, batching on, 1 instance x 2 threads"] = (
                m, {"max_batch_size": 32, "max_queue_delay_us": 0, "instances": 1, "intra_op_threads": 2})
            configs[f"{m}, batching off"] = (m, {"max_batch_size": 1, "max_queue_delay_us": 0})
    servers = {}
    try:
        for name, (model, serving) in configs.items():
            servers[name] = start_server("nlp", {"model": model}, args.models_dir, models={model: serving})
        rss_loaded = {n: s.rss_mb()[0] for n, s in servers.items()}
        measured, acc = asyncio.run(run(servers, args))
        rss_peak = {n: s.rss_mb()[1] for n, s in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    print()
    print(f"| configuration | batch-1 p50 / p95 / p99 ms | c={args.concurrency} req/s (median of rounds) | "
          f"c={args.concurrency} p50 / p99 ms | server CPU ms/request, cores used | RSS loaded / peak MiB |")
    print("|---|---|---|---|---|---|")
    for name, m in measured.items():
        p1, pc = percentiles_ms(m.sequential_s), percentiles_ms(m.loaded_s)
        rates = "/".join(f"{r:.0f}" for r in m.rates)
        print(f"| {name} | {p1['p50']:.2f} / {p1['p95']:.2f} / {p1['p99']:.2f} | {m.rate:.0f} ({rates}) | "
              f"{pc['p50']:.1f} / {pc['p99']:.1f} | {m.cpu_ms:.2f}, {max(m.cores_used):.2f} | "
              f"{rss_loaded[name]:.0f} / {rss_peak[name]:.0f} |")
    base = measured[f"{args.models[0]}, batching off"]
    for name, m in measured.items():
        print(f"throughput {name} / {args.models[0]}, batching off at c={args.concurrency}: {m.rate / base.rate:.2f}x")
    for name, lines in acc.items():
        print(f"\n## accuracy, {name}")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
