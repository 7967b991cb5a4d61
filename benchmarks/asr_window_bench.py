"""A shorter Whisper encoder window on the CPU: WER and encoder time per window length (issue 20's CPU gap).

Whisper encodes a fixed 30 s window (3000 mel frames, 1500 positions) however short the utterance, and on the
2-core CPU that encoder pass is most of a final's decode. whisper.cpp's ``audio_ctx`` encodes fewer frames
(the first positional embeddings only) and lets the decoder attend to those. This measures it on the ASR test
set with our PyTorch Whisper (FP32, eager, 2 threads; the weights the stack serves), greedy as the stack
decodes: ``full`` (3000 frames), ``fixedN`` (the first N frames; 100 frames = 1 s) and ``padN`` (the
utterance plus N frames, rounded up to 1 s). Not served yet: an evaluation for a future change.

    python -m benchmarks.asr_window_bench full fixed1000 fixed1500 pad200
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import soundfile as sf
import torch
from torch.nn import functional as F

from benchmarks.asr_wer import wer
from engines.build.ct2 import read_ct2
from engines.build.whisper_torch import load_modules
from engines.repository import ModelRepository
from services.asr.decoding import SlotState, rule_from_config
from services.asr.features import N_FRAMES, log_mel
from services.asr.generation import DECODER_MODEL
from services.asr.tokenizer import WhisperTokenizer
from services.common.settings import cache_root


def frames_for(samples: int, mode: str) -> int:
    """Mel frames to encode for a clip of ``samples`` (16 kHz) under ``mode``."""
    if mode == "full":
        return N_FRAMES
    if mode.startswith("fixed"):
        return min(N_FRAMES, int(mode[5:]))
    if mode.startswith("pad"):
        return min(N_FRAMES, math.ceil((math.ceil(samples / 160) + int(mode[3:])) / 100) * 100)
    raise SystemExit(f"unknown mode {mode!r}: full, fixedN or padN")


class Window:
    """The encoder on the first ``frames`` mel frames, and the greedy decode over its output."""

    def __init__(self, models: Path) -> None:
        self.rule = rule_from_config(ModelRepository(models).resolve(DECODER_MODEL).config)
        self.dims, self.encoder, self.decoder = load_modules(read_ct2(models / "whisper-tiny-en-ct2" / "model.bin"),
                                                             self.rule)
        self.tokenizer = WhisperTokenizer(models / DECODER_MODEL / "tokenizer.json")

    def encode(self, mel, frames: int) -> list[torch.Tensor]:
        enc, h = self.encoder, self.dims.n_head
        x = F.gelu(enc.conv1(torch.from_numpy(mel[None, :, :frames])))
        x = F.gelu(enc.conv2(x)).transpose(1, 2)
        x = x + enc.pos[: x.shape[1]]
        for layer in enc.layers:
            x = layer(x)
        hidden = enc.ln_post(x)
        b, s, d = hidden.shape
        cross = []
        for k, v in zip(enc.cross_k, enc.cross_v, strict=True):
            cross.append(k(hidden).reshape(b, s, h, d // h).permute(0, 2, 3, 1).contiguous())  # [B, H, D/H, S]
            cross.append(v(hidden).reshape(b, s, h, d // h).permute(0, 2, 1, 3).contiguous())  # [B, H, S, D/H]
        return cross

    def transcribe(self, cross: list[torch.Tensor]) -> str:
        state, token = SlotState(self.rule), self.rule.prompt[0]
        layers, d = self.dims.n_text_layer, self.dims.n_state
        keys, values = torch.zeros(1, layers, 0, d), torch.zeros(1, layers, 0, d)
        while True:
            nxt, picked, prob, no_speech, new_k, new_v = self.decoder(
                torch.tensor([[token]]), torch.tensor([state.position]), keys, values, *cross)
            keys, values = torch.cat([keys, new_k], 2), torch.cat([values, new_v], 2)
            token = int(nxt[0])
            if state.advance(int(picked[0]), float(prob[0]), float(no_speech[0])):
                return self.tokenizer.decode(state.result().tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modes", nargs="+", help="full, fixedN (mel frames), padN (utterance + N frames)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    cache = cache_root(os.environ)
    models = Path(os.environ.get("VOXPIPE_MODELS_DIR", cache / "models"))
    testset = cache / "asr-testset"
    refs = json.loads((testset / "references.json").read_text())
    clips = [sf.read(testset / r["file"], dtype="float32")[0] for r in refs]
    mels = [log_mel(c) for c in clips]
    window = Window(models)
    seconds = sorted(len(c) / 16_000 for c in clips)
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {platform.node()}, "
          f"{os.cpu_count()} cores; {len(clips)} clips of {seconds[0]:.1f}-{seconds[-1]:.1f} s")
    print("| window | WER | encoder p50 |\n|---|---|---|")
    with torch.no_grad():
        for mode in args.modes:
            texts, encoder_ms = [], []
            for clip, mel in zip(clips, mels, strict=True):
                started = time.perf_counter()
                cross = window.encode(mel, frames_for(len(clip), mode))
                encoder_ms.append((time.perf_counter() - started) * 1e3)
                texts.append(window.transcribe(cross))
            print(f"| {mode} | {wer([r['text'] for r in refs], texts):.4f} | {statistics.median(encoder_ms):.0f} ms |",
                  flush=True)


if __name__ == "__main__":
    main()
