"""Offline study: titles proposed by the decoder itself, a beam search held to the catalogue (issue 19; not served).

The served booster's candidates come from the greedy transcript's sound (``services/asr/phrases.py``): a title
the first pass heard as nothing like it ("something like the key" for *Nikita*) is never a candidate, which
bounds recall at ~85 % on the spoken title set. Here the decoder proposes titles from the audio: from each word
start of the greedy transcript (and its end), a beam search whose tokens must spell a catalogue title (a token
trie of every title as the booster writes it in), scored by the decoder's own log-probabilities with the
greedy rule's masks. A finished title is continued by the greedy rule to the end token, and the alternative
(greedy prefix, title, continuation) is scored against the greedy transcript by the forced decode
(``WhisperDecoder.score``), as the served rule scores its alternatives.

Per alternative the rows keep what a decision rule may read: ``margin`` (log P(alternative) - log P(greedy),
nats), the title's tokens, the greedy span it replaced and the phonetic similarity of the two
(``services/asr/phrases``' keys), and the titles the NLP finds in it. The summary then decides, per rule, between
the served final (``--served``, a ``title_bench.py --json`` of the same clips; else the greedy text) and the
best alternative the rule accepts, and reports recall, false titles and WER. Rules are chosen on one half of the
clips (even index) and reported on the other (odd), so the figures are not fitted to the clips they report.

    VOXPIPE_DEVICE=cuda ... python3 -m benchmarks.title_trie_study --out rows.jsonl [--sample 8]
    python -m benchmarks.title_trie_study --rows rows.jsonl --served docs/bench/titles-cpu-nlp-aliases-2.json --out s.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf
from rapidfuzz.distance import Levenshtein

from benchmarks.title_candidates import nlp_titles
from benchmarks.title_prompt_study import Decoder, score, served_finals, study_clips, write_summary
from engines.repository import ModelRepository, create_engines
from services.asr.boosting import written_form
from services.asr.config import AsrConfig
from services.asr.features import log_mel, window_frames
from services.asr.generation import DECODER_MODEL, ENCODER_MODEL, encoder_batch_fn, rule_from_config
from services.asr.phrases import ARTICLES, PhoneticKeys
from services.asr.tokenizer import WhisperTokenizer
from services.common.catalog import load_items, spoken_title
from services.common.settings import cache_root, from_env
from services.nlp.extract import EntityExtractor


@dataclass
class Trie:
    """Token trie of the titles: node 0 is the root; ``ends[node]`` the titles spelled by the path to it."""

    children: list[dict[int, int]] = field(default_factory=lambda: [{}])
    ends: dict[int, list[str]] = field(default_factory=dict)

    def add(self, tokens: list[int], title: str) -> None:
        node = 0
        for t in tokens:
            nxt = self.children[node].get(t)
            if nxt is None:
                nxt = len(self.children)
                self.children[node][t] = nxt
                self.children.append({})
            node = nxt
        self.ends.setdefault(node, []).append(title)


@dataclass
class Found:
    """A title the beam search finished from text position ``start``: its tokens and their log-probability."""

    start: int
    title: str
    tokens: list[int]
    logprob: float


class TrieSearch:
    """The decoder stepped with a cache per row (rows at their own positions), for the two searches below."""

    def __init__(self, decoder: Decoder, trie: Trie) -> None:
        self.d, self.trie = decoder, trie
        self.torch = decoder.torch
        m = decoder.module
        self.layers, self.width = len(m.layers), m.dims.n_state

    def _forward(self, tokens, positions, keys, values, cross):
        """Feed ``tokens`` [R] at ``positions`` [R] with caches [R, L, P, D]; write the new K/V in place; the
        rows' masked log-softmax at the next position [R, V] (text step 0 masks as the greedy rule does)."""
        torch, m = self.torch, self.d.module
        rows = tokens.shape[0]
        assert torch.is_inference_mode_enabled()
        cross = [c.expand(rows, *c.shape[1:]) for c in cross]
        *_, hidden, new_k, new_v = m(tokens[:, None], positions, keys, values, *cross)
        index = torch.arange(rows, device=tokens.device)
        keys[index, :, positions] = new_k[:, :, 0]
        values[index, :, positions] = new_v[:, :, 0]
        logits = hidden.float() @ m._projection
        first = (positions + 1 == len(self.d.rule.prompt))[:, None]
        mask = m.mask_always[None] | (first & m.mask_first[None])
        return torch.log_softmax(logits.masked_fill(mask, float("-inf")), -1)

    def _cache(self, rows: int, length: int):
        z = self.torch.zeros((rows, self.layers, length, self.width), dtype=self.d.dtype, device=self.d.device)
        return z, z.clone()

    def titles(self, greedy: list[int], starts: list[int], cross, beam: int) -> list[Found]:
        """Every title finished by a beam of ``beam`` rows per start (text positions of ``greedy``)."""
        torch, prompt = self.torch, list(self.d.rule.prompt)
        dev = self.d.device
        seq = prompt + greedy
        # The greedy prefix once: the cache of every position, and the distribution at each.
        keys, values = self._cache(1, len(seq) + 40)
        at = []
        for p, tok in enumerate(seq):
            at.append(self._forward(torch.tensor([tok], device=dev), torch.tensor([p], device=dev), keys, values, cross)[0])
        # Rows: (start, node, tokens, logprob); row r's next distribution in ``dist[r]``.
        rows = [(s, 0, [], 0.0) for s in starts]
        dist = torch.stack([at[len(prompt) - 1 + s] for s in starts])
        rk, rv = keys.expand(len(starts), -1, -1, -1).clone(), values.expand(len(starts), -1, -1, -1).clone()
        found: list[Found] = []
        for _ in range(40):
            expansions: dict[int, list[tuple[float, int, int, int]]] = {}
            for r, (s, node, _toks, lp) in enumerate(rows):
                kids = self.trie.children[node]
                if not kids:
                    continue
                ids = list(kids)
                scores = dist[r, ids].tolist()
                expansions.setdefault(s, []).extend((lp + sc, r, t, kids[t]) for t, sc in zip(ids, scores, strict=True))
            kept = []
            for s, options in expansions.items():
                options = [o for o in options if o[0] > -1e30]
                options.sort(key=lambda o: -o[0])
                for lp, r, t, child in options[:beam]:
                    toks = rows[r][2] + [t]
                    for title in self.trie.ends.get(child, []):
                        found.append(Found(s, title, toks, lp))
                    if self.trie.children[child]:
                        kept.append((s, child, toks, lp, r, t))
            if not kept:
                break
            parents = torch.tensor([k[4] for k in kept], device=dev)
            rk, rv = rk[parents].clone(), rv[parents].clone()
            positions = torch.tensor([len(prompt) + k[0] + len(k[2]) - 1 for k in kept], device=dev)
            dist = self._forward(torch.tensor([k[5] for k in kept], device=dev), positions, rk, rv, cross)
            rows = [(s, child, toks, lp) for s, child, toks, lp, _, _ in kept]
        return found

    def complete(self, prefixes: list[list[int]], cross, max_new: int) -> list[list[int]]:
        """Each row's text tokens after its forced ``prefix`` (prompt + text), then the greedy rule's picks to
        the end token (at most ``max_new``)."""
        torch, dev, eot = self.torch, self.d.device, self.d.rule.eot
        n = len(prefixes)
        longest = max(map(len, prefixes))
        keys, values = self._cache(n, longest + max_new + 1)
        out = [list(p[len(self.d.rule.prompt):]) for p in prefixes]
        done = [False] * n
        token = torch.tensor([p[0] for p in prefixes], device=dev)
        for p in range(longest + max_new):
            lp = self._forward(token, torch.full((n,), p, device=dev), keys, values, cross)
            picks = lp.argmax(-1).tolist()
            nxt = []
            for r, prefix in enumerate(prefixes):
                if p + 1 < len(prefix):
                    nxt.append(prefix[p + 1])
                    continue
                if not done[r]:
                    done[r] = picks[r] == eot or len(out[r]) >= len(prefix) - len(self.d.rule.prompt) + max_new
                    if not done[r]:
                        out[r].append(picks[r])
                nxt.append(picks[r] if not done[r] else eot)
            if all(done):
                break
            token = torch.tensor(nxt, device=dev)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON lines: one per clip, then the summary")
    parser.add_argument("--beam", type=int, default=8, help="beam rows per start position")
    parser.add_argument("--per-start", type=int, default=3, help="titles per start continued and scored")
    parser.add_argument("--sample", type=int, default=1, metavar="K", help="every K-th clip only (a check)")
    parser.add_argument("--shard", default="0/1", metavar="I/N")
    parser.add_argument("--served", type=Path, help="a title_bench.py --json of the same clips: its final texts")
    parser.add_argument("--rows", type=Path, nargs="+", help="summarise earlier --out rows instead of decoding")
    args = parser.parse_args()
    shard, shards = map(int, args.shard.split("/"))
    settings = from_env(os.environ)
    cache, models = cache_root(os.environ), settings.models_dir
    target = os.environ.get("VOXPIPE_DEVICE", "cpu")
    extractor = EntityExtractor(models / "minilm" / "catalog.tsv")
    titles_in = partial(nlp_titles, extractor)
    keys = PhoneticKeys()
    out = args.out.open("w")
    if args.rows:
        rows = [r for f in args.rows for r in map(json.loads, f.read_text().splitlines()) if "summary" not in r]
    else:
        rows = decode_rows(args, cache, models, target, titles_in, keys, shard, shards, out)
    summary = summarise(rows, served_finals(args.served), titles_in)
    write_summary(out, summary, rows, with_rows=bool(args.rows))
    print(json.dumps(summary, indent=1))


