"""Phrase boosting benchmark: does the assistant hear movie titles, and what does it cost?

Boosting off (``disable_default_phrases``) vs on (the catalogue's titles, the stage default), same run, real
ASR and NLP servers (subprocesses, as ``voxpipe serve`` starts them):

1. title recall: every clip of the title set (``make_title_testset.py``) through ``Recognize``, the final text
   through NLP ``Understand``; a hit when the expected title is among the title entities;
2. false titles: the same for the questions that name none (any title entity is false);
3. WER on the ASR benchmark's general speech: the ``make_asr_testset.py`` clips whose reference names no
   title (by the NLP on the reference text), normalised as ``asr_bench.py`` reports it;
4. endpoint -> final latency: every ``--latency-every``-th title clip, and every general clip of 3., streamed at
   real time, off and on alternately (so both see the same machine load); ``SpeechResult.latency_ms`` of the VAD
   finals. A general question pays for its candidates (scored, then rejected) and gains nothing. Besides the
   ratio of the two p50s (the target), the p50 of on minus off for the same final of the same clip, which the
   shared machine's drift between clips does not move.

    flock /tmp/voxpipe-bench.lock .venv/bin/python -m benchmarks.title_bench [--json docs/bench/titles.json]

Settings of the ASR server come from the environment (``VOXPIPE_ASR__...``), e.g. the encoder windows:
``VOXPIPE_ASR__ENCODER_WINDOWS_S=30 ... title_bench --keep-sets`` then ``title_bench --keep-sets``. On the GPU
machine, after ``gpu_bundle.py install`` (which carries both spoken sets): ``VOXPIPE_DEVICE=cuda
VOXPIPE_MODELS_DIR=/tmp/vx/models VOXPIPE_CACHE_DIR=/tmp/vx/data python3 -m benchmarks.title_bench --keep-sets``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from pathlib import Path

import grpc
import numpy as np
import soundfile as sf

from benchmarks.asr_bench import GAP_S, RATE, _pcm16, _stream
from benchmarks.asr_wer import wer
from benchmarks.make_asr_testset import has_piper_half, set_digest
from benchmarks.make_asr_testset import make_set as make_asr_set
from benchmarks.make_title_testset import make_set as make_title_set
from benchmarks.servers import stage_servers
from protos import asr_pb2, asr_pb2_grpc, common_pb2, nlp_pb2, nlp_pb2_grpc
from services.common.settings import cache_root


def _config(boost: bool) -> asr_pb2.RecognitionConfig:
    return asr_pb2.RecognitionConfig(encoding=common_pb2.LINEAR16, sample_rate_hz=RATE,
                                     disable_default_phrases=not boost)


async def _recognize(asr, nlp, wav: bytes, boost: bool) -> tuple[str, list[str], list[str]]:
    """Final text, the NLP's title entities and the boosted phrases of one clip."""
    reply = await asr.Recognize(asr_pb2.RecognizeRequest(config=_config(boost), audio=wav), timeout=60)
    text = " ".join(r.text for r in reply.results if r.text)
    boosted = [p for r in reply.results for p in r.boosted_phrases]
    return text, (await _titles_of(nlp, text) if text else []), boosted


async def _titles_of(nlp, text: str) -> list[str]:
    understood = await nlp.Understand(nlp_pb2.UnderstandRequest(text=text), timeout=10)
    return [e.value for e in understood.entities if e.type == "title"]


async def run(asr_address: str, nlp_address: str, titles_dir: Path, asr_dir: Path, latency_every: int,
              sample: int = 1, concurrency: int = 1) -> dict:
    entries = json.loads((titles_dir / "references.json").read_text())[::sample]
    general = json.loads((asr_dir / "references.json").read_text())[::sample]
    async with grpc.aio.insecure_channel(asr_address) as ac, grpc.aio.insecure_channel(nlp_address) as nc:
        asr, nlp = asr_pb2_grpc.RecognizerStub(ac), nlp_pb2_grpc.UnderstanderStub(nc)
        rows = []
        for e in entries:
            wav = (titles_dir / e["file"]).read_bytes()
            row = {**e, "reference_titles": await _titles_of(nlp, e["text"])}
            for mode in ("off", "on"):
                text, found, boosted = await _recognize(asr, nlp, wav, mode == "on")
                row[mode] = {"text": text, "titles": found, "boosted": boosted}
            rows.append(row)
        plain = []
        for e in general:
            if await _titles_of(nlp, e["text"]):
                continue  # the general-speech WER leaves out questions naming a title
            wav = (asr_dir / e["file"]).read_bytes()
            texts = {mode: (await _recognize(asr, nlp, wav, mode == "on"))[0] for mode in ("off", "on")}
            plain.append({"id": e["id"], "reference": e["text"], **texts})
        clips = {"titles": [titles_dir / e["file"] for e in entries[::latency_every]],
                 "general": [asr_dir / next(e["file"] for e in general if e["id"] == g["id"]) for g in plain]}
        latency = {kind: await _latency(asr, paths, concurrency) for kind, paths in clips.items()}
    sets = {"titles": set_digest(titles_dir, entries), "asr": set_digest(asr_dir, general)}
    return {"rows": rows, "general": plain, "latency_ms": latency, "sets_sha256": sets}


