"""End-to-end benchmark (issue 8): the voxpipe stack vs a naive sequential script, on the same WAVs.

(a) the stack, started like ``voxpipe up`` on free ports, driven by ``voxpipe bench`` at 1 and 4
    concurrent real-time streams;
(b) a naive sequential script of the kind a user writes by hand: wait for the same end-of-speech
    silence, faster-whisper tiny.en int8 greedy on the utterance, the same NLP and recommender code
    called in process, then piper-tts's ``PiperVoice`` synthesising the whole reply (first audio when the
    reply WAV is ready, as ``synthesize_wav`` gives it);
(c) the in-process sum of the stages' own compute on each utterance (ASR encoder + greedy decoder, NLP,
    recommender, TTS first audio). The orchestration overhead (gRPC hops + asyncio) is measured per turn on
    the stack itself: every stage returns its handler's time in trailing metadata, and the turn report's
    ``overhead_ms`` is the orchestrator's own time plus, per stage, its ms minus its server's time.

    python benchmarks/e2e_bench.py [--seconds 60] [--out docs/bench/e2e.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.servers import free_port  # noqa: E402
from clients.bench import BenchOptions, bench, format_summary  # noqa: E402
from protos import nlp_pb2, recommender_pb2, tts_pb2  # noqa: E402
from services.common import settings as stack_settings  # noqa: E402

QUERIES = (
    "Can you recommend a comedy from the nineties?",
    "Something like Toy Story.",
    "I want to watch a scary movie.",
    "Recommend a science fiction film from the eighties.",
    "What is a good romance movie?",
    "Show me an action movie from 1995.",
    "Something like Fargo, please.",
    "I would like a western.",
)


class InProcessContext:
    """What a servicer needs from its context when called directly, without gRPC (no deadline, no metadata)."""

    def time_remaining(self):
        return None

    def invocation_metadata(self):
        return ()

    def cancelled(self) -> bool:
        return False

    def peer(self) -> str:
        return "in-process"


def p50(values):
    return statistics.median(values) if values else float("nan")


async def make_wavs(models_dir: Path, folder: Path, device: str = "cpu") -> list[Path]:
    """The queries spoken by the Piper voice through the real TTS stage (noise off), 16 kHz, speech only."""
    from services.tts import create_stage

    stage = create_stage(stack_settings.StageSettings(name="tts", models_dir=models_dir, device=device,
                                                      options={"noise_scale": 0.0, "noise_w_scale": 0.0}))
    await stage.start()
    paths = []
    try:
        for i, text in enumerate(QUERIES):
            request = stage.synthesizer.validate(text, sample_rate_hz=16000)
            pcm = np.concatenate([s.pcm async for s in stage.synthesizer.stream(request)])
            lead = np.zeros(4800, dtype=np.int16)  # 300 ms before the speech
            path = folder / f"q{i:02d}.wav"
            with wave.open(str(path), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(16000)
                w.writeframes(np.concatenate([lead, pcm]).astype("<i2").tobytes())
            paths.append(path)
    finally:
        await stage.stop()
    return paths


def load_pcm16k(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768


async def in_process(models_dir: Path, wavs: list[Path], silence_ms: float) -> dict:
    """(b) the naive script and (c) the in-process stage compute, alternating per utterance."""
    from faster_whisper import WhisperModel
    from piper import PiperVoice

    from services.asr import create_stage as asr_stage
    from services.nlp import UnderstanderServicer
    from services.nlp import create_stage as nlp_stage
    from services.recommender import RecommenderServicer
    from services.recommender import create_stage as rec_stage
    from services.tts import create_stage as tts_stage
    from services.tts.servicer import SynthesizerServicer

    def settings(name):
        return stack_settings.StageSettings(name=name, models_dir=models_dir)

    asr, nlp, rec, tts = asr_stage(settings("asr")), nlp_stage(settings("nlp")), rec_stage(settings("recommender")), \
        tts_stage(settings("tts"))
    for stage in (asr, nlp, rec, tts):
        await stage.start()
    nlp_s, rec_s, tts_s = UnderstanderServicer(nlp), RecommenderServicer(rec), SynthesizerServicer(tts)
    whisper = WhisperModel(str(models_dir / "whisper-tiny-en-ct2"), device="cpu", compute_type="int8", cpu_threads=2)
    piper_folder = models_dir / "tts-en_US-joe-medium"
    piper = PiperVoice.load(piper_folder / "model.onnx", piper_folder / "voice.json")
    ctx = InProcessContext()

    async def nlp_and_rec(text: str):
        t0 = time.perf_counter()
        u = await nlp_s.Understand(nlp_pb2.UnderstandRequest(text=text), ctx)
        t1 = time.perf_counter()
        genres = [e.value for e in u.entities if e.type == "genre"]
        request = recommender_pb2.RecommendRequest(k=3, query_embedding=u.embedding,
                                                   filters=recommender_pb2.Filters(genres=genres))
        items = (await rec_s.Recommend(request, ctx)).items
        t2 = time.perf_counter()
        reply = f"How about {items[0].title}? You might also like {items[1].title} and {items[2].title}." if items \
            else "Sorry, I couldn't find a movie for that."
        return reply, (t1 - t0) * 1e3, (t2 - t1) * 1e3

    naive, compute = [], []
    for _ in range(2):  # two passes: the first warms caches
        naive.clear()
        compute.clear()
        for path in wavs:
            audio = load_pcm16k(path)
            # (c) our stages' own compute, in process
            t0 = time.perf_counter()
            transcript = await asr.recognizer.transcribe(audio, deadline_s=None)
            asr_ms = (time.perf_counter() - t0) * 1e3
            reply, nlp_ms, rec_ms = await nlp_and_rec(transcript.text)
            t3 = time.perf_counter()
            stream = tts_s.Synthesize(tts_pb2.SynthesizeRequest(text=reply), ctx)
            await anext(stream)
            tts_ms = (time.perf_counter() - t3) * 1e3
            await stream.aclose()
            compute.append({"asr": asr_ms, "nlp": nlp_ms, "recommender": rec_ms, "tts": tts_ms,
                            "sum": asr_ms + nlp_ms + rec_ms + tts_ms, "text": transcript.text})
            # (b) the naive script: endpoint silence, then everything in sequence
            t0 = time.perf_counter()
            segments, _ = whisper.transcribe(audio, beam_size=1, language="en", without_timestamps=True,
                                             condition_on_previous_text=False, vad_filter=False)
            text = " ".join(s.text.strip() for s in segments)
            t1 = time.perf_counter()
            reply, _, _ = await nlp_and_rec(text)
            t2 = time.perf_counter()
            chunks = list(piper.synthesize(reply))  # the whole reply, as synthesize_wav writes it
            t3 = time.perf_counter()
            assert chunks
            naive.append({"asr": (t1 - t0) * 1e3, "nlp+recommender": (t2 - t1) * 1e3, "tts": (t3 - t2) * 1e3,
                          "voice_to_voice": silence_ms + (t3 - t0) * 1e3, "text": text})
    for stage in (asr, nlp, rec, tts):
        await stage.stop()
    return {"naive": naive, "compute": compute}


async def hop_cost(address: str, calls: int = 300) -> dict:
    """One gRPC hop on the running stack: round trips of ``grpc.health.v1/Check`` (transport and framework
    only) and of ``GetItems`` of one id (plus a small handler, no engine), interleaved."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from protos import recommender_pb2_grpc

    health_ms, items_ms = [], []
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        stub = recommender_pb2_grpc.RecommenderStub(channel)
        items = recommender_pb2.GetItemsRequest(item_ids=[1])
        for _ in range(calls):
            t0 = time.perf_counter()
            await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            t1 = time.perf_counter()
            await stub.GetItems(items, timeout=5)
            health_ms.append((t1 - t0) * 1e3)
            items_ms.append((time.perf_counter() - t1) * 1e3)
    return {"p50": p50(health_ms[20:]), "p95": float(np.percentile(health_ms[20:], 95)),
            "get_items_p50": p50(items_ms[20:])}