def decode_rows(args, cache: Path, models: Path, target: str, titles_in, keys: PhoneticKeys, shard: int,
                shards: int, out) -> list[dict]:
    repo = ModelRepository(models, target=target)
    decoder_model = repo.resolve(DECODER_MODEL)
    rule = rule_from_config(decoder_model.config)
    tokenizer = WhisperTokenizer(decoder_model.folder / "tokenizer.json")
    windows = AsrConfig().windows_s(gpu=target == "cuda")
    written = partial(written_form, tokenizer=tokenizer, rule=rule)
    trie = Trie()
    for item in load_items(models / "recommender" / "items.tsv"):
        if not item.year:
            continue
        title = spoken_title(item.title)
        form = written(title)
        forms = {form}
        first, _, rest = form.partition(" ")
        if first.lower() in ARTICLES and rest:
            forms.add(f"{first.lower()} {rest}")  # "something like the Sting"
        for f in forms:
            trie.add(tokenizer.encode(" " + f), title)
    encode = encoder_batch_fn(create_engines(repo.resolve(ENCODER_MODEL))[0])
    decoder = Decoder.load(decoder_model, target, 0)
    clip = Clip(decoder, TrieSearch(decoder, trie), tokenizer, keys, titles_in, args.beam, args.per_start)
    rows = []
    for path, head in study_clips(cache, titles_in, args.sample)[shard::shards]:
        started = time.perf_counter()
        audio, _ = sf.read(path, dtype="float32")
        cross = decoder.cross(encode([log_mel(audio, window_frames(len(audio), windows))])[0])
        rows.append({**head, "device": f"{platform.node()}, {target}", **clip.run(cross),
                     "seconds": round(time.perf_counter() - started, 3)})
        out.write(json.dumps(rows[-1]) + "\n")
        out.flush()
    return rows


