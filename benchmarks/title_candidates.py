"""Where title recall is lost: by the greedy pass, by the candidate search, or by the decoder's decision.

For every question of the spoken title set (``make_title_testset.py``) whose title the NLP finds in the
reference text, the ASR engines run in-process (the whole clip, the CPU's encoder windows, greedy) and the
question is counted as one of:

* ``heard``: the NLP already finds the title in the greedy transcript;
* ``candidate``: the candidate search at the stage's settings (``[asr] phrase_candidates``,
  ``phrase_min_similarity``) offers a phrase whose insertion lets the NLP find the title, so the decoder
  decides (``title_bench.py`` measures what it decides);
* ``loose candidate``: only a looser search (``--loose-candidates``, ``--loose-similarity``) offers it;
* ``none``: no candidate the search could offer; the first pass is too far from the title.

``heard`` + ``candidate`` bounds the recall boosting can reach at the stage's settings, whatever the boost.

    python -m benchmarks.title_candidates [--loose-candidates 24 --loose-similarity 0.4]
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from functools import partial

import soundfile as sf

from engines.repository import ModelRepository, create_engines
from services.asr.config import AsrConfig
from services.asr.generation import DECODER_MODEL, ENCODER_MODEL, create_generators, transcribe
from services.asr.phrases import PhoneticKeys, PhraseSet, find_candidates
from services.asr.tokenizer import WhisperTokenizer
from services.common.catalog import load_items, spoken_title
from services.common.settings import cache_root, from_env
from services.nlp.extract import EntityExtractor
from services.nlp.text import normalize_text

OUTCOMES = ("heard", "candidate", "loose candidate", "none")


def nlp_titles(extractor: EntityExtractor, text: str) -> list[str]:
    """The title entities the NLP finds in ``text``, normalised as the stage normalises a request."""
    text = normalize_text(text, max_text_chars=2000) if text.strip() else ""
    return [f.value for f in extractor.extract(text) if f.type == "title"] if text else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loose-candidates", type=int, default=24)
    parser.add_argument("--loose-similarity", type=float, default=0.4)
    args = parser.parse_args()
    cache, models = cache_root(os.environ), from_env(os.environ).models_dir
    titles_dir = cache / "title-testset"
    if not (titles_dir / "references.json").is_file():
        raise SystemExit(f"no title set in {titles_dir}: run `python -m benchmarks.make_title_testset` first")
    config = AsrConfig()
    repo = ModelRepository(models)
    encoder = create_engines(repo.resolve(ENCODER_MODEL))[0]
    decoder_model = repo.resolve(DECODER_MODEL)
    generator = create_generators(decoder_model)[0]
    tokenizer = WhisperTokenizer(decoder_model.folder / "tokenizer.json")
    keys = PhoneticKeys()
    catalogue = PhraseSet([(spoken_title(i.title), config.phrase_boost)
                           for i in load_items(models / "recommender" / "items.tsv") if i.year], keys)
    extractor = EntityExtractor(models / "minilm" / "catalog.tsv")

    titles_in = partial(nlp_titles, extractor)

    def offers(raw: str, title: str, limit: int, similarity: float) -> bool:
        found = find_candidates(raw, [catalogue], keys, max_candidates=limit, min_similarity=similarity)
        return any(title in titles_in(tokenizer.decode(tokenizer.encode(c.put_in(raw))))
                   for c in found)

    counts: dict[str, Counter] = {}
    for entry in json.loads((titles_dir / "references.json").read_text()):
        if entry["set"] != "titles" or entry["title"] not in titles_in(entry["text"]):
            continue
        audio, _ = sf.read(titles_dir / entry["file"], dtype="float32")
        greedy = transcribe(encoder, generator, audio, config.windows_s(gpu=False))
        raw = tokenizer.raw_text(greedy.tokens)
        if entry["title"] in titles_in(tokenizer.decode(greedy.tokens)):
            outcome = "heard"
        elif offers(raw, entry["title"], config.phrase_candidates, config.phrase_min_similarity):
            outcome = "candidate"
        elif offers(raw, entry["title"], args.loose_candidates, args.loose_similarity):
            outcome = "loose candidate"
        else:
            outcome = "none"
        voice = "piper" if entry["voice"].startswith("piper") else "espeak-ng"
        for group in (voice, "all"):
            counts.setdefault(group, Counter())[outcome] += 1
    print(f"| voices | questions | {' | '.join(OUTCOMES)} | heard + candidate |")
    print(f"|---|---|{'---|' * len(OUTCOMES)}---|")
    for group in ("all", "piper", "espeak-ng"):
        c, n = counts.get(group, Counter()), sum(counts.get(group, Counter()).values())
        cells = " | ".join(f"{c[o]} ({c[o] / max(n, 1):.1%})" for o in OUTCOMES)
        print(f"| {group} | {n} | {cells} | {(c['heard'] + c['candidate']) / max(n, 1):.1%} |")


if __name__ == "__main__":
    main()
