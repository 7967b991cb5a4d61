"""Whisper tiny.en in INT8 on the CPU (issue 20, part 3): does dynamic INT8 hold the accuracy bar?

ONNX Runtime's dynamic quantisation (``quantize_dynamic``: INT8 weights per output channel, activations
quantised per call; MatMul and Gemm) of the built FP32 encoder and decoder graphs, in three variants (both,
the decoder only, the encoder only), each against FP32 in the same process on the ASR test set (the
greedy transcript of every clip, unbatched): corpus WER (``benchmarks.asr_wer``), the encoder's and the greedy
decode's time per clip (p50), and how many transcripts are identical. The bar: WER at most +0.005.

    python -m benchmarks.asr_int8_bench
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import soundfile as sf

from benchmarks.asr_wer import wer
from engines.repository import ModelRepository, create_engines
from services.asr.features import log_mel
from services.asr.generation import DECODER_MODEL, ENCODER_MODEL, create_generators, encoder_batch_fn
from services.asr.tokenizer import WhisperTokenizer
from services.common.settings import cache_root

VARIANTS = {"encoder + decoder": (ENCODER_MODEL, DECODER_MODEL), "decoder only": (DECODER_MODEL,),
            "encoder only": (ENCODER_MODEL,)}
MAX_WER_INCREASE = 0.005


def quantised_copy(models: Path, names: tuple[str, ...], to: Path) -> Path:
    """A model repository with ``names``' ONNX graphs in dynamic INT8 (the rest as built)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for name in (ENCODER_MODEL, DECODER_MODEL):
        shutil.copytree(models / name, to / name, ignore=shutil.ignore_patterns("*.safetensors"))
    for name in names:
        quantize_dynamic(str(models / name / "model.onnx"), str(to / name / "model.onnx"), weight_type=QuantType.QInt8,
                         per_channel=True, op_types_to_quantize=["MatMul", "Gemm"])
    return to


def transcribe_all(root: Path, clips: list[Path]) -> tuple[list[str], list[float], list[float]]:
    """Greedy transcripts of ``clips`` with the models in ``root``; encoder and decode ms per clip."""
    repo = ModelRepository(root)
    encode = encoder_batch_fn(create_engines(repo.resolve(ENCODER_MODEL))[0])
    generator = create_generators(repo.resolve(DECODER_MODEL))[0]
    tokenizer = WhisperTokenizer(root / DECODER_MODEL / "tokenizer.json")
    texts, encoder_ms, decode_ms = [], [], []
    for clip in clips:
        audio, _ = sf.read(clip, dtype="float32")
        mel = log_mel(audio)
        started = time.perf_counter()
        encoded = encode([mel])[0]
        encoded_at = time.perf_counter()
        generator.prefill([(0, encoded)])
        while not (finished := generator.step([0])):
            pass
        generator.release(0)
        encoder_ms.append((encoded_at - started) * 1e3)
        decode_ms.append((time.perf_counter() - encoded_at) * 1e3)
        texts.append(tokenizer.decode(finished[0].tokens))
    return texts, encoder_ms, decode_ms


def main() -> None:
    cache = cache_root(os.environ)
    models = Path(os.environ.get("VOXPIPE_MODELS_DIR", cache / "models"))
    testset = cache / "asr-testset"
    refs = json.loads((testset / "references.json").read_text())
    clips = [testset / r["file"] for r in refs]
    references = [r["text"] for r in refs]
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {platform.node()}, "
          f"{os.cpu_count()} cores; {len(clips)} clips of the ASR test set")
    print("| INT8 | WER FP32 -> INT8 | encoder p50 | decode p50 | identical transcripts | bar (+0.005) |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for label, names in VARIANTS.items():
            root = quantised_copy(models, names, Path(tmp) / label.replace(" ", "_"))
            fp32, fp32_enc, fp32_dec = transcribe_all(models, clips)
            int8, int8_enc, int8_dec = transcribe_all(root, clips)
            w32, w8 = wer(references, fp32), wer(references, int8)
            same = sum(a == b for a, b in zip(fp32, int8, strict=True))
            print(f"| {label} | {w32:.4f} -> {w8:.4f} ({w8 - w32:+.4f}) | {statistics.median(fp32_enc):.0f} -> "
                  f"{statistics.median(int8_enc):.0f} ms | {statistics.median(fp32_dec):.0f} -> "
                  f"{statistics.median(int8_dec):.0f} ms | {same}/{len(clips)} | "
                  f"{'held' if w8 - w32 <= MAX_WER_INCREASE else 'MISSED'} |", flush=True)


if __name__ == "__main__":
    main()