@dataclass
class Clip:
    """One clip's greedy pass, the titles the trie search finds, and both forms of alternative, scored."""

    decoder: Decoder
    search: TrieSearch
    tokenizer: WhisperTokenizer
    keys: PhoneticKeys
    titles_in: Callable[[str], list[str]]
    beam: int
    per_start: int

    def run(self, cross) -> dict:
        decoder, tokenizer, rule = self.decoder, self.tokenizer, self.decoder.rule
        greedy = decoder.decode(list(rule.prompt), cross, [0.0])[0]
        starts = [i for i in range(len(greedy) + 1)
                  if i == 0 or i == len(greedy) or tokenizer.raw_text([greedy[i]]).startswith(" ")]
        boost = AsrConfig().phrase_boost
        with decoder.torch.inference_mode():
            found = self.search.titles(greedy, starts, cross, self.beam)
        by_start: dict[int, list[Found]] = {}
        for f in found:
            by_start.setdefault(f.start, []).append(f)
        chosen: list[Found] = []
        for fs in by_start.values():
            by_lp = sorted(fs, key=lambda f: -f.logprob)[:self.per_start]
            by_boost = sorted(fs, key=lambda f: -(f.logprob + boost * len(f.tokens)))[:self.per_start]
            chosen += list({id(f): f for f in by_lp + by_boost}.values())
        prompt = list(rule.prompt)
        with decoder.torch.inference_mode():
            continued = self.search.complete([prompt + greedy[:f.start] + f.tokens for f in chosen], cross,
                                             len(greedy) + 8) if chosen else []
        # The rejoined form: the title replaces the greedy words from its start to one of the next word starts
        # (or none), and the greedy transcript goes on from there: no continuation decode, one scoring call.
        rejoined = [(f, greedy[:f.start] + f.tokens + greedy[j:]) for f in chosen
                    for j in starts if f.start <= j <= f.start + 12]
        scores = decoder.logprobs([greedy] + continued + [alt for _, alt in rejoined], cross)
        heard = set(self.titles_in(tokenizer.decode(greedy)))
        margins = [lp - scores[0] for lp in scores[1:]]
        best: dict[int, dict] = {}
        for (f, alt), margin in zip(rejoined, margins[len(continued):], strict=True):
            if id(f) not in best or margin > best[id(f)]["margin"]:
                best[id(f)] = self.described(f, alt, margin, greedy, heard)
        return {"greedy": tokenizer.decode(greedy), "starts": len(starts), "found": len(found),
                "alternatives": [self.described(f, alt, m, greedy, heard)
                                 for f, alt, m in zip(chosen, continued, margins, strict=False)],
                "rejoined": list(best.values()), "rejoined_rows": len(rejoined)}

    def described(self, f: Found, alt: list[int], margin: float, greedy: list[int], heard: set[str]) -> dict:
        """An alternative as the rows keep it: the greedy span it replaced (the words before their common
        suffix) and its phonetic similarity to the title, its text and the titles the NLP finds there anew."""
        after = 0
        while after < min(len(alt), len(greedy)) - f.start and alt[-1 - after] == greedy[-1 - after]:
            after += 1
        span = self.tokenizer.raw_text(greedy[f.start:len(greedy) - after]).strip()
        text = self.tokenizer.decode(alt)
        similarity = Levenshtein.normalized_similarity(self.keys.text(span), self.keys.text(f.title)) if span else 0.0
        return {"start": f.start, "title": f.title, "title_tokens": len(f.tokens), "title_logprob": round(f.logprob, 3),
                "margin": round(margin, 3), "span": span, "similarity": round(similarity, 3), "text": text,
                "new_titles": sorted(set(self.titles_in(text)) - heard)}