async def _latency(asr, paths: list[Path], concurrency: int) -> dict[str, list[float]]:
    """Endpoint -> final of every VAD final, each clip streamed at real time off and on (alternating which goes
    first), ``concurrency`` clips at a time."""
    gap = np.zeros(int(GAP_S * RATE), np.float32)
    slots = asyncio.Semaphore(concurrency)

    async def clip(i: int, path: Path) -> dict[str, list[float]]:
        pcm = _pcm16(np.concatenate([sf.read(path, dtype="float32")[0], gap]))
        out: dict[str, list[float]] = {}
        async with slots:
            for mode in (("off", "on") if i % 2 == 0 else ("on", "off")):
                finals = await asyncio.wait_for(_stream(asr, pcm, interim=False, config=_config(mode == "on")), 120)
                out[mode] = [f.latency_ms for f in finals if f.endpoint_reason == asr_pb2.VAD_SILENCE]
        return out

    per_clip = await asyncio.gather(*(clip(i, path) for i, path in enumerate(paths)))
    out = {mode: [ms for c in per_clip for ms in c[mode]] for mode in ("off", "on")}
    # On minus off for the same final of the same clip (clips whose finals differ in number left out): the
    # machine's drift between clips cancels out of these.
    out["extra"] = [on - off for c in per_clip if len(c["on"]) == len(c["off"])
                    for off, on in zip(c["off"], c["on"], strict=True)]
    return out


def summarise(result: dict) -> dict:
    rows = result["rows"]
    # A title question counts only if the NLP finds its title in the reference text: the set measures hearing.
    titled = [r for r in rows if r["set"] == "titles" and r["title"] in r["reference_titles"]]
    none = [r for r in rows if r["set"] == "none"]
    out: dict = {"title_questions": len(titled), "title_questions_left_out": sum(r["set"] == "titles" for r in rows)
                 - len(titled), "none_questions": len(none)}
    for mode in ("off", "on"):
        hits = [r["title"] in r[mode]["titles"] for r in titled]
        by_voice: dict[str, list[bool]] = {}
        for r, hit in zip(titled, hits, strict=True):
            by_voice.setdefault("piper" if r["voice"].startswith("piper") else "espeak-ng", []).append(hit)
        out[mode] = {
            "title_recall": sum(hits) / len(titled),
            "title_recall_by_voice": {v: round(sum(h) / len(h), 3) for v, h in by_voice.items()},
            "false_titles": sum(bool(r[mode]["titles"]) for r in none) / len(none),
            "false_title_examples": [(r["text"], r[mode]["text"], r[mode]["titles"]) for r in none if r[mode]["titles"]],
            "boosted_finals": sum(bool(r[mode]["boosted"]) for r in rows),
            "wer_general": wer([g["reference"] for g in result["general"]], [g[mode] for g in result["general"]]),
            **{f"{kind}_endpoint_to_final_p{q}_ms": float(np.percentile(result["latency_ms"][kind][mode], q))
               for kind in ("titles", "general") for q in (50, 90)},
            "latency_finals": {kind: len(result["latency_ms"][kind][mode]) for kind in ("titles", "general")},
        }
    out["general_clips"] = len(result["general"])
    for kind in ("titles", "general"):
        out[f"{kind}_latency_ratio_p50"] = (out["on"][f"{kind}_endpoint_to_final_p50_ms"]
                                            / out["off"][f"{kind}_endpoint_to_final_p50_ms"])
        extra = result["latency_ms"][kind]["extra"]
        out[f"{kind}_paired_extra_p50_ms"] = float(np.median(extra)) if extra else float("nan")
    out["still_missed"] = [(r["text"], r["on"]["text"]) for r in titled if r["title"] not in r["on"]["titles"]]
    out["general_changed"] = [(g["reference"], g["off"], g["on"]) for g in result["general"] if g["off"] != g["on"]]
    out["sets_sha256"] = result["sets_sha256"]  # runs on equal digests heard the same clips
    return out


def _ms(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.2f}"  # a GPU's finals come well under a millisecond


