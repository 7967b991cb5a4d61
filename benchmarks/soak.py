"""Soak: the whole CPU stack under steady load for minutes, with cancels and bad requests mixed in.

Starts every stage (``voxpipe up``'s launcher, free ports), warms it with one turn, then for ``--minutes``
runs ``--users`` simulated users (``voxpipe bench``'s: speak at real-time pace, listen to the whole reply,
think 1–3 s); every ``--cancel-every``-th turn the user barges in (CANCEL_TURN) as the reply starts, and a
prober sends a bad request every ``--bad-every-s`` seconds, cycling through: an unknown audio encoding, a
Converse that never sends its config, an Understand that is not UTF-8, a Recommend with k=0, an unknown
voice. It reports per minute voice-to-voice p50/p99 and turns, every error that was not expected, how many
times a stage process exited, the CPU the stages used, and each process's RSS at the start and the end.

    flock /tmp/voxpipe-bench.lock .venv/bin/python benchmarks/soak.py --minutes 10 --out /tmp/soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clients.api import Conversation, load_audio, stream_audio  # noqa: E402
from protos import (  # noqa: E402  # noqa: E402
    asr_pb2,
    assistant_pb2,
    assistant_pb2_grpc,
    nlp_pb2,
    recommender_pb2,
    recommender_pb2_grpc,
    tts_pb2,
    tts_pb2_grpc,
)
from services.common import settings as stack_settings  # noqa: E402

WAVS = sorted((ROOT / "clients" / "data").glob("*.wav"))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def user(address: str, clips, index: int, stop_at: float, cancel_every: int, turns: list, errors: list) -> None:
    rng = random.Random(index)
    await asyncio.sleep(rng.uniform(0, 3))
    n = 0
    audio_seen = asyncio.Event()

    def on_event(response) -> None:
        if response.WhichOneof("event") in ("audio", "report", "error"):
            audio_seen.set()

    try:
        pcm, rate = clips[index % len(clips)]
        async with Conversation(address, sample_rate_hz=rate, interim_results=False, on_event=on_event) as conv:
            while time.monotonic() < stop_at:
                pcm, _ = clips[(index + n) % len(clips)]
                n += 1
                cancel = cancel_every and n % cancel_every == 0
                audio_seen.clear()
                await stream_audio(conv, pcm, rate, realtime=True)
                if cancel:  # barge in as soon as the reply's first audio arrives
                    await asyncio.wait_for(audio_seen.wait(), 60)
                    await conv.cancel_turn()
                turn = await conv.next_turn(timeout_s=60)
                turns.append({"t": time.monotonic(), "v2v": turn.client_voice_to_voice_ms, "cancelled":
                              bool(turn.report and turn.report.cancelled), "errors": [e.code for e in turn.errors]})
                audio_s = len(turn.audio) / 2 / (turn.sample_rate_hz or 22050)
                heard = time.monotonic() - (turn.first_audio_s or time.monotonic())
                await asyncio.sleep(max(0.0, audio_s - heard) + rng.uniform(1, 3))
    except Exception as e:  # any failure of a user's conversation is unexpected here
        detail = e.details() if isinstance(e, grpc.aio.AioRpcError) else str(e)
        errors.append(f"user {index}: {type(e).__name__}: {detail}")


async def prober(settings, stop_at: float, every_s: float, expected: list, errors: list) -> None:
    """One bad request every ``every_s``; each must get its own clear status, never INTERNAL or UNKNOWN."""
    orchestrator = settings.stage("orchestrator").server.address
    nlp, rec, tts = (settings.stage(s).server.address for s in ("nlp", "recommender", "tts"))

    async def bad_encoding(ch):
        audio = asr_pb2.RecognitionConfig(encoding=99, sample_rate_hz=16000)
        stub = assistant_pb2_grpc.AssistantStub(ch)
        async for _ in stub.Converse(iter([assistant_pb2.ConverseRequest(
                config=assistant_pb2.ConverseConfig(audio=audio))]), timeout=10):
            pass

    async def no_config(ch):
        async def silent():
            await asyncio.sleep(30)
            yield assistant_pb2.ConverseRequest()
        async for _ in assistant_pb2_grpc.AssistantStub(ch).Converse(silent(), timeout=20):
            pass

    async def not_utf8(ch):
        data = nlp_pb2.UnderstandRequest(text="hello").SerializeToString().replace(b"hello", b"hel\xffo")
        await ch.unary_unary("/voxpipe.v1.Understander/Understand", request_serializer=bytes,
                             response_deserializer=nlp_pb2.UnderstandResponse.FromString)(data, timeout=10)

    async def k_zero(ch):
        await recommender_pb2_grpc.RecommenderStub(ch).Recommend(recommender_pb2.RecommendRequest(k=0), timeout=10)

    async def unknown_voice(ch):
        async for _ in tts_pb2_grpc.SynthesizerStub(ch).Synthesize(
                tts_pb2.SynthesizeRequest(text="Hello there.", voice="nobody"), timeout=10):
            pass

    cases = [(bad_encoding, orchestrator, "INVALID_ARGUMENT"), (no_config, orchestrator, "DEADLINE_EXCEEDED"),
             (not_utf8, nlp, "INVALID_ARGUMENT"), (k_zero, rec, "INVALID_ARGUMENT"),
             (unknown_voice, tts, "NOT_FOUND")]
    i = 0
    while time.monotonic() < stop_at:
        case, address, want = cases[i % len(cases)]
        i += 1
        async with grpc.aio.insecure_channel(address) as ch:
            try:
                await case(ch)
                errors.append(f"{case.__name__}: answered OK, expected {want}")
            except grpc.aio.AioRpcError as e:
                (expected if e.code().name == want else errors).append(f"{case.__name__}: {e.code().name}")
        await asyncio.sleep(every_s)


async def launch_on_free_ports(*, metrics: bool = False, **env: str):
    """The whole CPU stack, as ``voxpipe up`` starts it, on free ports (metrics endpoints too with ``metrics``),
    with ``env`` added to the environment. Returns the stack, its settings, its processes by label and the
    orchestrator's address."""
    from benchmarks.servers import free_port
    from services.launcher import launch

    for stage in stack_settings.STAGE_ORDER:
        os.environ[f"VOXPIPE_{stage.upper()}__PORT"] = str(free_port())
        os.environ[f"VOXPIPE_{stage.upper()}__METRICS_PORT"] = str(free_port()) if metrics else "0"
    os.environ.setdefault("VOXPIPE_LOG_LEVEL", "WARNING")
    os.environ.update(env)
    settings = stack_settings.from_env(os.environ)
    stack = await launch(settings)
    return stack, settings, {s.label: s.process for s in stack.stages}, settings.stage("orchestrator").server.address


