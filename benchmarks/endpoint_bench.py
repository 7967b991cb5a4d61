"""The adaptive endpoint (issue 20 part 2): a fixed trailing silence vs one chosen by what was understood.

The paused-question set (``make_paused_questions.py``; regenerated unless ``--keep-set``) through the whole
stack, started like ``voxpipe up`` once per mode:

* ``fixed``: ``[orchestrator] adaptive_endpoint = false`` (speculation on): every utterance ends after
  ``[asr] silence_ms`` of silence;
* ``adaptive``: the default: a speculative transcript judged complete ends after ``complete_silence_ms``, one
  judged unfinished after ``incomplete_silence_ms`` (orchestrator/completeness.py), any other after ASR's own;
* ``unsure600``: the same, and one neither complete nor unfinished after 600 ms.

Each clip is its own conversation, streamed at real time and followed by ``--trailing-ms`` of silence (longer
than the unfinished silence, so the VAD ends every question). A question with pauses is **cut off** when its
conversation has more than one turn with a transcript (a final came at a pause). On the questions spoken whole:
voice-to-voice p50 (the turn report's: last voiced audio -> first reply audio) and the endpoint wait p50.

    python -m benchmarks.endpoint_bench [--concurrency 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from pathlib import Path

import soundfile as sf

from benchmarks.make_paused_questions import make_set
from benchmarks.speculation_bench import launched_stack
from clients.api import Conversation, stream_audio
from services.common.settings import cache_root

MODES = {"fixed": {"ORCHESTRATOR__ADAPTIVE_ENDPOINT": "false"},
         "adaptive": {"ORCHESTRATOR__ADAPTIVE_ENDPOINT": "true", "ORCHESTRATOR__UNSURE_SILENCE_MS": "0"},
         "unsure600": {"ORCHESTRATOR__ADAPTIVE_ENDPOINT": "true", "ORCHESTRATOR__UNSURE_SILENCE_MS": "600"}}


async def one_clip(address: str, path: Path, trailing_ms: int) -> list[dict]:
    """The turns of one clip's conversation (``TurnResult.to_json``)."""
    pcm, rate = sf.read(path, dtype="int16")
    async with Conversation(address, sample_rate_hz=rate, interim_results=False) as conv:
        await stream_audio(conv, pcm.tobytes(), rate, trailing_silence_ms=trailing_ms, end_of_utterance=False)
        await conv.close()
        return [t.to_json() for t in conv.completed_turns()]


async def one_mode(mode: str, clips: list[dict], folder: Path, args: argparse.Namespace) -> list[dict]:
    """Every clip through the stack in ``mode``, ``args.concurrency`` conversations at a time."""
    async with launched_stack(**MODES[mode]) as address:
        await one_clip(address, folder / clips[0]["file"], args.trailing_ms)  # warm-up, not measured
        gate = asyncio.Semaphore(args.concurrency)

        async def run(clip: dict) -> dict:
            async with gate:
                return {**clip, "turns": await one_clip(address, folder / clip["file"], args.trailing_ms)}

        return list(await asyncio.gather(*(run(c) for c in clips)))


def _spoken(row: dict) -> list[dict]:
    """The turns of a clip's conversation that heard something."""
    return [t for t in row["turns"] if t["transcript"].strip()]


def summarise(rows: list[dict]) -> dict:
    paused = [r for r in rows if r["kind"] == "paused"]
    complete = [r for r in rows if r["kind"] == "complete"]
    cut = [r for r in paused if len(_spoken(r)) > 1]
    firsts = [next((t for t in r["turns"] if t["transcript"].strip() and t["report"] is not None), None)
              for r in complete]
    answered = [t for t in firsts if t is not None and t["voice_to_voice_ms"]]
    whole_cut = sum(len(_spoken(r)) > 1 for r in complete)
    return {
        "paused": len(paused), "cut_off": len(cut), "cut_off_share": len(cut) / max(len(paused), 1),
        "cut_off_by_voice": {v: sum(r["voice"] == v for r in cut) for v in sorted({r["voice"] for r in paused})},
        "cut_examples": [(r["text"], [t["transcript"] for t in _spoken(r)]) for r in cut][:8],
        "complete": len(complete), "complete_answered": len(answered), "complete_cut_off": whole_cut,
        "v2v_p50_ms": statistics.median(t["voice_to_voice_ms"] for t in answered) if answered else None,
        "endpoint_wait_p50_ms": statistics.median(t["endpoint_wait_ms"] for t in answered) if answered else None,
        "speculative_share": sum(bool(t["speculative"]) for t in answered) / max(len(answered), 1),
    }


def report(summaries: dict[str, dict]) -> str:
    lines = [f"{'':<52}" + "".join(f"{m:>12}" for m in summaries)]

    def row(label: str, fmt) -> None:
        lines.append(f"{label:<52}" + "".join(f"{fmt(s):>12}" for s in summaries.values()))

    row("false cut-offs, questions with pauses", lambda s: f"{s['cut_off']}/{s['paused']} {s['cut_off_share']:.0%}")
    for voice in next(iter(summaries.values()))["cut_off_by_voice"]:
        row(f"  of them spoken by {voice}", lambda s, v=voice: str(s["cut_off_by_voice"][v]))
    row("voice-to-voice p50, questions spoken whole (ms)", lambda s: f"{s['v2v_p50_ms']:.1f}" if s["v2v_p50_ms"] else "-")
    row("  endpoint wait p50 (ms)", lambda s: f"{s['endpoint_wait_p50_ms']:.1f}" if s["endpoint_wait_p50_ms"] else "-")
    row("  answered / spoken whole", lambda s: f"{s['complete_answered']}/{s['complete']}")
    row("  answered by a committed speculation", lambda s: f"{s['speculative_share']:.0%}")
    row("  questions spoken whole, cut off", lambda s: str(s["complete_cut_off"]))
    for mode, s in summaries.items():
        for text, heard in s["cut_examples"]:
            lines.append(f"  {mode} cut: {text} -> {heard}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=1, help="conversations at a time")
    parser.add_argument("--trailing-ms", type=int, default=2000, help="silence after each clip")
    parser.add_argument("--keep-set", action="store_true", help="use the set already in the cache")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--limit", type=int, default=0, help="only the first N clips (a smoke test)")
    parser.add_argument("--json", type=Path, help="also write the summaries and every turn here")
    args = parser.parse_args()
    cache = cache_root(os.environ)
    folder = Path(os.environ.get("VOXPIPE_PAUSED_SET", cache / "paused-questions"))
    if args.keep_set and (folder / "references.json").is_file():
        clips = json.loads((folder / "references.json").read_text())
    else:
        clips = make_set(folder, cache)
    clips = clips[:args.limit] if args.limit else clips
    started = time.time()
    rows = {mode: asyncio.run(one_mode(mode, clips, folder, args)) for mode in args.modes}
    summaries = {mode: summarise(r) for mode, r in rows.items()}
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}; machine: {platform.node()}, "
          f"{os.cpu_count()} cores; {len(clips)} clips, {args.concurrency} at a time; [asr] silence_ms "
          f"{os.environ.get('VOXPIPE_ASR__SILENCE_MS', '(default)')}")
    print(report(summaries))
    if args.json:
        args.json.write_text(json.dumps({"summaries": summaries, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
