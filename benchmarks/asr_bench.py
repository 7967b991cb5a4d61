"""ASR benchmark: WER and endpoint->final latency of our service vs faster-whisper tiny.en int8, same run.

    flock /tmp/voxpipe-bench.lock .venv/bin/python benchmarks/asr_bench.py [--streams 4]

1. Regenerates the test set (``make_asr_testset``: 36 queries by espeak-ng voices and by the Piper voice)
   into ``~/.cache/voxpipe/asr-testset``.
2. Builds the ASR models (cached) and starts the real ASR server as a subprocess.
3. Ours, streaming: every clip (+0.8 s silence) is streamed at real-time pace in 100 ms chunks, once with
   interim results off and once on; the finals give our transcript and the server's endpoint->final latency
   (``SpeechResult.latency_ms``: VAD endpoint detected -> final result sent).
4. faster-whisper tiny.en int8 greedy (beam 1, temperature 0, no timestamps, no conditioning),
   2 threads, on the same clips: transcript and the time to transcribe the clip, which is what a
   faster-whisper service spends after the endpoint. Our pipeline is timed the same way (decode only,
   no speculative start) for a like-for-like ratio.
5. Component timings: encoder ms, decoder ms per token (batch 1 and batch 4 per row).
6. N concurrent real-time streams, each playing 6 clips separated by 0.8 s of silence: every stream
   must get all its finals; p50/p95 endpoint->final latency.
7. RSS of the server process (current and peak).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import grpc
import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from asr_wer import wer  # noqa: E402
from make_asr_testset import make_set, set_digest  # noqa: E402
from servers import stage_servers  # noqa: E402

from engines.build import BuildContext, build_stage  # noqa: E402
from protos import asr_pb2, asr_pb2_grpc, common_pb2  # noqa: E402
from services.common.settings import cache_root  # noqa: E402

RATE = 16_000
CHUNK = 1600  # 100 ms
GAP_S = 0.8


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _rss_mb(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def _stream(stub, pcm: np.ndarray, *, interim: bool = True,
                  config: asr_pb2.RecognitionConfig | None = None) -> list[asr_pb2.SpeechResult]:
    """Stream int16 audio at real-time pace (``config``, default LINEAR16 at RATE); return the final results."""
    async def requests():
        first = asr_pb2.RecognitionConfig(encoding=common_pb2.LINEAR16, sample_rate_hz=RATE)
        if config is not None:
            first.CopyFrom(config)
        first.interim_results = interim
        yield asr_pb2.StreamingRecognizeRequest(config=first)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i, offset in enumerate(range(0, len(pcm), CHUNK)):
            yield asr_pb2.StreamingRecognizeRequest(audio=pcm[offset:offset + CHUNK].tobytes())
            await asyncio.sleep(max(0.0, start + (i + 1) * CHUNK / RATE - loop.time()))

    return [r.result async for r in stub.StreamingRecognize(requests()) if r.result.is_final]


def _pcm16(audio: np.ndarray) -> np.ndarray:
    # The clips are 16-bit WAVs read as x/32768: this gives back exactly the file's samples (Whisper is
    # sensitive enough that a 32767 scale alone moves a few words).
    return np.clip(np.round(audio * 32768), -32768, 32767).astype("<i2")


async def _ours_streaming(address: str, clips: list[np.ndarray], *, interim: bool) -> tuple[list[str], list[float]]:
    texts, latencies = [], []
    gap = np.zeros(int(GAP_S * RATE), np.float32)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = asr_pb2_grpc.RecognizerStub(channel)
        for clip in clips:
            finals = await asyncio.wait_for(_stream(stub, _pcm16(np.concatenate([clip, gap])), interim=interim), 120)
            texts.append(" ".join(f.text for f in finals if f.text))
            latencies += [f.latency_ms for f in finals if f.endpoint_reason == asr_pb2.VAD_SILENCE]
    return texts, latencies


async def _concurrent(address: str, clips: list[np.ndarray], streams: int, per_stream: int) -> dict:
    gap = np.zeros(int(GAP_S * RATE), np.float32)
    plans = [[clips[(s * per_stream + k) % len(clips)] for k in range(per_stream)] for s in range(streams)]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = asr_pb2_grpc.RecognizerStub(channel)
        started = time.monotonic()
        results = await asyncio.wait_for(asyncio.gather(*(
            _stream(stub, _pcm16(np.concatenate([x for c in plan for x in (c, gap)]))) for plan in plans)), 300)
        wall = time.monotonic() - started
    latencies = [f.latency_ms for finals in results for f in finals if f.endpoint_reason == asr_pb2.VAD_SILENCE]
    return {"finals": [len([f for f in finals if f.text]) for finals in results], "expected": per_stream,
            "latencies": latencies, "wall_s": wall,
            "audio_s": sum(len(c) + len(gap) for c in plans[0]) / RATE}


def _fw_reference(model, audio: np.ndarray) -> str:
    segments, _ = model.transcribe(audio, language="en", beam_size=1, best_of=1, temperature=0.0,
                                   without_timestamps=True, condition_on_previous_text=False, vad_filter=False)
    return "".join(s.text for s in segments).strip()


def _offline(root: Path, clips: list[np.ndarray]) -> dict:
    """faster-whisper int8 vs our unbatched pipeline on each clip, alternating, plus component timings."""
    from faster_whisper import WhisperModel

    from engines.repository import ModelRepository, create_engines
    from services.asr.features import log_mel
    from services.asr.generation import DECODER_MODEL, ENCODER_MODEL, create_generators, encoder_batch_fn
    from services.asr.tokenizer import WhisperTokenizer

    fw = WhisperModel(str(root / "whisper-tiny-en-ct2"), device="cpu", compute_type="int8", cpu_threads=2)
    repo = ModelRepository(root)
    (encoder,) = create_engines(repo.resolve(ENCODER_MODEL))[:1]
    (generator,) = create_generators(repo.resolve(DECODER_MODEL))[:1]
    tok = WhisperTokenizer(root / DECODER_MODEL / "tokenizer.json")
    enc_fn = encoder_batch_fn(encoder)
    _fw_reference(fw, clips[0])  # warm both
    enc_fn([log_mel(clips[0])])
    fw_texts, fw_ms, our_ms, enc_ms, step_ms, our_texts = [], [], [], [], [], []
    for clip in clips:
        t0 = time.perf_counter()
        fw_texts.append(_fw_reference(fw, clip))
        t1 = time.perf_counter()
        out = enc_fn([log_mel(clip)])[0]
        t2 = time.perf_counter()
        generator.prefill([(0, out)])
        steps = 1
        while not (finished := generator.step([0])):
            steps += 1
        generator.release(0)
        t3 = time.perf_counter()
        our_texts.append(tok.decode(finished[0].tokens))
        fw_ms.append((t1 - t0) * 1e3)
        our_ms.append((t3 - t1) * 1e3)
        enc_ms.append((t2 - t1) * 1e3)
        step_ms.append((t3 - t2) * 1e3 / steps)
    # Decoder batching: 4 sequences stepping together vs one (12 steps each).
    outs = [enc_fn([log_mel(c)])[0] for c in clips[:4]]
    batch_ms = {}
    for b in (1, 4):
        slots = list(range(b))
        generator.prefill([(s, outs[s]) for s in slots])
        t = time.perf_counter()
        for _ in range(12):
            generator.step(slots)
        batch_ms[b] = (time.perf_counter() - t) * 1e3 / 12
        for s in slots:
            generator.release(s)
    return {"fw_texts": fw_texts, "fw_ms": fw_ms, "our_ms": our_ms, "enc_ms": enc_ms, "step_ms": step_ms,
            "our_offline_texts": our_texts, "batch_ms": batch_ms}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--per-stream", type=int, default=6)
    args = parser.parse_args()

    testset = cache_root(os.environ) / "asr-testset"
    entries = make_set(testset, piper_cache=cache_root(os.environ))
    clips = [sf.read(testset / e["file"], dtype="float32")[0] for e in entries]
    refs = [e["text"] for e in entries]
    root = cache_root(os.environ) / "models"
    build_stage("asr", BuildContext(models_dir=root, downloads_dir=cache_root(os.environ) / "downloads"))

    with stage_servers(("asr",), env={"VOXPIPE_MODELS_DIR": str(root)}) as servers:
        address, pid = servers["asr"].address, servers["asr"].process.pid
        rss_idle = _rss_mb(pid)
        our_texts, our_lat = asyncio.run(_ours_streaming(address, clips, interim=False))
        our_texts_i, our_lat_i = asyncio.run(_ours_streaming(address, clips, interim=True))
        conc = asyncio.run(_concurrent(address, clips, args.streams, args.per_stream))
        rss = _rss_mb(pid)
    off = _offline(root, clips)

    p50_ours_stream = _pct(our_lat, 50)
    p50_fw, p50_ours_dec = _pct(off["fw_ms"], 50), _pct(off["our_ms"], 50)
    wer_ours, wer_fw = wer(refs, our_texts), wer(refs, off["fw_texts"])
    wer_ours_i = wer(refs, our_texts_i)
    fams = {"espeak-ng": [i for i, e in enumerate(entries) if not e["voice"].startswith("piper")],
            "Piper joe": [i for i, e in enumerate(entries) if e["voice"].startswith("piper")]}

    def sub(texts: list[str], idx: list[int]) -> float:
        return wer([refs[i] for i in idx], [texts[i] for i in idx])

    by_family = "; ".join(f"{name}: ours {sub(our_texts, idx):.3f} vs fw {sub(off['fw_texts'], idx):.3f}"
                          for name, idx in fams.items() if idx)
    wer_ours_offline = wer(refs, off["our_offline_texts"])
    lines = [
        f"date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; machine: {platform.node()}, "
        f"{os.cpu_count()} cores, load avg at end {os.getloadavg()[0]:.1f}",
        f"test set: {len(clips)} clips ({', '.join(sorted({e['voice'] for e in entries}))}), "
        f"{sum(len(c) for c in clips) / RATE:.0f} s of speech, sha256 {set_digest(testset, entries)[:12]}",
        "",
        "| metric | ours (ONNX fp32 service) | faster-whisper tiny.en int8 | ratio / note |",
        "|---|---|---|---|",
        f"| WER (normalised) | {wer_ours:.3f} (streamed finals; {wer_ours_i:.3f} with interims on) | {wer_fw:.3f} "
        f"(whole clip) | diff {wer_ours - wer_fw:+.3f} (target <= +0.02); ours on whole clips (= fw fp32 tokens) "
        f"{wer_ours_offline:.3f} |",
        f"| WER by voice | {by_family} | | |",
        f"| endpoint->final p50, streaming real time, finals only | {p50_ours_stream:.0f} ms (p95 "
        f"{_pct(our_lat, 95):.0f}) | {p50_fw:.0f} ms (transcribe after endpoint) | {p50_ours_stream / p50_fw:.2f} "
        "(target <= 1.1) |",
        f"| endpoint->final p50, streaming real time, interims every 500 ms | {_pct(our_lat_i, 50):.0f} ms (p95 "
        f"{_pct(our_lat_i, 95):.0f}) | {p50_fw:.0f} ms | {_pct(our_lat_i, 50) / p50_fw:.2f} |",
        f"| decode-only per clip p50 (no speculative start) | {p50_ours_dec:.0f} ms | {p50_fw:.0f} ms | "
        f"{p50_ours_dec / p50_fw:.2f} |",
        f"| encoder (batch 1, incl. 30 s window) p50 | {_pct(off['enc_ms'], 50):.0f} ms | | |",
        f"| decoder per token p50 (batch 1) | {_pct(off['step_ms'], 50):.1f} ms | | |",
        f"| decoder step, batch 1 vs batch 4 | {off['batch_ms'][1]:.1f} ms vs {off['batch_ms'][4]:.1f} ms "
        f"({off['batch_ms'][4] / 4:.1f} ms per row) | | |",
        f"| service RSS idle / after runs / peak | {rss_idle[0]:.0f} / {rss[0]:.0f} / {rss[1]:.0f} MiB | | |",
        f"| {args.streams} concurrent real-time streams | finals per stream {conc['finals']} of {conc['expected']}; "
        f"endpoint->final p50 {_pct(conc['latencies'], 50):.0f} ms, p95 {_pct(conc['latencies'], 95):.0f} ms; "
        f"wall {conc['wall_s']:.1f} s for {conc['audio_s']:.1f} s of audio | | |",
    ]
    print("\n".join(lines))
    print("\nper clip: reference | ours (streamed, finals only) | faster-whisper int8")
    for ref, ours, fw in zip(refs, our_texts, off["fw_texts"], strict=True):
        print(f"  {ref} | {ours} | {fw}")
    ok = all(n == conc["expected"] for n in conc["finals"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