async def main(args: argparse.Namespace) -> dict:
    from services.launcher import shutdown

    stack, settings, procs, address = await launch_on_free_ports(VOXPIPE_ORCHESTRATOR__CONFIG_TIMEOUT_S="5")
    clips = [load_audio(p) for p in WAVS]
    try:
        await user(address, clips, 0, time.monotonic() + 0.1, 0, [], [])  # warm-up turn
        rss_start = {k: rss_mib(p.pid) for k, p in procs.items()}
        cpu_start = {k: cpu_s(p.pid) for k, p in procs.items()}
        started = time.monotonic()
        stop_at = started + args.minutes * 60
        turns: list[dict] = []
        errors: list[str] = []
        expected: list[str] = []
        rss_by_minute: list[dict[str, float]] = []

        async def sample_rss() -> None:
            while time.monotonic() < stop_at:
                await asyncio.sleep(60)
                rss_by_minute.append({k: round(rss_mib(p.pid), 1) for k, p in procs.items() if p.returncode is None})

        await asyncio.gather(prober(settings, stop_at, args.bad_every_s, expected, errors), sample_rss(),
                             *(user(address, clips, i + 1, stop_at, args.cancel_every, turns, errors)
                               for i in range(args.users)))
        elapsed = time.monotonic() - started
        exited = [k for k, p in procs.items() if p.returncode is not None]
        rss_end = {k: rss_mib(p.pid) for k, p in procs.items() if p.returncode is None}
        cpu = {k: round((cpu_s(p.pid) - cpu_start[k]) / elapsed, 3) for k, p in procs.items() if p.returncode is None}
    finally:
        await shutdown(stack)
    minutes = []
    for m in range(int(np.ceil(elapsed / 60))):
        window = [t for t in turns if started + 60 * m <= t["t"] < started + 60 * (m + 1)]
        v2v = [t["v2v"] for t in window if t["v2v"] and not t["cancelled"]]
        minutes.append({"minute": m + 1, "turns": len(window), "cancelled": sum(t["cancelled"] for t in window),
                        "v2v_p50_ms": float(np.percentile(v2v, 50)) if v2v else None,
                        "v2v_p99_ms": float(np.percentile(v2v, 99)) if v2v else None})
    turn_errors = [e for t in turns for e in t["errors"]]
    return {"users": args.users, "minutes": args.minutes, "turns": len(turns), "per_minute": minutes,
            "unexpected_errors": errors + turn_errors, "expected_errors": len(expected),
            "expected_by_case": {c: sum(e.startswith(c) for e in expected) for c in {e.split(":")[0] for e in expected}},
            "processes_exited": exited, "stage_cpu_cores": cpu, "cores": os.cpu_count(),
            "rss_mib_start": rss_start, "rss_mib_end": rss_end, "rss_mib_by_minute": rss_by_minute}


