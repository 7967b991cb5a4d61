"""Encoder windows on the CPU: WER and time of the served ONNX Whisper, 30 s window vs shorter ones, same run.

Whisper encodes a fixed 30 s window (3000 mel frames) however short the utterance, and on the 2-core CPU that
encoder pass is most of a final's decode. The ASR stage encodes each utterance in the shortest of its
``[asr] encoder_windows_s`` that the utterance fills at most half of (``services/asr/features.py``). This runs
the served engines (ONNX Runtime, FP32, greedy, unbatched: ``services/asr/generation.py``) on

* the ASR test set (``make_asr_testset``: short questions, 1-3 s), and
* long utterances: 2 to 7 of its clips joined by 0.3-0.6 s of silence (seeded), binned by length,

once per window set given (e.g. ``30`` and ``10,20,30``), and prints WER and the encoder and decode p50 per
set and bin. Phrase boosting is not applied (it rescores the same encoder output in either case).

    flock /tmp/voxpipe-bench.lock .venv/bin/python -m benchmarks.asr_window_bench 30 10,20,30
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from benchmarks.asr_wer import wer
from engines.repository import ModelRepository, create_engines
from services.asr.features import SAMPLE_RATE_HZ, log_mel, window_frames
from services.asr.generation import DECODER_MODEL, ENCODER_MODEL, create_generators, encoder_batch_fn
from services.asr.tokenizer import WhisperTokenizer
from services.common.settings import cache_root

BINS_S = ((0, 5), (5, 10), (10, 15), (15, 22))


def long_utterances(clips: list[np.ndarray], texts: list[str], *, seed: int = 7) -> list[tuple[np.ndarray, str]]:
    """Utterances of 2 to 7 test clips joined by 0.3-0.6 s of silence, with their joined references."""
    rng = random.Random(seed)
    joined = []
    for n in (2, 3, 4, 5, 6, 7):
        for _ in range(12):
            picks = rng.sample(range(len(clips)), n)
            parts: list[np.ndarray] = []
            for i in picks:
                parts += [clips[i], np.zeros(int(SAMPLE_RATE_HZ * rng.uniform(0.3, 0.6)), np.float32)]
            joined.append((np.concatenate(parts[:-1]), " ".join(texts[i] for i in picks)))
    return joined


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("windows", nargs="+", help="window sets in seconds, comma-separated, each ending at 30")
    args = parser.parse_args()
    sets = [tuple(float(w) for w in arg.split(",")) for arg in args.windows]
    cache = cache_root(os.environ)
    repo = ModelRepository(Path(os.environ.get("VOXPIPE_MODELS_DIR", cache / "models")))
    encoder_model, decoder_model = repo.resolve(ENCODER_MODEL), repo.resolve(DECODER_MODEL)
    encode = encoder_batch_fn(create_engines(encoder_model)[0])
    generator = create_generators(decoder_model)[0]
    tokenizer = WhisperTokenizer(decoder_model.folder / "tokenizer.json")
    testset = cache / "asr-testset"
    refs = json.loads((testset / "references.json").read_text())
    clips = [sf.read(testset / r["file"], dtype="float32")[0] for r in refs]
    items = [(c, r["text"]) for c, r in zip(clips, refs, strict=True)]
    items += long_utterances(clips, [r["text"] for r in refs])
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {platform.node()}, "
          f"{os.cpu_count()} cores; {len(clips)} test clips and {len(items) - len(clips)} joined ones")
    print("| utterances | n | " + " | ".join(f"windows {','.join(f'{w:g}' for w in s)}: WER, encoder p50, "
                                           "decode p50" for s in sets) + " |")
    print("|---|---|" + "---|" * len(sets))
    rows: dict[tuple[int, int], list[str]] = {b: [] for b in BINS_S}
    for windows in sets:
        texts, encoder_ms, decode_ms = [], [], []
        for audio, _ in items:
            started = time.perf_counter()
            encoded = encode([log_mel(audio, window_frames(len(audio), windows))])[0]
            encoder_ms.append((time.perf_counter() - started) * 1e3)
            started = time.perf_counter()
            generator.prefill([(0, encoded)])
            while not (finished := generator.step([0])):
                pass
            generator.release(0)
            decode_ms.append((time.perf_counter() - started) * 1e3)
            texts.append(tokenizer.decode(finished[0].tokens))
        for lo, hi in BINS_S:
            sel = [i for i, (a, _) in enumerate(items) if lo <= len(a) / SAMPLE_RATE_HZ < hi]
            rows[(lo, hi)].append(f"{wer([items[i][1] for i in sel], [texts[i] for i in sel]):.4f}, "
                                  f"{statistics.median(encoder_ms[i] for i in sel):.0f} ms, "
                                  f"{statistics.median(decode_ms[i] for i in sel):.0f} ms")
    for (lo, hi), cells in rows.items():
        n = sum(lo <= len(a) / SAMPLE_RATE_HZ < hi for a, _ in items)
        print(f"| {lo}-{hi} s | {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
