"""Batcher + ONNX Runtime backend on a small MatMul model: batching off vs on, concurrency 1/8/32.

Batching off is the same batcher with ``max_batch_size=1`` (Triton's comparison). Also measures the
batcher's own overhead per request with a no-op engine. Prints a table; numbers go to docs/BENCHMARKS.md.

    python benchmarks/batcher_bench.py [--seconds 3] [--dim 256]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engines import BatchingConfig, DynamicBatcher, ModelRepository  # noqa: E402
from tests.onnx_models import write_matmul_model  # noqa: E402


def run_rows(engine, rows: list[np.ndarray]) -> list[np.ndarray]:
    out = engine.run({"x": np.stack(rows)})["y"]
    return list(out)


def noop(items: list[int]) -> list[int]:
    return items


async def drive(batcher: DynamicBatcher, make_item, concurrency: int, seconds: float) -> tuple[float, list[float]]:
    """Closed loop: ``concurrency`` clients each submit back to back for ``seconds``."""
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            await batcher.submit(make_item())
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(client())
    elapsed = time.perf_counter() - start
    return len(latencies) / elapsed, latencies


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1e3


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--dim", type=int, default=256, help="MatMul is [B,dim] x [dim,dim]")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-queue-delay-us", type=int, default=500)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        write_matmul_model(Path(tmp) / "matmul", in_dim=args.dim, out_dim=args.dim)
        repo = ModelRepository(Path(tmp))
        (engine,) = repo.load("matmul")
        engine.run_dummy()
        rng = np.random.default_rng(0)
        row = rng.standard_normal(args.dim).astype(np.float32)

        print(f"MatMul [B,{args.dim}]x[{args.dim},{args.dim}] ONNX Runtime CPU, 1 instance, 1 intra-op thread; "
              f"{args.seconds:.0f} s per point")
        print(f"{'batching':<9} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'mean batch':>10}")
        results: dict[tuple[str, int], tuple[float, list[float]]] = {}
        for mode, max_batch in (("off", 1), ("on", args.max_batch_size)):
            config = BatchingConfig(max_batch_size=max_batch, max_queue_delay_us=args.max_queue_delay_us,
                                    max_queue_size=1024)
            for concurrency in (1, 8, 32):
                batcher = DynamicBatcher("matmul", [partial(run_rows, engine)], config)
                sizes: list[int] = []
                real = batcher._batch_fns[0]
                batcher._batch_fns[0] = lambda items, real=real, sizes=sizes: (sizes.append(len(items)), real(items))[1]
                await batcher.start()
                await drive(batcher, lambda: row, concurrency, 0.3)  # warm the cost model and caches
                sizes.clear()
                throughput, lat = await drive(batcher, lambda: row, concurrency, args.seconds)
                await batcher.close()
                results[(mode, concurrency)] = (throughput, lat)
                print(f"{mode:<9} {concurrency:>4} {throughput:>9.0f} {pct(lat, 50):>8.2f} {pct(lat, 95):>8.2f} "
                      f"{pct(lat, 99):>8.2f} {statistics.mean(sizes):>10.1f}")
        print()
        for concurrency in (1, 8, 32):
            on, off = results[("on", concurrency)], results[("off", concurrency)]
            print(f"concurrency {concurrency:>2}: throughput on/off = {on[0] / off[0]:.2f}x, "
                  f"p95 added by batching = {pct(on[1], 95) - pct(off[1], 95):+.2f} ms")

        print("\nno-op engine (batcher overhead only), max_queue_delay_us=0:")
        for concurrency, max_batch in ((1, 1), (32, 1), (32, 32)):
            batcher = DynamicBatcher("noop", [noop], BatchingConfig(max_batch_size=max_batch, max_queue_delay_us=0,
                                                                    max_queue_size=1024))
            await batcher.start()
            await drive(batcher, lambda: 0, concurrency, 0.3)
            throughput, lat = await drive(batcher, lambda: 0, concurrency, args.seconds)
            await batcher.close()
            print(f"  concurrency {concurrency:>2}, max_batch_size {max_batch:>2}: {throughput:>8.0f} req/s, "
                  f"{1e6 / throughput:>6.1f} us/request, p50 latency {pct(lat, 50) * 1e3:>7.1f} us")


if __name__ == "__main__":
    asyncio.run(main())