def report(result: dict) -> str:
    lines = [f"soak: {result['users']} users for {result['minutes']} min on {result['cores']} cores: "
             f"{result['turns']} turns, {result['expected_errors']} bad requests answered as expected "
             f"{result['expected_by_case']}, unexpected errors: {len(result['unexpected_errors'])}, "
             f"stage processes that exited: {result['processes_exited'] or 'none'}"]
    for m in result["per_minute"]:
        p50, p99 = m["v2v_p50_ms"], m["v2v_p99_ms"]
        lines.append(f"  minute {m['minute']:2d}: {m['turns']:3d} turns ({m['cancelled']} cancelled), voice-to-voice "
                     f"p50 {p50 or 0:7.0f}  p99 {p99 or 0:7.0f} ms")
    total_cpu = sum(result["stage_cpu_cores"].values())
    lines.append(f"  stage CPU: {total_cpu:.2f} cores in all ({total_cpu / result['cores']:.0%} of the machine): "
                 f"{result['stage_cpu_cores']}")
    by_minute = result["rss_mib_by_minute"]
    for k in result["rss_mib_start"]:
        start, end = result["rss_mib_start"][k], result["rss_mib_end"].get(k)
        first = by_minute[0].get(k) if by_minute else None
        lines.append(f"  RSS {k:<13} {start:7.1f} at the start, {first} after a minute, "
                     f"{end if end is None else round(end, 1)} MiB at the end"
                     + (f" ({(end - first) / first:+.1%} since minute 1)" if end and first else "")
                     + f"; per minute {[m.get(k) for m in by_minute]}")
    for e in result["unexpected_errors"][:20]:
        lines.append(f"  unexpected: {e}")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--cancel-every", type=int, default=7, help="every Nth turn of a user barges in (0 = never)")
    parser.add_argument("--bad-every-s", type=float, default=5.0)
    parser.add_argument("--out", type=Path)
    result = asyncio.run(main(parser.parse_args()))
    print(report(result))
    if parser.parse_args().out:
        parser.parse_args().out.write_text(json.dumps(result, indent=1))
