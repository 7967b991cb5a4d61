"""``voxpipe talk``: ask the assistant with a recorded question (or the microphone) and print the turn."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import wave
from dataclasses import dataclass
from pathlib import Path

from clients.api import AudioFileError, Conversation, TurnResult, load_audio, stream_audio
from protos import assistant_pb2
from services.common.settings import StackSettings

BUNDLED_QUESTION = Path(__file__).parent / "data" / "question.wav"


@dataclass(frozen=True, kw_only=True)
class TalkOptions:
    address: str
    audio: Path | None
    mic_s: float
    realtime: bool
    output: Path | None
    as_json: bool
    budget_ms: int
    session_id: str
    voice: str


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``talk`` to the CLI."""
    p = sub.add_parser("talk", help="ask the running stack a spoken question and print the turn report",
                       description="Stream a WAV/FLAC/OGG file (any rate; stereo is downmixed to mono by the "
                                   "client) at real-time pace to Assistant.Converse, then print the transcript, "
                                   "intent, recommendations, reply text and the turn's latency table. Exit codes: 0 "
                                   "answered (a warning on stderr for what was degraded), 1 no answer (no speech "
                                   "heard, or the call failed), 2 the file cannot be read.")
    p.add_argument("audio", nargs="?", type=Path, default=BUNDLED_QUESTION,
                   help="audio file (default: the bundled question, 'Can you recommend a comedy from the nineties?')")
    p.add_argument("--mic", type=float, metavar="SECONDS", default=0.0,
                   help="record SECONDS from the default microphone instead of a file (needs the sounddevice package)")
    p.add_argument("--address", help="orchestrator address (default: from the configuration)")
    p.add_argument("--fast", action="store_true", help="send the audio as fast as possible, not at real-time pace")
    p.add_argument("-o", "--output", type=Path, help="write the spoken reply to this WAV file")
    p.add_argument("--json", action="store_true", help="print one JSON object per turn instead of tables")
    p.add_argument("--budget-ms", type=int, default=0, help="turn budget for this conversation (0 = server default)")
    p.add_argument("--session", default="", help="session id to continue (ratings carry over)")
    p.add_argument("--voice", default="", help="TTS voice (default: the server's)")
    p.set_defaults(handler=_talk)


