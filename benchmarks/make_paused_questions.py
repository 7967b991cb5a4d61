"""Spoken questions with pauses in the middle, and the same questions without: the adaptive endpoint's test set.

People pause mid-question ("something like... Toy Story"). Each question of ``QUESTIONS`` is written with its
natural pause points (``|``); its parts are spoken separately by the Piper voice (as ``make_asr_testset``) and
by an espeak-ng voice, trimmed of the synthesiser's own quiet, and joined with a silence drawn from 250-700 ms
(seeded), 300 ms of silence before the speech. The same question spoken whole is the ``complete`` clip. ``references.json`` lists every clip with its
text, its parts and its pauses.

    python -m benchmarks.make_paused_questions [--out ~/.cache/voxpipe/paused-questions]
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

import numpy as np

from benchmarks.make_asr_testset import SAMPLE_RATE_HZ, _write, piper_speaker, speak
from services.common.settings import cache_root

QUESTIONS = (
    "Something like | Toy Story.",
    "Can you recommend a comedy | from the nineties?",
    "Recommend something similar to | The Godfather.",
    "I want to watch | a scary movie.",
    "Show me an action movie | from 1995.",
    "What year did | Casablanca come out?",
    "Tell me about | Star Wars.",
    "Give | Fargo | four stars.",
    "I would like a western | from the seventies.",
    "Recommend a science fiction film | from the | eighties.",
    "Is | Vertigo | any good?",
    "Something like | Fargo, | please.",
    "I loved | Amadeus.",
    "Play me | an animated film | from the nineties.",
    "What is a good | romance movie?",
    "Show me a thriller | like | Seven.",
    "Recommend a horror movie | from the eighties.",
    "Can you find me | a musical?",
    "I'm in the mood for | a documentary.",
    "Something funny | from the | nineties.",
    "Any good war movies | from the sixties?",
    "Tell me more about | Heathers.",
    "Recommend something like | The Big Sleep.",
    "I hated | Batman.",
    "Give | Toy Story | five stars.",
    "What year did | Nosferatu | come out?",
    "Something like | Gattaca.",
    "Recommend a crime film | from the | seventies.",
    "Show me | a children's movie.",
    "I want | a mystery | from the fifties.",
    "How about | a fantasy film?",
    "Do you have | any film noir?",
    "Recommend an adventure movie | like | Raiders of the Lost Ark.",
    "Is | Casablanca | worth watching?",
    "I'd like | a romantic comedy | from the eighties.",
    "Find me something | like | Pulp Fiction.",
)
ESPEAK_VOICE = ("en-us", 160)
LEAD_S = 0.3
PAUSE_MS = (250, 700)


def trimmed(audio: np.ndarray, floor: float = 0.02) -> np.ndarray:
    """``audio`` without the quiet the synthesiser puts before and after the speech (below ``floor`` of its peak),
    so a pause is as long as stated."""
    loud = np.flatnonzero(np.abs(audio) >= floor * np.abs(audio).max())
    return audio[loud[0]:loud[-1] + 1] if len(loud) else audio


def make_set(out: Path, cache: Path, *, seed: int = 20) -> list[dict]:
    """Speak the set into ``out``; returns the ``references.json`` entries."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    piper = piper_speaker(cache)
    speakers = {"piper": lambda text: trimmed(piper(text)), "espeak": lambda text: trimmed(speak(text, *ESPEAK_VOICE))}
    lead = np.zeros(int(LEAD_S * SAMPLE_RATE_HZ), np.float32)
    entries = []
    for i, question in enumerate(QUESTIONS):
        parts = [p.strip() for p in question.split("|")]
        text = " ".join(parts)
        for voice, say in speakers.items():
            pauses = [rng.randint(*PAUSE_MS) for _ in parts[1:]]
            audio = [lead, say(parts[0])]
            for part, pause_ms in zip(parts[1:], pauses, strict=True):
                audio += [np.zeros(pause_ms * SAMPLE_RATE_HZ // 1000, np.float32), say(part)]
            for kind, clip, clip_pauses in (("paused", np.concatenate(audio), pauses),
                                            ("complete", np.concatenate([lead, say(text)]), [])):
                name = f"{kind}-{voice}-{i:02d}.wav"
                _write(out / name, clip)
                entries.append({"file": name, "kind": kind, "voice": voice, "text": text, "parts": parts,
                                "pauses_ms": clip_pauses, "seconds": round(len(clip) / SAMPLE_RATE_HZ, 3)})
    (out / "references.json").write_text(json.dumps(entries, indent=1) + "\n")
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=cache_root(os.environ) / "paused-questions")
    args = parser.parse_args()
    entries = make_set(args.out, cache_root(os.environ))
    print(f"wrote {len(entries)} clips to {args.out}")


if __name__ == "__main__":
    main()