def report(s: dict) -> str:
    off, on = s["off"], s["on"]
    return "\n".join([
        f"title questions {s['title_questions']} (+{s['title_questions_left_out']} whose title the NLP misses in the "
        f"reference text, left out); questions naming none {s['none_questions']}; general clips {s['general_clips']}",
        "| what | boosting off | boosting on | target |",
        "|---|---|---|---|",
        f"| title recall | {off['title_recall']:.1%} | {on['title_recall']:.1%} | >= 90 % on |",
        f"| title recall, Piper / espeak-ng | {off['title_recall_by_voice'].get('piper', 0):.1%} / "
        f"{off['title_recall_by_voice'].get('espeak-ng', 0):.1%} | {on['title_recall_by_voice'].get('piper', 0):.1%} / "
        f"{on['title_recall_by_voice'].get('espeak-ng', 0):.1%} | |",
        f"| false titles | {off['false_titles']:.1%} | {on['false_titles']:.1%} | <= 1 % |",
        f"| WER, general speech | {off['wer_general']:.3f} | {on['wer_general']:.3f} | on - off <= +0.005 |",
        *(f"| endpoint -> final p50 (p90), {kind} clips streamed | {_ms(off[f'{kind}_endpoint_to_final_p50_ms'])} ms "
          f"({_ms(off[f'{kind}_endpoint_to_final_p90_ms'])}) | {_ms(on[f'{kind}_endpoint_to_final_p50_ms'])} ms "
          f"({_ms(on[f'{kind}_endpoint_to_final_p90_ms'])}) | ratio {s[f'{kind}_latency_ratio_p50']:.2f} (<= 1.2) |"
          for kind in ("titles", "general")),
        *(f"| on minus off, the same final, p50, {kind} clips | | {_ms(s[f'{kind}_paired_extra_p50_ms'])} ms | |"
          for kind in ("titles", "general")),
        f"| finals with a phrase put in | {off['boosted_finals']} | {on['boosted_finals']} | |",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-every", type=int, default=3, help="stream every Nth title clip for latency")
    parser.add_argument("--json", type=Path, help="also write the summary (and every row) here")
    parser.add_argument("--keep-sets", action="store_true",
                        help="use the spoken sets already in the cache instead of speaking them again (the same "
                             "clips where espeak-ng and ONNX Runtime are the same versions; the summary's sha256 of "
                             "the clips says); an ASR set without its Piper half (make_asr_testset run without "
                             "--piper) is spoken again")
    parser.add_argument("--sample", type=int, default=1, metavar="K",
                        help="every K-th clip of each set only: a quick check of a setup, not a measurement")
    parser.add_argument("--concurrency", type=int, default=1, metavar="C",
                        help="stream C latency clips at once (default 1: one stream, as the CPU figures are "
                             "measured; the GPU run uses 4 to fit the device's 10-minute call)")
    args = parser.parse_args()
    if args.concurrency < 1 or args.latency_every < 1 or args.sample < 1:
        parser.error("--concurrency, --latency-every and --sample must be >= 1")
    cache = cache_root(os.environ)
    titles_dir, asr_dir = cache / "title-testset", cache / "asr-testset"
    if not (args.keep_sets and (titles_dir / "references.json").is_file()):
        make_title_set(titles_dir, cache)
    if not (args.keep_sets and has_piper_half(asr_dir)):  # a set made by hand without --piper is spoken again
        make_asr_set(asr_dir, piper_cache=cache)
    started = time.time()
    with stage_servers(("asr", "nlp")) as servers:
        result = asyncio.run(run(servers["asr"].address, servers["nlp"].address, titles_dir, asr_dir,
                                 args.latency_every, args.sample, args.concurrency))
    summary = summarise(result)
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}; machine: {platform.node()}, "
          f"{os.cpu_count()} cores, load avg at end {os.getloadavg()[0]:.1f}; [asr] encoder_windows_s "
          f"{os.environ.get('VOXPIPE_ASR__ENCODER_WINDOWS_S', '(default)')}; device "
          f"{os.environ.get('VOXPIPE_DEVICE', '(default)')}; latency streams at once {args.concurrency}"
          + (f"; every {args.sample}th clip only: a check, not a measurement" if args.sample > 1 else ""))
    print("clips (sha256): " + ", ".join(f"{name} {digest[:12]}" for name, digest in summary["sets_sha256"].items()))
    print(report(summary))
    print("still missed with boosting on:")
    for text, heard in summary["still_missed"]:
        print(f"  {text} | {heard}")
    print("false titles with boosting on:", summary["on"]["false_title_examples"])
    print("general speech that boosting changed (reference | off -> on):")
    for reference, off, on in summary["general_changed"]:
        print(f"  {reference} | {off} -> {on}")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": result["rows"], "general": result["general"]},
                                        indent=1) + "\n")


if __name__ == "__main__":
    main()