# Boost 0 lets no alternative win: the base, always allowed.
RULES = {"boost": (0.0, 1.0, 2.0, 3.0, 4.0), "min_similarity": (0.0, 0.3, 0.4, 0.5, 0.6),
         "min_margin": (-1e9, -10.0, -5.0, 0.0)}


def final_text(alternatives: list[dict], base: str, boost: float, min_similarity: float, min_margin: float) -> str:
    """``base`` (the served or greedy final) unless an alternative with a new title wins by the rule."""
    best, text = 0.0, base
    for a in alternatives:
        if not a["new_titles"] or a["similarity"] < min_similarity or a["margin"] < min_margin:
            continue
        value = a["margin"] + boost * a["title_tokens"]
        if value > best:
            best, text = value, a["text"]
    return text


def split_scores(rows: list[dict], texts: list[str], titles_in) -> dict[str, dict]:
    """``score`` of one final text per row on the fit half (the even rows, which choose a rule), the held-out half
    (the odd ones, which report it) and all rows."""
    out = {half: score(rows[first::2], texts[first::2], titles_in) for half, first in (("fit", 0), ("held_out", 1))}
    return {**out, "all": score(rows, texts, titles_in)}


def fit_rule(rows: list[dict], base: list[str], rules: dict[str, tuple[float, ...]],
             decide: Callable[..., str], titles_in, fit_base: dict) -> dict:
    """The rule of the grid ``rules`` (each row's final text ``decide(row, base text, *rule)``) with the best recall
    on the fit half that keeps false titles within the base's there (``fit_base``) or 1 % of its questions naming
    none, and the WER within +0.005 of the base's; what it gives on the held-out half and on every row, and the
    grid. Where no rule keeps to that, the base (a rule of zeros)."""
    fit_rows, fit_base_texts = rows[0::2], base[0::2]
    fitted = [(rule, score(fit_rows, [decide(r, b, *rule) for r, b in zip(fit_rows, fit_base_texts, strict=True)],
                           titles_in)) for rule in itertools.product(*rules.values())]
    most_false = max(fit_base["false_titles"], int(0.01 * fit_base["none_questions"]))
    allowed = [(rule, s) for rule, s in fitted if s["false_titles"] <= most_false
               and s["wer_general"] <= fit_base["wer_general"] + 0.005]
    rule, fit = max(allowed or [(tuple(0.0 for _ in rules), fit_base)],
                    key=lambda x: (x[1]["recall"], -x[1]["false_titles"]))
    chosen = split_scores(rows, [decide(r, b, *rule) for r, b in zip(rows, base, strict=True)], titles_in)
    return {"rule": dict(zip(rules, rule, strict=True)), "fit_half": fit,
            "held_out_half": chosen["held_out"], "all": chosen["all"],
            "grid": [{**dict(zip(rules, r, strict=True)), "recall": s["recall"], "false": s["false_titles"],
                      "wer": s["wer_general"]} for r, s in fitted]}


