"""Every stage on CUDA against its CPU FP32 output, on each stage's own metric (skips cleanly without CUDA).

ASR WER on the ASR test set within +0.005 of CPU FP32; NLP intents identical and embedding cosine >= 0.999;
recommender top-10 identical for >= 99 % of queries; TTS round trip (our voice -> our ASR) within one WER
point. The CPU side is computed here from the built ONNX models, or read from ``VOXPIPE_PARITY_REFERENCE``
(the GPU machine gets it from ``benchmarks/gpu_bundle.py``, with the data in ``VOXPIPE_PARITY_DATA``);
``VOXPIPE_PARITY_OUT`` names a file for the figures.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engines.device import cuda_problem
from services.common.settings import cache_root

pytestmark = pytest.mark.skipif(cuda_problem() is not None, reason=f"no usable CUDA GPU: {cuda_problem()}")


@pytest.fixture(scope="module")
def parity() -> dict:
    from benchmarks import gpu_parity

    models = Path(os.environ.get("VOXPIPE_MODELS_DIR", cache_root(os.environ) / "models"))
    data = Path(os.environ.get("VOXPIPE_PARITY_DATA", cache_root(os.environ) / "gpu-parity-data"))
    if not (data / "asr-testset" / "references.json").is_file() or not (data / "nlp_heldout.jsonl").is_file():
        pytest.skip(f"no parity data in {data} (benchmarks/gpu_bundle.py prepares it)")
    reference_file = os.environ.get("VOXPIPE_PARITY_REFERENCE")
    reference = json.loads(Path(reference_file).read_text()) if reference_file else \
        gpu_parity.collect(models, "cpu", data)
    gpu = gpu_parity.collect(models, "cuda", data, query_embeddings=reference["nlp"]["embeddings"])
    result = gpu_parity.compare(reference, gpu)
    if out := os.environ.get("VOXPIPE_PARITY_OUT"):  # the benchmark records the figures
        Path(out).write_text(json.dumps(result, indent=1, default=float))
    return result


@pytest.mark.parametrize("metric", ["asr_wer", "nlp", "recommender", "tts_round_trip_wer"])
def test_gpu_matches_cpu_fp32(parity, metric):
    assert parity[metric]["met"], f"{metric}: {parity[metric]}"
