"""Phrase boosting's scorer on a GPU: ``WhisperDecoder.score`` on CUDA (FP16 and FP32) against the greedy
step's own probabilities (log-probabilities compared, in nats), and what one scoring call costs, with random weights of Whisper tiny.en's shapes.

Needs only PyTorch: the ``engines`` package's ``__init__`` (which pulls the serving layer's dependencies) is
bypassed, so it runs on the lent GPU machine from a bare checkout, no bundle. On the CPU it checks the same.

    python3 benchmarks/gpu_scorer_check.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if "engines" not in sys.modules:  # the model code only: no serving-layer imports
    package = types.ModuleType("engines")
    package.__path__ = [str(ROOT / "engines")]
    sys.modules["engines"] = package
sys.path.insert(0, str(ROOT))

from engines.models.whisper import WhisperDecoder, WhisperScorer  # noqa: E402
from engines.models.whisper_spec import GreedyRule, WhisperDims  # noqa: E402

DIMS = WhisperDims(n_mels=80, n_audio_ctx=1500, n_state=384, n_head=6, n_audio_layer=4, n_text_ctx=448,
                   n_vocab=51864, n_text_layer=4)
RULE = GreedyRule(sot=50257, no_timestamps=50362, eot=50256, no_speech=50361, suppress_ids=(1, 2, 7, 8, 9, 50358),
                  suppress_ids_begin=(220, 50256), max_new_tokens=224)


def check(device: str, dtype: torch.dtype, steps: int = 12, candidates: int = 9) -> dict:
    torch.manual_seed(0)
    model = WhisperScorer(DIMS, RULE).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
        model.embedding.normal_(0, 0.5)
        model.pos.normal_(0, 0.05)
    model = model.to(device=device, dtype=dtype)
    model.on_precision()
    h, dh, s, layers = DIMS.n_head, DIMS.n_state // DIMS.n_head, DIMS.n_audio_ctx, DIMS.n_text_layer
    cross = []
    for _ in range(layers):
        cross += [torch.randn(1, h, dh, s, device=device, dtype=dtype), torch.randn(1, h, s, dh, device=device, dtype=dtype)]
    tokens, probs = [], []
    token = torch.tensor([[RULE.sot]], device=device)
    past_k = torch.zeros(1, layers, 0, DIMS.n_state, device=device, dtype=dtype)
    past_v = torch.zeros_like(past_k)
    with torch.inference_mode():
        for position in range(steps + 1):  # greedy, the exported step form
            next_token, picked, prob, _, _, _, new_k, new_v = WhisperDecoder.forward(
                model, token, torch.tensor([position], device=device), past_k, past_v, *cross)
            past_k, past_v = torch.cat([past_k, new_k], 2), torch.cat([past_v, new_v], 2)
            if position >= len(RULE.prompt) - 1:
                tokens.append(int(picked))
                probs.append(float(prob))
            token = next_token.view(1, 1)
        row = [*RULE.prompt, *tokens]
        grid = torch.tensor([row] * candidates, device=device).view(1, candidates, -1)
        width = len(row)  # every position of every candidate after the prompt
        score_at = torch.tensor([c * width + j for c in range(candidates) for j in range(len(RULE.prompt), width)],
                                device=device).view(1, -1)
        logprob = model(grid, score_at, *cross).view(candidates, -1)
        got = logprob[0].float().cpu()
        times = []
        for _ in range(30):
            if device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            model(grid, score_at, *cross)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append((time.perf_counter() - started) * 1e3)
    want = torch.tensor(probs).log()
    return {"device": device, "dtype": str(dtype), "tokens": len(tokens),
            "max_abs_logprob_diff": float((got - want).abs().max()), "mean_logprob": float(want.mean()), "rows_equal": bool(torch.allclose(
                logprob[0], logprob[-1])), "score_ms_median": sorted(times)[len(times) // 2],
            "candidates": candidates, "length": len(row)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = parser.parse_args()
    runs = [("cpu", torch.float32)]
    if torch.cuda.is_available():
        runs += [("cuda", torch.float16), ("cuda", torch.float32)]
    results = [check(device, dtype) for device, dtype in runs]
    for r in results:
        print(json.dumps(r), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_scorer_check.json").write_text(json.dumps(results, indent=1))
    limits = {"torch.float32": 1e-3, "torch.float16": 5e-2}  # nats
    return 0 if all(r["max_abs_logprob_diff"] < limits[r["dtype"]] and r["rows_equal"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
