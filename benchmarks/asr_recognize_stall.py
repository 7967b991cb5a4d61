"""How long a long ``Recognize`` holds the ASR process's event loop (issue 16).

The stage runs in this process on a real server (port 0); a ticker on the same loop wakes every 2 ms and
records how late it is. A 500 s clip of faint noise (no speech: the work is WAV parsing, sample conversion,
resampling, VAD and segmentation, not decoding) is recognised ``--runs`` times. ``--root`` runs another
checkout's code (e.g. a worktree of the commit before) with the same models, for a same-session A/B:

    flock /tmp/voxpipe-bench.lock python benchmarks/asr_recognize_stall.py [--root ../before] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np


async def _tick(gaps: list[float], done: asyncio.Event) -> None:
    """Wake every 2 ms until ``done``; record each wake-up's distance from the last."""
    last = time.perf_counter()
    while not done.is_set():
        await asyncio.sleep(0.002)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


async def run(runs: int, seconds: int) -> None:
    from protos import asr_pb2, asr_pb2_grpc, common_pb2
    from services.asr import AsrConfig, AsrStage
    from services.common import StageSettings
    from tests.helpers import running_stage

    models = Path(os.environ.get("VOXPIPE_MODELS_DIR", Path.home() / ".cache" / "voxpipe" / "models"))
    config = asr_pb2.RecognitionConfig(encoding=common_pb2.LINEAR16, sample_rate_hz=16_000)
    noise = np.random.default_rng(0).normal(0, 30, 16_000 * seconds).astype("<i2").tobytes()
    request = asr_pb2.RecognizeRequest(config=config, audio=noise)
    stage = AsrStage(StageSettings(name="asr", models_dir=models), AsrConfig())
    worst, p99s, took = [], [], []
    async with running_stage(stage) as (_, channel):
        stub = asr_pb2_grpc.RecognizerStub(channel)
        await stub.Recognize(asr_pb2.RecognizeRequest(config=config, audio=noise[:32_000]))  # warm
        for _ in range(runs):
            gaps: list[float] = []
            done = asyncio.Event()
            task = asyncio.create_task(_tick(gaps, done))
            start = time.perf_counter()
            await stub.Recognize(request, timeout=120)
            took.append(time.perf_counter() - start)
            done.set()
            await task
            worst.append(max(gaps) * 1e3)
            p99s.append(float(np.percentile(gaps, 99)) * 1e3)
    print(f"code: {sys.path[0]}")
    print(f"Recognize of {seconds} s, {runs} runs: took median {statistics.median(took):.2f} s; "
          f"longest loop stall median {statistics.median(worst):.0f} ms (runs: "
          f"{', '.join(f'{w:.0f}' for w in worst)}); tick gap p99 median {statistics.median(p99s):.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="checkout whose code to run (default: this one)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=500, help="clip length (16 kHz; 500 s fits gRPC's 16 MiB)")
    args = parser.parse_args()
    sys.path.insert(0, str(args.root.resolve()))
    asyncio.run(run(args.runs, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
