"""Offline study: a Whisper prompt naming candidate titles, decoded again (issue 19's "decoder prompt" option).

The served method rescores alternatives with a per-token boost; its recall is bounded by the greedy pass (a title
its transcript does not sound like is never a candidate) and its false titles by the boost. On a GPU a second
decode is cheap (a decoder step is ~0.4 ms), so the option ruled out on the CPU for its cost is worth measuring
there: the candidate titles go into Whisper's previous-text prompt (``<|startofprev|>``) and the clip is decoded
again. Candidates come from the greedy transcript, or from it and ``--samples`` decodes sampled at
``--temperature`` (N-best first passes), at the stage's candidate settings (8, similarity 0.5) or looser (24, 0.4).

Per clip, in-process (the stage's encoder and the decoder's PyTorch module, its ``forward`` stepped with a cache
this script keeps; ``VOXPIPE_DEVICE`` picks the device): the greedy pass, the sampled passes, one prompted greedy
decode per variant, and the forced-decode log-probability (``WhisperDecoder.score``, no prompt) of each prompted
transcript that holds a new title, against the greedy one's. Each variant's prompted transcript is then used as:

* ``as decoded``: the final text;
* ``guarded``: the same, but the greedy text where the decode looped (gzip ratio > 2.4, or the length cap);
* ``picks``: the greedy text with one candidate span replaced by a title the prompted decode holds;
* ``scored``: the served rule decides between it and the greedy transcript (log P + boost x title tokens);
* ``served + ...`` (with ``--served``, a ``title_bench.py --json`` of the same clips): the served decision, or the
  prompted transcript where it wins by the served rule: the prompted decode as one more alternative.

Counted as ``title_bench.py`` does (the NLP's title entities of the final text): title recall over the title set,
false titles over its questions naming none, WER over the ASR set's general speech. Not served; one clip at a
time (``--sample K``: every K-th clip; ``--shard I/N`` splits a run over calls, ``--rows`` joins them):

    VOXPIPE_DEVICE=cuda VOXPIPE_MODELS_DIR=/tmp/vx/models VOXPIPE_CACHE_DIR=/tmp/vx/data \
      python3 -m benchmarks.title_prompt_study --shard 0/3 --out shard0.jsonl       # ... 1/3, 2/3
    python -m benchmarks.title_prompt_study --rows shard*.jsonl --served titles-gpu.json --out all.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf

from benchmarks.asr_wer import wer
from benchmarks.title_candidates import nlp_titles
from engines.models import build_module
from engines.repository import ModelRepository, create_engines
from services.asr.boosting import written_form
from services.asr.config import AsrConfig
from services.asr.features import log_mel, window_frames
from services.asr.generation import DECODER_MODEL, ENCODER_MODEL, encoder_batch_fn, rule_from_config
from services.asr.phrases import PhoneticKeys, PhraseSet, find_candidates
from services.asr.tokenizer import WhisperTokenizer
from services.common.catalog import load_items, spoken_title
from services.common.settings import cache_root, from_env
from services.nlp.extract import EntityExtractor

PROMPT_TOKENS = 223  # Whisper's previous-text context: half its 448 positions, less the <|startofprev|> token
# (name, candidate source, candidates per pass, min similarity); "stage" = the served candidate settings
VARIANTS = (("greedy + prompt 8", "greedy", 8, 0.5), ("greedy + prompt 24", "greedy", 24, 0.4),
            ("sampled + prompt 8", "sampled", 8, 0.5), ("sampled + prompt 24", "sampled", 24, 0.4))


class Decoder:
    """Greedy or sampled decoding of rows that share one prefix, with the decoder module's ``forward``."""

    @classmethod
    def load(cls, model, target: str, seed: int) -> Decoder:
        """The decoder model's PyTorch module on ``target`` (FP16 on a GPU, as served)."""
        import torch
        from safetensors.torch import load_file

        device = torch.device("cuda" if target == "cuda" else "cpu")
        dtype = torch.float16 if target == "cuda" else torch.float32
        module = build_module(model.config.metadata["torch_module"])
        state = load_file(str(model.folder / model.config.artifacts["torch"]))
        module.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
        module = module.eval().to(device=device, dtype=dtype)
        module.on_precision()
        return cls(module, module.rule, device, dtype, seed)

    def __init__(self, module, rule, device, dtype, seed: int) -> None:
        import torch

        self.torch, self.module, self.rule, self.device, self.dtype = torch, module, rule, device, dtype
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def cross(self, encoded) -> list:
        """The encoder's cross K/V (host arrays or device tensors) as the module's per-layer arguments."""
        keys = self.torch.as_tensor(encoded.cross_key).to(self.device, self.dtype)
        values = self.torch.as_tensor(encoded.cross_value).to(self.device, self.dtype)
        return [t for layer in range(keys.shape[0]) for t in (keys[layer][None], values[layer][None])]

    def logprobs(self, texts: list[list[int]], cross: list) -> list[float]:
        """log P(text, end token | audio) of each text after the rule's prompt alone: the served scorer's forced
        decode (``WhisperDecoder.score``), every text position."""
        torch, rule = self.torch, self.rule
        rows = [[*rule.prompt, *t, rule.eot][:rule.capacity] for t in texts]
        width = max(map(len, rows))
        grid = torch.full((1, len(rows), width), rule.eot, dtype=torch.int64)
        at = []
        for i, row in enumerate(rows):
            grid[0, i, :len(row)] = torch.tensor(row)
            at += [i * width + j for j in range(len(rule.prompt), len(row))]
        with torch.inference_mode():
            values = self.module.score(grid.to(self.device), torch.tensor([at], device=self.device),
                                       *cross)[0].float().cpu().numpy()
        ends = np.cumsum([len(r) - len(rule.prompt) for r in rows])
        return [float(values[end - (len(r) - len(rule.prompt)):end].sum()) for r, end in zip(rows, ends, strict=True)]

    def decode(self, prefix: list[int], cross: list, temperatures: list[float],
               max_new: int | None = None) -> list[list[int]]:
        """One row per temperature (0: greedy): the text tokens after ``prefix`` (which ends with the rule's
        prompt), under the greedy rule's masks; at most ``max_new`` (default the rule's)."""
        torch, module, rule = self.torch, self.module, self.rule
        rows = len(temperatures)
        cross = [t.expand(rows, *t.shape[1:]) for t in cross]
        layers, d = len(module.layers), module.dims.n_state
        past_k = torch.zeros((rows, layers, 0, d), dtype=self.dtype, device=self.device)
        past_v = past_k
        temps = torch.tensor(temperatures, dtype=torch.float32, device=self.device)
        out: list[list[int]] = [[] for _ in range(rows)]
        done = [False] * rows
        token = torch.full((rows, 1), prefix[0], dtype=torch.int64, device=self.device)
        with torch.inference_mode():
            for position in range(len(prefix) - 1 + min(max_new or rule.max_new_tokens, rule.max_new_tokens)):
                positions = torch.full((rows,), position, dtype=torch.int64, device=self.device)
                *_, hidden, new_k, new_v = module(token, positions, past_k, past_v, *cross)
                past_k, past_v = torch.cat([past_k, new_k], 2), torch.cat([past_v, new_v], 2)
                if position + 1 < len(prefix):
                    token = torch.full((rows, 1), prefix[position + 1], dtype=torch.int64, device=self.device)
                    continue
                logits = hidden.float() @ module._projection
                mask = module.mask_first if position + 1 == len(prefix) else module.mask_always
                logits = logits.masked_fill(mask, float("-inf"))
                sampled = torch.multinomial(torch.softmax(logits / temps.clamp(min=1e-4)[:, None], -1), 1,
                                            generator=self.generator)[:, 0]
                picked = torch.where(temps > 0, sampled, logits.argmax(-1))
                for row, t in enumerate(picked.tolist()):
                    if not done[row]:
                        done[row] = t == rule.eot
                        if not done[row]:
                            out[row].append(t)
                if all(done):
                    break
                token = picked[:, None]
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON lines: one per clip, then the summary")
    parser.add_argument("--samples", type=int, default=4, help="sampled first passes (N-best) per clip")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--sample", type=int, default=1, metavar="K", help="every K-th clip only (a check)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard", default="0/1", metavar="I/N",
                        help="decode only clips I, I+N, ... of the clips (split a run over calls; --rows joins them)")
    parser.add_argument("--boost", type=float, help="nats per title token for the scored forms (default: the "
                        "stage's [asr] phrase_boost)")
    parser.add_argument("--served", type=Path, help="a title_bench.py --json of the same clips: adds the forms "
                        "'served + <variant>' (the served decision, or the prompted transcript where it wins)")
    parser.add_argument("--windows-s", type=float, nargs="+", default=[30.0],
                        help="with --rows: the encoder windows of rows that do not name theirs (default 30, a GPU's)")
    parser.add_argument("--rows", type=Path, nargs="+",
                        help="summarise the clip rows of earlier --out files instead of decoding")
    args = parser.parse_args()
    shard, shards = map(int, args.shard.split("/"))
    if args.boost is None:
        args.boost = AsrConfig().phrase_boost

    settings = from_env(os.environ)
    cache, models = cache_root(os.environ), settings.models_dir
    target = os.environ.get("VOXPIPE_DEVICE", "cpu")
    repo = ModelRepository(models, target=target)
    decoder_model = repo.resolve(DECODER_MODEL)
    rule = rule_from_config(decoder_model.config)
    tokenizer = WhisperTokenizer(decoder_model.folder / "tokenizer.json")
    from tokenizers import Tokenizer

    startofprev = Tokenizer.from_file(str(decoder_model.folder / "tokenizer.json")).token_to_id("<|startofprev|>")
    config = AsrConfig()
    windows = config.windows_s(gpu=target == "cuda")
    keys = PhoneticKeys()
    catalogue = PhraseSet([(spoken_title(i.title), config.phrase_boost)
                           for i in load_items(models / "recommender" / "items.tsv") if i.year], keys)
    spoken = {i.title: spoken_title(i.title) for i in load_items(models / "recommender" / "items.tsv")}
    extractor = EntityExtractor(models / "minilm" / "catalog.tsv")
    written = partial(written_form, tokenizer=tokenizer, rule=rule)  # a phrase as the served booster puts it in

    titles_in = partial(nlp_titles, extractor)

    def prompt_of(titles: list[str]) -> list[int]:
        text = tokenizer.encode(" " + ", ".join(titles) + ".")[-PROMPT_TOKENS:] if titles else []
        return [startofprev, *text, *rule.prompt] if text else list(rule.prompt)

    def candidates(texts: list[str], limit: int, similarity: float) -> list[tuple[str, int, int, int, float]]:
        """(title, pass, start, end, similarity) of every pass's candidates, the closest last."""
        found = [(c.phrase.text, i, c.start, c.end, c.similarity) for i, t in enumerate(texts)
                 for c in find_candidates(t, [catalogue], keys, max_candidates=limit, min_similarity=similarity)]
        return sorted(found, key=lambda c: c[4])

    def cross_of(decoder: Decoder, encode, audio: np.ndarray, windows_s: tuple[float, ...]) -> list:
        return decoder.cross(encode([log_mel(audio, window_frames(len(audio), windows_s))])[0])

    def add_margins(row: dict, decoder: Decoder, cross: list) -> None:
        """Each prompted transcript holding a title the greedy one does not, as an alternative the served rule
        would judge: its log-probability without the prompt minus the greedy transcript's (``margin``) and the
        tokens of its new titles as put in (``title_tokens``: the boost is per token)."""
        heard = {spoken.get(t, t) for t in titles_in(row["greedy"])}
        greedy = tokenizer.encode(row["passes"][0])
        for v in row["variants"].values():
            new = {spoken.get(t, t) for t in titles_in(v["text"])} - heard
            v["margin"], v["title_tokens"] = None, 0
            if new and v["text"] != row["greedy"]:
                heard_lp, alt_lp = decoder.logprobs([greedy, tokenizer.encode(" " + v["text"])], cross)
                v["margin"] = alt_lp - heard_lp
                v["title_tokens"] = sum(len(tokenizer.encode(" " + written(t))) for t in new)

    def run_clip(decoder: Decoder, encode, audio: np.ndarray) -> dict:
        started = time.perf_counter()
        cross = cross_of(decoder, encode, audio, windows)
        passes = decoder.decode(list(rule.prompt), cross, [0.0] + [args.temperature] * args.samples)
        texts = [tokenizer.raw_text(p) for p in passes]
        greedy = texts[0]
        # Titles already heard stay in every prompt (the candidate search offers none for them).
        heard = [spoken.get(t, t) for t in titles_in(greedy)]
        row: dict = {"device": f"{platform.node()}, {target}", "windows_s": windows, "greedy": greedy.strip(), "greedy_tokens": len(passes[0]), "passes": texts,
                     "variants": {}}
        for name, source, limit, similarity in VARIANTS:
            found = candidates([greedy] if source == "greedy" else texts, limit, similarity)
            titles = list(dict.fromkeys(c[0] for c in reversed(found)))[::-1]  # each once, the closest last
            titles = [t for t in titles if t not in heard] + heard
            prefix = prompt_of(titles)
            # The decode may loop on the prompt ("Hi Assistant. Hi Assistant. ..."): at most twice the greedy
            # length and 10 tokens more (the guard in the summary then falls back to the greedy transcript).
            tokens = decoder.decode(prefix, cross, [0.0], 2 * len(passes[0]) + 10)[0] if titles else passes[0]
            row["variants"][name] = {"text": tokenizer.decode(tokens), "tokens": len(tokens),
                                     "prompt_titles": len(titles), "prompt_tokens": len(prefix),
                                     "candidates": found}
        row["seconds"] = time.perf_counter() - started
        add_margins(row, decoder, cross)
        return row

    out = args.out.open("w")
    titles_dir, asr_dir = cache / "title-testset", cache / "asr-testset"
    if args.rows:
        rows = [r for f in args.rows for r in map(json.loads, f.read_text().splitlines()) if "summary" not in r]
        if any("margin" not in v for r in rows for v in r["variants"].values()):  # rows of an earlier version
            files = {e["id"]: folder / e["file"] for folder in (titles_dir, asr_dir)
                     for e in json.loads((folder / "references.json").read_text())}
            encode = encoder_batch_fn(create_engines(repo.resolve(ENCODER_MODEL))[0])
            decoder = Decoder.load(decoder_model, target, args.seed)
            for r in rows:
                audio = sf.read(files[r["id"]], dtype="float32")[0]
                add_margins(r, decoder, cross_of(decoder, encode, audio, tuple(r.get("windows_s", args.windows_s))))
    else:
        encode = encoder_batch_fn(create_engines(repo.resolve(ENCODER_MODEL))[0])
        decoder = Decoder.load(decoder_model, target, args.seed)
        rows = []
        for path, head in study_clips(cache, titles_in, args.sample)[shard::shards]:
            audio, _ = sf.read(path, dtype="float32")
            rows.append({**head, **run_clip(decoder, encode, audio)})
            out.write(json.dumps(rows[-1]) + "\n")
            out.flush()
    served = served_finals(args.served)
    texts = [finals(r, titles_in, spoken, written, args.boost, served) for r in rows]
    summary = summarise(rows, texts, titles_in)
    write_summary(out, summary, rows, with_rows=bool(args.rows))
    print(f"{summary['date']}; {summary['machine']}; boost {args.boost} per title token; "
          f"{summary['title_questions']} title questions, {summary['none_questions']} naming none, "
          f"{summary['general_clips']} general clips")
    print(report(summary))


