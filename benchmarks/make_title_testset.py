"""Make the spoken title test set: questions naming MovieLens titles, and questions naming none.

* ``titles``: questions about one catalogue title each ("something like Gattaca", "what year did Nosferatu
  come out"), rare, old and foreign titles over-represented (the ones Whisper tiny has rarely heard), plus
  the titles users reported as misheard. The question list is ``benchmarks/data/title_questions.jsonl``
  (kept in the repository so every run measures the same set; ``--pick`` regenerates it from the
  catalogue with a fixed seed).
* ``none``: the NLP held-out questions that name no title (``tests/data/nlp_heldout*.jsonl``): boosting
  must not put titles into them.

Every title question is spoken twice: by the Piper voice, and by one of six espeak-ng voices/rates in turn
(``make_asr_testset.py``); a question naming none by one of the seven in turn. Writes 16 kHz mono WAVs and ``references.json`` (id, set, text, title, item_id,
voice, file, seconds) into ``--out`` (default ``~/.cache/voxpipe/title-testset``).

    python benchmarks/make_title_testset.py [--out DIR] [--pick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
from pathlib import Path

from benchmarks.make_asr_testset import PIPER_VOICE, SAMPLE_RATE_HZ, VOICES, _write, piper_speaker, speak
from services.common.catalog import CatalogItem, load_items, spoken_title
from services.common.settings import cache_root

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ROOT / "benchmarks" / "data" / "title_questions.jsonl"
NONE_SOURCES = (ROOT / "tests" / "data" / "nlp_heldout.jsonl", ROOT / "tests" / "data" / "nlp_heldout_blind.jsonl")
ALL_VOICES = (*(f"{v}@{r}" for v, r in VOICES), PIPER_VOICE)

TEMPLATES = (
    "something like {}", "what year did {} come out", "i loved {}", "give {} four stars",
    "tell me about {}", "recommend something similar to {}", "is {} any good", "i hated {}",
)
# Reported misheard by users (issue 19); always in the set.
REPORTED = ("Gattaca", "Nosferatu", "Amadeus", "Heathers", "Vertigo", "Casablanca")
_SPEAKABLE = re.compile(r"^[A-Za-z][A-Za-z' .&-]*$")


def pick_questions(items: list[CatalogItem], *, n: int = 126, seed: int = 19) -> list[dict]:
    """``n`` title questions: the reported titles, then rare (< 20 ratings), old (before 1960), foreign
    (an alternative title in brackets) and popular (>= 200 ratings) titles in the ratio 4:3:3:1."""
    rng = random.Random(seed)
    usable = [i for i in items if i.year and _SPEAKABLE.match(spoken_title(i.title))
              and 1 <= len(spoken_title(i.title).split()) <= 5]
    by_spoken: dict[str, CatalogItem] = {}
    for item in usable:
        by_spoken.setdefault(spoken_title(item.title).lower(), item)
    chosen: dict[int, CatalogItem] = {}
    for name in REPORTED:
        item = by_spoken[name.lower()]
        chosen[item.item_id] = item
    pools = {
        "rare": [i for i in usable if i.count < 20],
        "old": [i for i in usable if i.year < 1960],
        "foreign": [i for i in usable if "(" in i.title],
        "popular": [i for i in usable if i.count >= 200],
    }
    shares = {"rare": 4, "old": 3, "foreign": 3, "popular": 1}
    for pool in pools.values():
        rng.shuffle(pool)
    while len(chosen) < n:
        for kind, share in shares.items():
            for _ in range(share):
                while pools[kind] and pools[kind][-1].item_id in chosen:
                    pools[kind].pop()
                if pools[kind] and len(chosen) < n:
                    item = pools[kind].pop()
                    chosen[item.item_id] = item
    out = []
    for k, item in enumerate(chosen.values()):
        text = TEMPLATES[k % len(TEMPLATES)].format(spoken_title(item.title).lower())
        out.append({"text": text, "title": item.title, "item_id": item.item_id, "year": item.year,
                    "ratings": item.count})
    return out


def none_questions() -> list[dict]:
    """The NLP held-out questions that name no title."""
    rows = [json.loads(line) for path in NONE_SOURCES for line in path.read_text().splitlines() if line.strip()]
    return [{"text": r["text"], "title": "", "item_id": 0} for r in rows if not r["title"]]


def make_set(out: Path, cache: Path) -> list[dict]:
    """Speak both sets into ``out``; returns the ``references.json`` entries."""
    out.mkdir(parents=True, exist_ok=True)
    speak_piper = piper_speaker(cache)
    titles = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    espeak_voices = [v for v in ALL_VOICES if v != PIPER_VOICE]
    plan = [("titles", f"t{i:03d}", q, espeak_voices[i % len(espeak_voices)]) for i, q in enumerate(titles)]
    plan += [("titles", f"p{i:03d}", q, PIPER_VOICE) for i, q in enumerate(titles)]
    plan += [("none", f"n{i:03d}", q, ALL_VOICES[i % len(ALL_VOICES)]) for i, q in enumerate(none_questions())]
    entries = []
    for kind, clip, q, voice in plan:
        if voice == PIPER_VOICE:
            audio = speak_piper(q["text"])
        else:
            name, rate = voice.split("@")
            audio = speak(q["text"], name, int(rate))
        _write(out / f"{clip}.wav", audio)
        entries.append({"id": clip, "set": kind, "text": q["text"], "title": q["title"], "item_id": q["item_id"],
                        "voice": voice, "file": f"{clip}.wav", "seconds": round(len(audio) / SAMPLE_RATE_HZ, 3)})
    (out / "references.json").write_text(json.dumps(entries, indent=1) + "\n")
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=cache_root(os.environ) / "title-testset")
    parser.add_argument("--pick", action="store_true",
                        help=f"regenerate {QUESTIONS.relative_to(ROOT)} from the catalogue (needs `voxpipe build`)")
    args = parser.parse_args()
    if args.pick:
        items = load_items(cache_root(os.environ) / "models" / "recommender" / "items.tsv")
        QUESTIONS.parent.mkdir(parents=True, exist_ok=True)
        QUESTIONS.write_text("".join(json.dumps(q) + "\n" for q in pick_questions(items)))
        print(f"wrote {QUESTIONS}")
    entries = make_set(args.out, cache_root(os.environ))
    print(f"wrote {len(entries)} clips to {args.out}")


if __name__ == "__main__":
    main()
