"""Recommender stage benchmark: per-request latency and concurrency-32 throughput through gRPC, RSS.

The real stage runs in child processes (``benchmarks/grpc_load.py``): batching on (``max_batch_size=32``,
with no queue delay and with 300 us) and off (``max_batch_size=1``, the baseline), measured in
interleaved rounds. The request mix is what a
conversation sends: 40 % personalised (sessions with 1-5 ratings, half with a query embedding),
30 % cold-start query (real MiniLM embeddings of the held-out utterances), 20 % similar_to, 10 %
popularity_only; a third carry a genre filter, a fifth a decade, sessions exclude seen items. Feedback
latency is measured separately. Results go to docs/bench/recommender.md. Wrap in the shared lock:

    flock /tmp/voxpipe-bench.lock python benchmarks/recommender_bench.py [--seconds 12] [--requests 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.grpc_load import interleaved, machine, percentiles_ms, start_server  # noqa: E402
from engines.build import BuildContext, build_stage  # noqa: E402
from engines.repository import ModelRepository  # noqa: E402
from protos import recommender_pb2 as pb  # noqa: E402
from protos import recommender_pb2_grpc  # noqa: E402
from services.nlp.encoder import embed_batch, load_tokenizer  # noqa: E402
from tests.stage.nlp_fixtures import heldout  # noqa: E402

GENRES = ["Action", "Comedy", "Drama", "Horror", "Sci-Fi", "Thriller", "Romance", "Children's"]
N_SESSIONS = 64


def query_embeddings(models_dir: Path) -> list[list[float]]:
    """Real MiniLM embeddings of the held-out utterances (what NLP would send)."""
    engine = ModelRepository(models_dir).load("minilm")[0]
    tokenizer = load_tokenizer(models_dir / "minilm", 256)
    texts = [r["text"] for r in heldout()]
    out = []
    for i in range(0, len(texts), 32):
        out += [e.tolist() for e in embed_batch(engine, tokenizer, texts[i:i + 32])]
    return out


def make_requests(queries: list[list[float]], n: int, seed: int = 0) -> list[pb.RecommendRequest]:
    rng = random.Random(seed)
    reqs = []
    for _ in range(n):
        kind = rng.random()
        filters = pb.Filters()
        if rng.random() < 1 / 3:
            filters.genres.append(rng.choice(GENRES))
        if rng.random() < 1 / 5:
            decade = rng.choice([1970, 1980, 1990])
            filters.year_min, filters.year_max = decade, decade + 9
        req = pb.RecommendRequest(k=10, filters=filters)
        if kind < 0.4:
            req.session_id = f"bench-{rng.randrange(N_SESSIONS)}"
            req.filters.exclude_seen = True
            if rng.random() < 0.5:
                req.query_embedding.extend(rng.choice(queries))
        elif kind < 0.7:
            req.query_embedding.extend(rng.choice(queries))
        elif kind < 0.9:
            req.similar_to_item_id = rng.randint(1, 1682) if rng.random() < 0.5 else rng.randint(1, 300)
            if req.similar_to_item_id == 267:
                req.similar_to_item_id = 1
        else:
            req.popularity_only = True
        reqs.append(req)
    return reqs


async def seed_sessions(stub, seed: int = 1) -> list[float]:
    """Give every bench session 1-5 ratings; returns the Feedback latencies."""
    rng = random.Random(seed)
    latencies = []
    for s in range(N_SESSIONS):
        for _ in range(rng.randint(1, 5)):
            item = rng.randint(1, 400)
            item = 1 if item == 267 else item
            t0 = time.perf_counter()
            await stub.Feedback(pb.FeedbackRequest(session_id=f"bench-{s}", item_id=item,
                                                   rating=rng.choice([1, 2, 4, 5, 5])), timeout=10)
            latencies.append(time.perf_counter() - t0)
    return latencies


async def run(servers: dict, requests: list[pb.RecommendRequest], args):
    async with contextlib.AsyncExitStack() as stack:
        stubs = {}
        for name, server in servers.items():
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(server.address))
            stubs[name] = recommender_pb2_grpc.RecommenderStub(channel)
        feedback = {name: await seed_sessions(stub) for name, stub in stubs.items()}
        strategies: dict[str, int] = {}
        for r in requests[:300]:
            reply = await next(iter(stubs.values())).Recommend(r, timeout=10)
            strategies[reply.strategy or "empty"] = strategies.get(reply.strategy or "empty", 0) + 1

        def caller(stub):
            def call(i: int):
                return stub.Recommend(requests[i % len(requests)], timeout=30)
            return call

        measured = await interleaved({n: caller(s) for n, s in stubs.items()}, rounds=args.rounds,
                                     requests=args.requests, seconds=args.seconds, concurrency=args.concurrency,
                                     pids={n: s.process.pid for n, s in servers.items()})
    return measured, feedback, strategies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=Path.home() / ".cache" / "voxpipe" / "models")
    parser.add_argument("--downloads-dir", type=Path, default=Path.home() / ".cache" / "voxpipe" / "downloads")
    parser.add_argument("--requests", type=int, default=1000, help="sequential requests per configuration")
    parser.add_argument("--seconds", type=float, default=12.0, help="closed-loop seconds per configuration")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    build_stage("recommender", BuildContext(models_dir=args.models_dir, downloads_dir=args.downloads_dir))
    requests = make_requests(query_embeddings(args.models_dir), 2000)

    print(f"# recommender benchmark  {machine()}")
    print(f"# command: {' '.join(sys.argv)}")
    configs = {"batching on (max 32, delay 0)": {"max_batch_size": 32, "max_queue_delay_us": 0},
               "batching on (max 32, delay 300 us)": {"max_batch_size": 32, "max_queue_delay_us": 300},
               "batching off (max 1)": {"max_batch_size": 1, "max_queue_delay_us": 0}}
    servers = {}
    try:
        for name, options in configs.items():
            servers[name] = start_server("recommender", {}, args.models_dir, models={"recommender": options})
        rss_loaded = {n: s.rss_mb()[0] for n, s in servers.items()}
        measured, feedback, strategies = asyncio.run(run(servers, requests, args))
        rss_peak = {n: s.rss_mb()[1] for n, s in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    print(f"\nrequest mix (first 300, by strategy answered): {dict(sorted(strategies.items()))}")
    print()
    print(f"| configuration | Recommend p50 / p95 / p99 ms (sequential) | c={args.concurrency} req/s (median of rounds) "
          f"| c={args.concurrency} p50 / p99 ms | server CPU ms/request, cores used | Feedback p50 ms "
          "| RSS loaded / peak MiB |")
    print("|---|---|---|---|---|---|---|")
    for name, m in measured.items():
        p1, pc, fb = percentiles_ms(m.sequential_s), percentiles_ms(m.loaded_s), percentiles_ms(feedback[name])
        rates = "/".join(f"{r:.0f}" for r in m.rates)
        print(f"| {name} | {p1['p50']:.2f} / {p1['p95']:.2f} / {p1['p99']:.2f} | {m.rate:.0f} ({rates}) | "
              f"{pc['p50']:.1f} / {pc['p99']:.1f} | {m.cpu_ms:.2f}, {max(m.cores_used):.2f} | {fb['p50']:.2f} | "
              f"{rss_loaded[name]:.0f} / {rss_peak[name]:.0f} |")
    names = list(measured)
    for name in names[:-1]:
        print(f"\nthroughput {name} / {names[-1]} at c={args.concurrency}: "
              f"{measured[name].rate / measured[names[-1]].rate:.2f}x")
    print(f"(numpy {np.__version__})")


if __name__ == "__main__":
    main()