def study_clips(cache: Path, titles_in: Callable[[str], list[str]], sample: int = 1) -> list[tuple[Path, dict]]:
    """Every ``sample``-th clip of the spoken title set (less the title questions whose title the NLP misses even
    in the reference text: the studies measure hearing) and of the ASR set's clips naming no title (general
    speech), as (audio file, the first fields of the clip's row: kind, id, text, title, voice)."""
    titles_dir, asr_dir = cache / "title-testset", cache / "asr-testset"
    entries = json.loads((titles_dir / "references.json").read_text())[::sample]
    general = [e for e in json.loads((asr_dir / "references.json").read_text())[::sample] if not titles_in(e["text"])]
    return [(folder / e["file"], {"kind": kind if kind == "general" else e["set"], "id": e.get("id", e["file"]),
                                  "text": e["text"], "title": e.get("title"), "voice": e.get("voice", "")})
            for kind, folder, items in (("titles", titles_dir, entries), ("general", asr_dir, general))
            for e in items if not (kind == "titles" and e["set"] == "titles" and e["title"] not in titles_in(e["text"]))]


def served_finals(path: Path | None) -> dict[str, str]:
    """The final texts of a ``title_bench.py --json`` by clip id (title set and general speech); empty without one."""
    bench = json.loads(path.read_text()) if path else {}
    return {**{r["id"]: r["on"]["text"] for r in bench.get("rows", [])},
            **{g["id"]: g["on"] for g in bench.get("general", [])}}