def summarise(rows: list[dict], served: dict[str, str], titles_in) -> dict:
    """Per form (``alternatives``: continued by the decoder; ``rejoined``: the greedy words after), the rule
    with the best recall on the fit half that keeps false titles within 1 % and the WER within +0.005 of the
    base there, and what it gives on the held-out half (``fit_rule``)."""
    base = [served.get(r["id"], r["greedy"]) for r in rows]
    base_scores = split_scores(rows, base, titles_in)
    out: dict = {"base": "served" if served else "greedy",
                 "seconds_per_clip_p50": float(np.median([r["seconds"] for r in rows])),
                 "rejoined_rows_p50": float(np.median([r.get("rejoined_rows", 0) for r in rows])),
                 "base_all": base_scores["all"], "held_out_base": base_scores["held_out"]}
    for form in ("alternatives", "rejoined"):
        bound = [any(r["title"] in a["new_titles"] for a in r[form]) or r["title"] in titles_in(b)
                 for r, b in zip(rows, base, strict=True) if r["kind"] == "titles"]

        def decide(row: dict, base_text: str, *rule: float, form: str = form) -> str:
            return final_text(row[form], base_text, *rule)

        out[form] = {"bound": round(sum(bound) / max(len(bound), 1), 4),
                     **fit_rule(rows, base, RULES, decide, titles_in, base_scores["fit"])}
    return out


if __name__ == "__main__":
    main()
