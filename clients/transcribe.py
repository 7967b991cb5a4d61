"""``voxpipe transcribe FILE.wav [--stream] [--json] [--phrase TEXT[:BOOST] ...] [--no-default-phrases]``:
speech to text with the ASR service (like Riva's ``transcribe_file``).

Without ``--stream`` the whole file goes in one ``Recognize`` call. With ``--stream`` it is sent in
100 ms chunks at real-time pace through ``StreamingRecognize``; interim results are shown while the
audio plays and every final result is printed. ``--json`` prints one JSON object per final result.
``--phrase`` boosts a phrase (a name the model may not know) in the final results, on top of the server's
default phrases (the movie catalogue's titles), which ``--no-default-phrases`` switches off.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from clients.api import AudioFileError, load_audio
from protos import asr_pb2, asr_pb2_grpc, common_pb2
from services.common.settings import StackSettings

CHUNK_MS = 100


@dataclass(frozen=True, kw_only=True)
class TranscribeOptions:
    address: str
    audio: Path
    stream: bool
    as_json: bool
    speed: float  # 1.0 = real time; 0 = as fast as possible
    interim: bool
    silence_ms: int
    timeout_s: float
    phrases: tuple[tuple[str, float], ...] = ()
    default_phrases: bool = True


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``transcribe`` to the CLI."""
    p = sub.add_parser("transcribe", help="transcribe a WAV file with the ASR service",
                       description="Send an audio file (WAV/FLAC/OGG, any rate; stereo is downmixed to mono and "
                                   "converted to 16-bit PCM by the client, as for talk) to voxpipe.v1.Recognizer "
                                   "and print the transcript. Exit codes: 0 done, 1 the call failed, 2 the file "
                                   "cannot be read.")
    p.add_argument("audio", type=Path, help="audio file")
    p.add_argument("--stream", action="store_true",
                   help="stream in 100 ms chunks at real-time pace, showing interim results")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per final result (text, start_s, end_s, confidence, ...)")
    p.add_argument("--speed", type=float, default=1.0,
                   help="with --stream: playback speed (1 = real time, 0 = as fast as possible)")
    p.add_argument("--no-interim", action="store_true", help="with --stream: do not ask for interim results")
    p.add_argument("--silence-ms", type=int, default=0, help="endpointing silence (0 = server default, 300)")
    p.add_argument("--phrase", action="append", default=[], type=_phrase, metavar="TEXT[:BOOST]",
                   help="favour this phrase in final results (repeatable); BOOST in nats per token, 0..20 "
                        "(default: the server's, 4), e.g. --phrase Gattaca --phrase 'Caro Diario:6'")
    p.add_argument("--no-default-phrases", action="store_true",
                   help="do not boost the server's default phrases (the movie catalogue's titles)")
    p.add_argument("--address", help="ASR service address (default: from the configuration)")
    p.add_argument("--timeout-s", type=float, default=120.0, help="RPC deadline")
    p.set_defaults(handler=_transcribe)


def _transcribe(args: argparse.Namespace, settings: StackSettings) -> int:
    options = TranscribeOptions(
        address=args.address or settings.stage("asr").server.address, audio=args.audio, stream=args.stream,
        as_json=args.json, speed=max(0.0, args.speed), interim=not args.no_interim, silence_ms=args.silence_ms,
        timeout_s=args.timeout_s, phrases=tuple(args.phrase), default_phrases=not args.no_default_phrases)
    try:
        pcm, rate = load_audio(options.audio)
    except AudioFileError as e:
        print(f"voxpipe transcribe: {e}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(transcribe(options, pcm, rate))
    except grpc.aio.AioRpcError as e:
        print(f"voxpipe transcribe: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1


def _phrase(value: str) -> tuple[str, float]:
    """``TEXT`` or ``TEXT:BOOST`` (the server validates both and names a bad one)."""
    text, sep, boost = value.rpartition(":")
    if sep:
        try:
            return text, float(boost)
        except ValueError:
            pass  # a colon inside the phrase ("Star Trek: Generations")
    return value, 0.0


def _result_dict(r: asr_pb2.SpeechResult) -> dict:
    return {"text": r.text, "start_s": round(r.start_s, 3), "end_s": round(r.end_s, 3),
            "confidence": round(r.confidence, 4), "utterance_index": r.utterance_index,
            "endpoint_reason": asr_pb2.EndpointReason.Name(r.endpoint_reason), "latency_ms": round(r.latency_ms, 1),
            "boosted_phrases": list(r.boosted_phrases)}


def _print_final(r: asr_pb2.SpeechResult, as_json: bool, interactive: bool) -> None:
    if as_json:
        print(json.dumps(_result_dict(r)), flush=True)
        return
    clear = "\r\033[K" if interactive else ""
    reason = asr_pb2.EndpointReason.Name(r.endpoint_reason)
    boosted = f", boosted: {', '.join(r.boosted_phrases)}" if r.boosted_phrases else ""
    print(f"{clear}[{r.start_s:6.2f}-{r.end_s:6.2f}] {r.text or '(no speech)'}  "
          f"({reason}, confidence {r.confidence:.2f}, {r.latency_ms:.0f} ms after endpoint{boosted})", flush=True)


async def transcribe(options: TranscribeOptions, pcm: bytes, rate: int) -> int:
    """Run the RPC(s) and print the results; returns the exit code."""
    config = asr_pb2.RecognitionConfig(
        encoding=common_pb2.LINEAR16, sample_rate_hz=rate, language_code="en-US",
        interim_results=options.stream and options.interim and not options.as_json,
        endpointing=asr_pb2.EndpointingConfig(silence_ms=options.silence_ms),
        phrases=[asr_pb2.SpeechPhrase(phrase=text, boost=boost) for text, boost in options.phrases],
        disable_default_phrases=not options.default_phrases)
    async with grpc.aio.insecure_channel(options.address) as channel:
        stub = asr_pb2_grpc.RecognizerStub(channel)
        if not options.stream:
            response = await stub.Recognize(asr_pb2.RecognizeRequest(config=config, audio=pcm),
                                            timeout=options.timeout_s)
            for result in response.results:
                _print_final(result, options.as_json, interactive=False)
            return 0
        interactive = sys.stdout.isatty() and not options.as_json
        calls = stub.StreamingRecognize(_requests(config, pcm, rate, options.speed), timeout=options.timeout_s)
        async for response in calls:
            r = response.result
            if r.is_final:
                _print_final(r, options.as_json, interactive)
            elif not options.as_json:
                line = f"  ... {r.text}"
                print(f"\r\033[K{line}" if interactive else line, end="" if interactive else "\n", flush=True)
    return 0


async def _requests(config: asr_pb2.RecognitionConfig, pcm: bytes, rate: int,
                    speed: float) -> AsyncIterator[asr_pb2.StreamingRecognizeRequest]:
    yield asr_pb2.StreamingRecognizeRequest(config=config)
    step = rate * CHUNK_MS // 1000 * 2
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i, offset in enumerate(range(0, len(pcm), step)):
        yield asr_pb2.StreamingRecognizeRequest(audio=pcm[offset:offset + step])
        if speed > 0:
            # Pace against the clock, not per chunk, so scheduling jitter does not accumulate.
            await asyncio.sleep(max(0.0, start + (i + 1) * CHUNK_MS / 1000 / speed - loop.time()))


__all__ = ["TranscribeOptions", "register", "transcribe"]