def write_summary(out, summary: dict, rows: list[dict], *, with_rows: bool) -> None:
    """``summary`` stamped with the machines that decoded ``rows`` and the date, written after the rows if
    ``with_rows`` (rows summarised from earlier files, not yet in ``out``)."""
    summary["machine"] = f"decoded on {sorted({r.get('device', '?') for r in rows})}, summarised on {platform.node()}"
    summary["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if with_rows:
        out.writelines(json.dumps(r) + "\n" for r in rows)
    out.write(json.dumps({"summary": summary}) + "\n")


def report(summary: dict) -> str:
    lines = ["| final text | title recall | Piper / espeak-ng | false titles | WER, general speech |",
             "|---|---|---|---|---|"]
    for name, v in summary.items():
        if isinstance(v, dict) and "recall" in v:
            lines.append(f"| {name} | {v['recall']:.1%} | {v['recall_piper']:.1%} / {v['recall_espeak']:.1%} | "
                         f"{v['false_titles']} | {v['wer_general']:.3f} |")
    return "\n".join(lines)


def finals(row: dict, titles_in: Callable[[str], list[str]], spoken: dict[str, str],
           written: Callable[[str], str], boost: float, served: dict[str, str]) -> dict[str, str]:
    """The final text of each way to use a variant's prompted decode (``row`` as ``main`` writes it)."""
    greedy = row["greedy"]
    out = {"greedy": greedy}
    if served:
        # A title_bench.py --json before 2026-12-02 holds no general clips: their served text is then the greedy
        # one (boosting changed one of the 38 in the GPU run of that day).
        out["served"] = served.get(row["id"], greedy)
    for name, v in row["variants"].items():
        # The served rule's decision between the greedy and the prompted transcript (the boost per title token).
        wins = v["margin"] is not None and v["margin"] + boost * v["title_tokens"] > 0
        out[f"{name}: scored"] = v["text"] if wins else greedy
        if served:
            out[f"served + {name}"] = v["text"] if wins else out["served"]
        text = v["text"]
        out[f"{name}: as decoded"] = text
        # Whisper's own loop test (gzip compression ratio over 2.4), or the length cap reached: keep the greedy.
        looped = (len(text) > 0 and len(text.encode()) / len(zlib.compress(text.encode())) > 2.4) or \
            v["tokens"] >= 2 * row["greedy_tokens"] + 10
        out[f"{name}: guarded"] = greedy if looped else text
        if "candidates" not in v:  # rows kept in docs/ leave them out
            continue
        # The prompted decode only picks: a candidate title it holds goes into the pass its span came from.
        picked = {spoken.get(t, t) for t in titles_in(text)} - {spoken.get(t, t) for t in titles_in(greedy)}
        chosen = [c for c in v["candidates"] if c[0] in picked]
        if chosen:
            title, source, begin, finish, _ = chosen[-1]
            raw = row["passes"][source]
            out[f"{name}: picks"] = (raw[:begin] + written(title) + raw[finish:]).strip()
        else:
            out[f"{name}: picks"] = greedy
    return out


def score(rows: list[dict], texts: list[str], titles_in: Callable[[str], list[str]]) -> dict:
    """Recall (all, Piper, espeak-ng), false titles and general-speech WER of one final text per row (``study_clips``
    rows: kind titles, none or general), as ``title_bench.py`` counts them; the studies' one scorer."""
    hits: dict[str, list[bool]] = {"piper": [], "espeak-ng": []}
    false, general = [], []
    for r, t in zip(rows, texts, strict=True):
        if r["kind"] == "titles":
            hits["piper" if r["voice"].startswith("piper") else "espeak-ng"].append(r["title"] in titles_in(t))
        elif r["kind"] == "none" and titles_in(t):
            false.append((r["text"], t))
        elif r["kind"] == "general":
            general.append((r["text"], t))
    every = hits["piper"] + hits["espeak-ng"]
    return {"recall": round(sum(every) / max(len(every), 1), 4), "questions": len(every),
            "recall_piper": round(sum(hits["piper"]) / max(len(hits["piper"]), 1), 4),
            "recall_espeak": round(sum(hits["espeak-ng"]) / max(len(hits["espeak-ng"]), 1), 4),
            "false_titles": len(false), "none_questions": sum(r["kind"] == "none" for r in rows),
            "false_examples": false[:4],
            "wer_general": round(wer([g for g, _ in general], [t for _, t in general]), 4) if general else 0.0}


def summarise(rows: list[dict], texts: list[dict[str, str]], titles_in: Callable[[str], list[str]]) -> dict:
    out: dict = {"title_questions": sum(r["kind"] == "titles" for r in rows),
                 "none_questions": sum(r["kind"] == "none" for r in rows),
                 "general_clips": sum(r["kind"] == "general" for r in rows)}
    for name in texts[0]:
        out[name] = score(rows, [t[name] for t in texts], titles_in)
    out["prompt_tokens_p50"] = {name: float(np.median([r["variants"][name]["prompt_tokens"] for r in rows]))
                                for name in rows[0]["variants"]}
    out["seconds_per_clip_p50"] = float(np.median([r["seconds"] for r in rows]))
    return out


if __name__ == "__main__":
    main()