def pooled(paths: list[Path]) -> dict:
    """Medians over every reported turn of several ``voxpipe bench --json`` files."""
    turns = [t for p in paths for t in json.loads(p.read_text())["turns"] if t.get("overhead_ms")]
    hops: dict[str, list[float]] = {}
    for t in turns:
        for s in t["report"]:
            if s["server_ms"]:
                hops.setdefault(s["stage"], []).append(s["ms"] - s["server_ms"])
    return {"turns": len(turns), "overhead_ms": p50([t["overhead_ms"] for t in turns]),
            "orchestration_ms": p50([t["orchestration_ms"] for t in turns]),
            "voice_to_voice_ms": p50([t["voice_to_voice_ms"] for t in turns]),
            "hop_ms": {k: p50(v) for k, v in hops.items()}}


async def transport_ab(wavs: tuple[Path, ...], stream_address: str, seconds: float, rounds: int = 4) -> dict:
    """The same stages behind two orchestrators, multiplexed calls (the default) and unary RPCs, driven in
    alternating 1-stream rounds: the orchestration overhead of each transport, in one run."""
    from services.launcher import launch, shutdown

    env = dict(os.environ)
    os.environ.update({"VOXPIPE_ORCHESTRATOR__PORT": str(free_port()), "VOXPIPE_ORCHESTRATOR__STAGE_CALLS": "unary"})
    try:
        unary = await launch(stack_settings.from_env(os.environ), stages=["orchestrator"])
    finally:
        os.environ.clear()
        os.environ.update(env)
    files: dict[str, list[Path]] = {"stream": [], "unary": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(rounds):
                for arm, address in (("stream", stream_address), ("unary", unary.stages[0].address)):
                    path = Path(tmp) / f"{arm}-{r}.json"
                    await bench(BenchOptions(address=address, wavs=wavs, streams=1, duration_s=seconds / rounds,
                                             realtime=True, json_path=path, plot_path=None, budget_ms=0))
                    files[arm].append(path)
            return {arm: pooled(paths) for arm, paths in files.items()}
    finally:
        await shutdown(unary)


async def stack_runs(wavs: list[Path], seconds: float) -> dict:
    """(a) the stack on free ports, 1 then 4 concurrent real-time streams; then the transport A/B."""
    from services.launcher import launch, shutdown

    for stage in stack_settings.STAGE_ORDER:
        os.environ[f"VOXPIPE_{stage.upper()}__PORT"] = str(free_port())
        os.environ[f"VOXPIPE_{stage.upper()}__METRICS_PORT"] = "0"
    os.environ.setdefault("VOXPIPE_LOG_LEVEL", "WARNING")
    settings = stack_settings.from_env(os.environ)
    launched = await launch(settings)
    results = {}
    try:
        address = settings.stage("orchestrator").server.address
        wavs = tuple(wavs)
        # Warm-up conversation (first-call costs of every stage), not measured.
        await bench(BenchOptions(address=address, wavs=wavs[:1], streams=1, duration_s=0.1, realtime=False,
                                 json_path=None, plot_path=None, budget_ms=0))
        results["hop_ms"] = await hop_cost(settings.stage("recommender").server.address)
        for streams in (1, 4):
            results[streams] = await bench(BenchOptions(
                address=address, wavs=wavs, streams=streams, duration_s=seconds, realtime=True, json_path=None,
                plot_path=ROOT / "docs" / "bench" / f"e2e-cdf-{streams}.png", budget_ms=0))
        results["transport_ab"] = await transport_ab(wavs, address, seconds)
    finally:
        await shutdown(launched)
    return results


async def run(args: argparse.Namespace) -> dict:
    settings = stack_settings.from_env(os.environ)
    models_dir = settings.models_dir
    silence_ms = 300.0  # the ASR's default endpoint silence, also granted to the naive script
    with tempfile.TemporaryDirectory() as tmp:
        wavs = await make_wavs(models_dir, Path(tmp))
        local = await in_process(models_dir, wavs, silence_ms)
        stack = await stack_runs(wavs, args.seconds)

    naive, compute = local["naive"], local["compute"]
    one = stack[1]
    v2v_1 = one["voice_to_voice_ms"]["p50"]
    endpoint_wait = one["endpoint_wait_ms"]["p50"]
    stage_p50 = {k: v["p50"] for k, v in one["stages_ms"].items()}
    hop = stack.pop("hop_ms")
    ab = stack.pop("transport_ab")
    own = one["orchestration_ms"]["p50"]
    print("\n== (a) voxpipe stack, real-time streams ==")
    for streams, summary in stack.items():
        print(f"-- {streams} stream(s)")
        print(format_summary(summary))
    print("\n== (b) naive sequential script (faster-whisper int8 -> NLP/recommender in process -> piper-tts) ==")
    for key in ("asr", "nlp+recommender", "tts", "voice_to_voice"):
        print(f"  {key:<16} p50 {p50([n[key] for n in naive]):7.1f} ms   max {max(n[key] for n in naive):7.1f} ms")
    print("\n== (c) in-process stage compute (our engines, no gRPC) ==")
    for key in ("asr", "nlp", "recommender", "tts", "sum"):
        print(f"  {key:<16} p50 {p50([c[key] for c in compute]):7.1f} ms")
    naive_v2v = p50([n["voice_to_voice"] for n in naive])
    print("\n== comparison ==")
    print(f"  voice-to-voice p50, 1 stream: voxpipe {v2v_1:.0f} ms vs naive {naive_v2v:.0f} ms "
          f"-> ratio {v2v_1 / naive_v2v:.2f} (target <= 0.8, and <= 900 ms)")
    print(f"  endpoint wait p50 {endpoint_wait:.0f} ms (naive script granted {silence_ms:.0f} ms)")
    overhead = one["overhead_ms"]
    hops = ", ".join(f"{stage} {p['p50']:.2f}" for stage, p in one["hop_ms"].items())
    print(f"  orchestration overhead per turn (turn reports: own time + each stage's ms minus its server's time): "
          f"p50 {overhead['p50']:.2f} / p95 {overhead['p95']:.2f} ms  (target p50 <= 5 ms)")
    print(f"    orchestrator's own time p50 {own:.2f} ms; hop p50 per stage (ms): {hops}")
    print(f"    reference: a health Check round trip on the stack p50 {hop['p50']:.2f} ms (p95 {hop['p95']:.2f}), "
          f"GetItems of one id {hop['get_items_p50']:.2f} ms")
    print(f"  stage calls, multiplexed vs unary RPCs (same stages, alternating 1-stream rounds, medians of "
          f"{ab['stream']['turns']} and {ab['unary']['turns']} turns):")
    for arm, r in ab.items():
        hops_ab = ", ".join(f"{k} {v:.2f}" for k, v in r["hop_ms"].items())
        print(f"    {arm:<7} overhead {r['overhead_ms']:.2f} ms (own {r['orchestration_ms']:.2f}; hops {hops_ab}); "
              f"voice-to-voice {r['voice_to_voice_ms']:.0f} ms")
    print(f"    ratio stream/unary overhead: {ab['stream']['overhead_ms'] / ab['unary']['overhead_ms']:.2f}")
    print("  per stage, as the orchestrator saw it vs in process (p50 ms): " + ", ".join(
        f"{s} {stage_p50[s]:.1f} vs {p50([c[s] for c in compute]):.1f}" for s in ("asr", "nlp", "recommender", "tts")))
    print(f"  4 streams: voice-to-voice p50 {stack[4]['voice_to_voice_ms']['p50']:.0f} / p99 "
          f"{stack[4]['voice_to_voice_ms']['p99']:.0f} ms, {stack[4]['turns']} turns, "
          f"{stack[4]['error_count']} failed conversations")
    return {"stack": {str(k): v for k, v in stack.items()}, "transport_ab": ab, "naive": naive, "compute": compute}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="per stack run (1 and 4 streams)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "e2e.json")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
