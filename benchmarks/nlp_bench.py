"""NLP stage benchmark: held-out accuracy, batch-1 latency and concurrency-32 throughput through gRPC, RSS.

Runs the real stage in a child process (``benchmarks/grpc_load.py``) twice in the same run: batching on
(``max_batch_size=32``) and batching off (``max_batch_size=1``, the baseline), and prints one table.
Numbers go to docs/bench/nlp.md. Wrap in the shared lock:

    flock /tmp/voxpipe-bench.lock python benchmarks/nlp_bench.py [--seconds 8] [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc  # noqa: E402

from benchmarks.grpc_load import closed_loop, machine, percentiles_ms, sequential, start_server  # noqa: E402
from engines.build import BuildContext, build_stage  # noqa: E402
from protos import nlp_pb2, nlp_pb2_grpc  # noqa: E402
from services.nlp.evaluation import score  # noqa: E402
from tests.stage.nlp_fixtures import HELDOUT_FILES, heldout  # noqa: E402

# A mix of short and long turns, as ASR finals look.
LOAD_TEXTS = [r["text"] for r in heldout()]


async def accuracy(stub) -> list[str]:
    lines = []
    for path in (*HELDOUT_FILES, None):
        rows = heldout((path,)) if path else heldout()
        replies = await asyncio.gather(*(stub.Understand(nlp_pb2.UnderstandRequest(text=r["text"]), timeout=30)
                                         for r in rows))
        rep = score(rows, [(r.intent, {(e.type, e.value) for e in r.entities}) for r in replies])
        name = path.name if path else "all held-out"
        ents = "  ".join(f"{t} P={rep.entities[t].precision:.3f} R={rep.entities[t].recall:.3f}"
                         for t in ("genre", "decade", "year", "title", "rating"))
        lines.append(f"{name:28s} n={rep.n:3d}  intent acc={rep.intent_accuracy:.3f}  {ents}")
        lines.append(f"{'':28s} unknown: {rep.unknown_confusion()}")
        if path is None:
            lines += [f"{'':28s} error: {e}" for e in rep.errors]
    return lines


async def measure(address: str, requests: int, seconds: float, concurrency: int):
    async with grpc.aio.insecure_channel(address) as channel:
        stub = nlp_pb2_grpc.UnderstanderStub(channel)

        def call(i: int):
            return stub.Understand(nlp_pb2.UnderstandRequest(text=LOAD_TEXTS[i % len(LOAD_TEXTS)]), timeout=30)

        seq = await sequential(call, requests)
        rate, lat = await closed_loop(call, concurrency, seconds)
        acc = await accuracy(stub)
    return seq, rate, lat, acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=Path.home() / ".cache" / "voxpipe" / "models")
    parser.add_argument("--downloads-dir", type=Path, default=Path.home() / ".cache" / "voxpipe" / "downloads")
    parser.add_argument("--requests", type=int, default=300, help="sequential batch-1 requests")
    parser.add_argument("--seconds", type=float, default=8.0, help="closed-loop duration per configuration")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--models", nargs="+", default=["minilm", "minilm-int8"], help="model folders to compare")
    args = parser.parse_args()
    build_stage("nlp", BuildContext(models_dir=args.models_dir, downloads_dir=args.downloads_dir))

    print(f"# NLP benchmark  {machine()}")
    print(f"# command: {' '.join(sys.argv)}")
    rows = []
    accuracy: dict[str, list[str]] = {}
    configs = [(f"{model}, batching {'on (max 32)' if batch > 1 else 'off (max 1)'}", model, batch)
               for model in args.models for batch in (32, 1)]
    for label, model, batch in configs:
        server = start_server("nlp", {"model": model, "max_batch_size": batch}, args.models_dir)
        try:
            rss_loaded, _ = server.rss_mb()
            seq, rate, lat, acc = asyncio.run(measure(server.address, args.requests, args.seconds, args.concurrency))
            rss_now, rss_peak = server.rss_mb()
        finally:
            server.stop()
        p1, pc = percentiles_ms(seq), percentiles_ms(lat)
        rows.append((label, p1, rate, pc, rss_loaded, rss_peak))
        if batch == 32:
            accuracy[model] = acc
    print()
    print(f"| configuration | batch-1 p50 / p95 / p99 ms | c={args.concurrency} req/s | c={args.concurrency} "
          "p50 / p99 ms | RSS loaded / peak MiB |")
    print("|---|---|---|---|---|")
    for label, p1, rate, pc, rss_loaded, rss_peak in rows:
        print(f"| {label} | {p1['p50']:.2f} / {p1['p95']:.2f} / {p1['p99']:.2f} | {rate:.0f} | "
              f"{pc['p50']:.1f} / {pc['p99']:.1f} | {rss_loaded:.0f} / {rss_peak:.0f} |")
    for i in range(0, len(rows), 2):
        print(f"\n{rows[i][0]}: throughput ratio batching on / off at c={args.concurrency}: "
              f"{rows[i][2] / rows[i + 1][2]:.2f}x")
    for model, lines in accuracy.items():
        print(f"\n## accuracy, {model} (batching on)")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
