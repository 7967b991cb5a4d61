"""The spoken benchmark sets are the same clips wherever they are spoken again (benchmarks/make_asr_testset.py):
the Piper voice's sampling is seeded, and a set's digest names the clips a run heard."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.make_asr_testset import PIPER_VOICE, _write, has_piper_half, set_digest

ROOT = Path(__file__).resolve().parents[2]
# Speaks two texts with a new Piper speaker (the voice's wheel fetched by `voxpipe build`) and writes them.
SPEAK = """
import os, sys
import numpy as np
from benchmarks.make_asr_testset import piper_speaker
from services.common.settings import cache_root
speak = piper_speaker(cache_root(os.environ))
np.savez(sys.argv[1], *[speak(t) for t in ("what year did nosferatu come out", "is sabrina any good")])
"""


def test_the_piper_clips_are_the_same_in_every_process(tmp_path):
    # A process of its own each: unseeded, ONNX Runtime seeds its generator once per process.
    clips = []
    for name in ("first.npz", "second.npz"):
        subprocess.run([sys.executable, "-c", SPEAK, str(tmp_path / name)], cwd=ROOT, check=True, timeout=120)
        with np.load(tmp_path / name) as saved:
            clips.append([saved[k] for k in sorted(saved.files)])
    for a, b in zip(*clips, strict=True):
        assert a.size > 8_000 and np.abs(a).max() > 0.05  # speech, not silence
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(clips[0][0][:8_000], clips[0][1][:8_000])  # two texts, two clips


def test_the_digest_names_the_clips_and_their_order(tmp_path):
    entries = [{"file": "a.wav"}, {"file": "b.wav"}]
    _write(tmp_path / "a.wav", np.zeros(1600, np.float32))
    _write(tmp_path / "b.wav", np.full(1600, 0.5, np.float32))
    digest = set_digest(tmp_path, entries)
    assert digest == set_digest(tmp_path, [dict(e) for e in entries])
    assert digest != set_digest(tmp_path, entries[::-1])
    _write(tmp_path / "b.wav", np.full(1600, 0.25, np.float32))
    assert digest != set_digest(tmp_path, entries)


def test_a_set_made_without_the_piper_voice_is_not_the_benchmarks_set(tmp_path):
    # title_bench --keep-sets and gpu_bundle keep a cached ASR set only if it has its Piper half; one made by hand
    # with `make_asr_testset` (no --piper) is other clips, and is spoken again.
    assert not has_piper_half(tmp_path)  # no set
    (tmp_path / "references.json").write_text("not json")
    assert not has_piper_half(tmp_path)
    espeak = {"id": "q00", "voice": "en-us", "file": "q00.wav"}
    (tmp_path / "references.json").write_text(json.dumps([espeak]))
    assert not has_piper_half(tmp_path)
    piper = {"id": "p00", "voice": PIPER_VOICE, "file": "p00.wav"}
    (tmp_path / "references.json").write_text(json.dumps([espeak, piper]))
    assert has_piper_half(tmp_path)
