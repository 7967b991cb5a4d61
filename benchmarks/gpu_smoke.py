"""A first look at the GPU path before the weights arrive: Whisper tiny.en's shapes with random weights.

Needs only the wheels (``gpu_bundle.py install --partial`` after the first part) and the two Whisper
configs prepared in ``.gpu/smoke``. Checks that the encoder's and the decoder step's CUDA graphs capture
and replay to what eager mode computes, and times them (random weights cost the same as real ones).

    PYTHONPATH=/tmp/vx/site:. python3 benchmarks/gpu_smoke.py --out $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.gpu_bench import _asr_variant, environment  # noqa: E402
from engines.build import save_weights  # noqa: E402
from engines.models import build_module  # noqa: E402
from engines.repository import ModelRepository  # noqa: E402

NAMES = ("whisper-tiny-en-encoder", "whisper-tiny-en-decoder")


def random_models(configs: Path, root: Path) -> None:
    """Model folders with the real configs and random weights of the right shapes."""
    import torch

    torch.manual_seed(0)
    for name in NAMES:
        (root / name).mkdir(parents=True)
        shutil.copy(configs / name / "config.json", root / name / "config.json")
        spec = json.loads((configs / name / "config.json").read_text())["metadata"]["torch_module"]
        module = build_module(spec)
        with torch.no_grad():
            for tensor in module.state_dict().values():
                if tensor.is_floating_point():
                    tensor.normal_(0, 0.05)
        save_weights(module.state_dict(), root / name / "model.safetensors")


def graphs_match_eager(root: Path) -> dict:
    """The decoder step's picks over 20 steps of 64 slots: graph replays vs eager, same inputs."""
    from engines.repository import create_engines
    from services.asr.generation import DECODER_MODEL, ENCODER_MODEL, create_generators, encoder_batch_fn

    mel = np.random.default_rng(0).standard_normal((80, 3000)).astype(np.float32)
    picks = {}
    for label, extra in (("graphs", {}), ("eager", {"cuda_graphs": False})):
        repo = ModelRepository(root, target="cuda", overrides={ENCODER_MODEL: extra, DECODER_MODEL: extra})
        (encoder,) = create_engines(repo.resolve(ENCODER_MODEL))
        encoder.warmup()
        encoded = encoder_batch_fn(encoder)([mel] * 4)
        (generator,) = create_generators(repo.resolve(DECODER_MODEL))
        generator.warmup()
        slots = list(range(64))
        generator.prefill([(s, encoded[s % 4]) for s in slots])
        rows = []
        for _ in range(20):
            generator.step(slots)
            rows.append(generator._picks.numpy()[:, :64].copy())
        picks[label] = np.stack(rows)
    diff = np.abs(picks["graphs"] - picks["eager"])
    return {"tokens_equal": bool(np.array_equal(picks["graphs"][:, 0], picks["eager"][:, 0])),
            "max_prob_diff": float(diff[:, 1].max())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=Path, default=ROOT / ".gpu" / "smoke")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = parser.parse_args()
    result: dict = {"env": environment()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        random_models(args.configs, root)
        result["graphs_vs_eager"] = graphs_match_eager(root)
        print(json.dumps(result, indent=1), flush=True)
        mels = [np.random.default_rng(i).standard_normal((80, 3000)).astype(np.float32) for i in range(4)]
        for label, extra in (("fp16 graphs", {}), ("fp16 eager", {"cuda_graphs": False}),
                             ("fp32 graphs", {"precision": "fp32"})):
            overrides = {name: extra for name in NAMES}
            result[label] = _asr_variant(ModelRepository(root, target="cuda", overrides=overrides), mels)
            print(label, json.dumps(result[label]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_smoke.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