def _talk(args: argparse.Namespace, settings: StackSettings) -> int:
    options = TalkOptions(
        address=args.address or settings.stage("orchestrator").server.address, audio=None if args.mic else args.audio,
        mic_s=args.mic, realtime=not args.fast, output=args.output, as_json=args.json, budget_ms=args.budget_ms,
        session_id=args.session, voice=args.voice)
    try:
        turns = asyncio.run(talk(options))
    except Exception as e:  # the CLI's edge: say what failed, exit non-zero
        import grpc

        if isinstance(e, grpc.aio.AioRpcError):
            print(f"voxpipe talk: {e.code().name}: {e.details()}", file=sys.stderr)
        elif isinstance(e, AudioFileError):
            print(f"voxpipe talk: {e}", file=sys.stderr)
            return 2
        else:
            print(f"voxpipe talk: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return exit_code(turns)


def exit_code(turns: list[TurnResult]) -> int:
    """0 when every turn was answered (warning on stderr for what was degraded away, e.g. no audio while TTS
    is down); 1 when no speech was heard or a turn got no answer."""
    if not turns:
        return 1
    code = 0
    for t in turns:
        if not t.reply_text:
            code = 1
        elif t.errors or not t.audio:
            stages = ", ".join(sorted({e.stage for e in t.errors})) or "tts"
            print(f"voxpipe talk: warning: turn {t.turn_index} was answered without "
                  f"{'audio' if not t.audio else 'everything'} ({stages} failed; the report says why)", file=sys.stderr)
    return code


def record_microphone(seconds: float, rate: int = 16000) -> bytes:
    """LINEAR16 from the default input device."""
    try:
        import sounddevice
    except ImportError as e:
        raise RuntimeError("--mic needs the sounddevice package (pip install sounddevice) and a sound device") from e
    frames = sounddevice.rec(int(seconds * rate), samplerate=rate, channels=1, dtype="int16")
    sounddevice.wait()
    return frames.tobytes()


async def talk(options: TalkOptions) -> list[TurnResult]:
    """Stream the question, collect every turn, print them; returns the turns."""
    if options.audio is not None:
        pcm, rate = await asyncio.to_thread(load_audio, options.audio)
    else:
        rate = 16000
        pcm = await asyncio.to_thread(record_microphone, options.mic_s, rate)
    printer = None if options.as_json else _print_interim
    async with Conversation(options.address, sample_rate_hz=rate, budget_ms=options.budget_ms,
                            session_id=options.session_id, voice=options.voice, on_event=printer) as conv:
        await stream_audio(conv, pcm, rate, realtime=options.realtime)
        await conv.close()
        turns = conv.completed_turns()
    for turn in turns:
        print(json.dumps(turn.to_json()) if options.as_json else format_turn(turn), flush=True)
    if not turns:  # silence is an answer too: say it, in either form
        if options.as_json:
            print(json.dumps({"turn": None, "no_speech": True, "transcript": ""}), flush=True)
        else:
            print("no speech was heard in the audio (nothing to answer)", flush=True)
    if options.output is not None and turns:
        audio = b"".join(bytes(t.audio) for t in turns)
        write_wav(options.output, audio, turns[-1].sample_rate_hz or 22050)
        if not options.as_json:
            print(f"reply audio: {options.output} ({len(audio) / 2 / (turns[-1].sample_rate_hz or 22050):.1f} s)")
    return turns


def write_wav(path: Path, pcm: bytes, rate: int) -> None:
    """Write LINEAR16 mono to a WAV file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)


def _print_interim(response: assistant_pb2.ConverseResponse) -> None:
    if response.WhichOneof("event") == "transcript" and not response.transcript.is_final and response.transcript.text:
        print(f"  … {response.transcript.text}", file=sys.stderr, flush=True)


def format_report(report: assistant_pb2.TurnReport, client_v2v_ms: float | None = None) -> str:
    """The turn's latency table."""
    rows = [("stage", "ms", "server ms", "budget ms", "missed", "degraded", "note")]
    for s in report.stages:
        rows.append((s.stage, f"{s.ms:.1f}", f"{s.server_ms:.1f}" if s.server_ms else "-", f"{s.budget_ms:.0f}",
                     "MISSED" if s.missed else "ok", "yes" if s.degraded else "-", s.note))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  " + "  ".join(c.rjust(w) if 0 < i < 4 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
             for r in rows]
    v2v = f"voice-to-voice {report.voice_to_voice_ms:.0f} ms (server)"
    if client_v2v_ms is not None:
        v2v += f", {client_v2v_ms:.0f} ms (client)"
    lines.append(f"  {v2v}; endpoint wait {report.endpoint_wait_ms:.0f} ms; overhead {report.overhead_ms:.1f} ms "
                 f"(orchestrator {report.orchestration_ms:.1f} ms + hops); "
                 f"budget {report.budget_ms:.0f} ms "
                 f"from the endpoint: {'MISSED' if report.missed else 'met'}"
                 + (f"; speculative, {report.hidden_ms:.0f} ms prepared before the final" if report.speculative else "")
                 + ("; CANCELLED" if report.cancelled else ""))
    if report.trace_id:
        lines.append(f"  trace {report.trace_id}")
    return "\n".join(lines)


def format_turn(turn: TurnResult) -> str:
    """A human-readable turn."""
    out = [f"turn {turn.turn_index}", f"  you said:  {turn.transcript!r}"]
    if turn.understanding is not None:
        ents = ", ".join(f"{e.type}={e.value}" for e in turn.understanding.entities) or "none"
        out.append(f"  intent:    {turn.intent} ({turn.understanding.confidence:.2f}); entities: {ents}")
    for item in turn.items:
        out.append(f"  movie:     {item.title} [{', '.join(item.genres)}] — {item.reason}")
    out.append(f"  reply:     {turn.reply_text}")
    for e in turn.errors:
        out.append(f"  error:     {e.stage}: {e.code}: {e.message}")
    if turn.report is not None:
        out.append(format_report(turn.report, turn.client_voice_to_voice_ms))
    return "\n".join(out)
