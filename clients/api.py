"""The async Python client of the voxpipe Assistant: an async context manager around ``Converse``.

    async with Conversation("127.0.0.1:50050", sample_rate_hz=16000) as conv:
        await stream_audio(conv, pcm, 16000)          # real-time pace; or realtime=False
        turn = await conv.next_turn()
        print(turn.transcript, turn.reply_text, turn.report.voice_to_voice_ms)

Audio is LINEAR16 mono; :func:`load_audio` reads WAV/FLAC/OGG at any rate, downmixes stereo (mean of
channels) and resamples rates outside 8–48 kHz to 16 kHz.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from protos import asr_pb2, assistant_pb2, assistant_pb2_grpc, common_pb2
from services.common import grpc_fix

grpc_fix.apply()  # a status the server ends a stream with survives a write that races it
CHUNK_MS = 20


@dataclass
class TurnResult:
    """Everything the server sent for one turn."""

    turn_index: int
    transcript: str = ""
    interim: list[str] = field(default_factory=list)
    understanding: Any = None  # nlp_pb2.UnderstandResponse
    items: list[Any] = field(default_factory=list)  # recommender_pb2.Item
    reply_text: str = ""
    audio: bytearray = field(default_factory=bytearray)
    sample_rate_hz: int = 0
    report: Any = None  # assistant_pb2.TurnReport
    errors: list[Any] = field(default_factory=list)  # assistant_pb2.TurnError
    client_voice_to_voice_ms: float | None = None
    first_audio_s: float | None = None  # time.monotonic() when the reply's first audio arrived
    _final_end_s: float | None = None

    @property
    def intent(self) -> str:
        return self.understanding.intent if self.understanding is not None else ""

    def to_json(self) -> dict[str, Any]:
        """The documented JSON form (``voxpipe talk --json``)."""
        entities = [] if self.understanding is None else [
            {"type": e.type, "value": e.value, "text": e.text, "start": e.start, "end": e.end}
            for e in self.understanding.entities]
        report = self.report
        return {
            "turn": self.turn_index,
            "transcript": self.transcript,
            "intent": self.intent,
            "entities": entities,
            "items": [{"item_id": i.item_id, "title": i.title, "year": i.year, "reason": i.reason} for i in self.items],
            "reply_text": self.reply_text,
            "report": None if report is None else [
                {"stage": s.stage, "ms": round(s.ms, 1), "server_ms": round(s.server_ms, 2),
                 "budget_ms": round(s.budget_ms, 1), "missed": s.missed, "degraded": s.degraded, "note": s.note}
                for s in report.stages],
            "voice_to_voice_ms": None if report is None else round(report.voice_to_voice_ms, 1),
            "client_voice_to_voice_ms": None if self.client_voice_to_voice_ms is None else round(self.client_voice_to_voice_ms, 1),
            "endpoint_wait_ms": None if report is None else round(report.endpoint_wait_ms, 1),
            "orchestration_ms": None if report is None else round(report.orchestration_ms, 2),
            "overhead_ms": None if report is None else round(report.overhead_ms, 2),
            "budget_ms": None if report is None else report.budget_ms,
            "missed": None if report is None else report.missed,
            "cancelled": None if report is None else report.cancelled,
            "speculative": None if report is None else report.speculative,
            "hidden_ms": None if report is None else round(report.hidden_ms, 1),
            "trace_id": None if report is None else report.trace_id,
            "errors": [{"code": e.code, "message": e.message, "stage": e.stage} for e in self.errors],
            "audio_s": round(len(self.audio) / 2 / self.sample_rate_hz, 3) if self.sample_rate_hz else 0.0,
        }


class AudioFileError(ValueError):
    """An audio file that cannot be used: missing, empty, or not a format libsndfile reads."""


def load_audio(path: Path) -> tuple[bytes, int]:
    """The one reader of audio files for the CLIs and benchmarks: any format libsndfile reads, as LINEAR16 mono
    bytes (channels averaged) and its rate (resampled to 16 kHz if outside 8–48 kHz).

    Raises:
        AudioFileError: the file is missing, empty, or not audio; the message names the file.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioFileError(f"{path} is empty (0 bytes): expected a WAV, FLAC or OGG file")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        reason = getattr(e, "error_string", None) or str(e)
        raise AudioFileError(f"{path} is not an audio file voxpipe can read (WAV, FLAC, OGG): {reason}") from None
    if not len(data):
        raise AudioFileError(f"{path} holds no audio samples")
    mono = data.mean(axis=1)
    if not 8000 <= rate <= 48000:
        import soxr

        mono, rate = soxr.resample(mono, rate, 16000), 16000
    pcm = (np.clip(mono, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    return pcm, int(rate)


class Conversation:
    """One Converse stream. Owns its channel and the task that reads server events."""

    def __init__(self, address: str, *, sample_rate_hz: int, session_id: str = "", voice: str = "",
                 output_sample_rate_hz: int = 0, budget_ms: int = 0, interim_results: bool = True,
                 barge_in_on_speech: bool = False, silence_ms: int = 0, timeout_s: float | None = None,
                 on_event: Callable[[assistant_pb2.ConverseResponse], None] | None = None) -> None:
        self.address = address
        self.sample_rate_hz = sample_rate_hz
        self.timeout_s = timeout_s
        self.on_event = on_event
        audio = asr_pb2.RecognitionConfig(encoding=common_pb2.LINEAR16, sample_rate_hz=sample_rate_hz,
                                          interim_results=interim_results,
                                          endpointing=asr_pb2.EndpointingConfig(silence_ms=silence_ms))
        self._config = assistant_pb2.ConverseConfig(
            audio=audio, session_id=session_id, voice=voice, output_sample_rate_hz=output_sample_rate_hz,
            budget_ms=budget_ms, barge_in_on_speech=barge_in_on_speech)
        self.session_id = session_id
        self._sent_ends: list[int] = []
        self._sent_times: list[float] = []
        self._samples = 0
        self._turns: dict[int, TurnResult] = {}
        self._done: asyncio.Queue[TurnResult] = asyncio.Queue()
        self._reader: asyncio.Task | None = None
        self._session_ready = asyncio.Event()

    async def __aenter__(self) -> Conversation:
        self._channel = grpc.aio.insecure_channel(self.address)
        self._call = assistant_pb2_grpc.AssistantStub(self._channel).Converse(timeout=self.timeout_s)
        await self._call.write(assistant_pb2.ConverseRequest(config=self._config))
        self._reader = asyncio.create_task(self._read(), name="conversation-reader")
        # The server answers a config it accepts with the session, and one it refuses (a bad value, an unknown
        # voice, no free slot) by ending the stream: say which here, before any audio is sent.
        ready = asyncio.ensure_future(self._session_ready.wait())
        try:
            await asyncio.wait({ready, self._reader}, timeout=self.timeout_s or 30.0,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if self._reader.done() and not self._session_ready.is_set():
            await self._channel.close()
            self._reader.result()  # raises the stream's error
            raise EOFError("the server ended the conversation before it started")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Half-close, wait for the server to finish the last turn, close the channel."""
        if self._reader is None:
            return
        try:
            if not self._reader.done():
                await self._call.done_writing()
            await self._reader
        finally:
            self._reader = None
            await self._channel.close()

    async def send_audio(self, pcm: bytes) -> None:
        """Send LINEAR16 audio; remembers when each sample left, for the client-side voice-to-voice."""
        self._samples += len(pcm) // 2
        self._sent_ends.append(self._samples)
        self._sent_times.append(time.monotonic())
        await self._write(assistant_pb2.ConverseRequest(audio=pcm))

    async def end_of_utterance(self) -> None:
        await self._control(assistant_pb2.ConverseControl.END_OF_UTTERANCE)

    async def cancel_turn(self) -> None:
        """Barge-in: cancel the reply in flight."""
        await self._control(assistant_pb2.ConverseControl.CANCEL_TURN)

    async def next_turn(self, timeout_s: float | None = 60.0) -> TurnResult:
        """The next completed turn (its report arrived), or raise the stream's error."""
        getter = asyncio.ensure_future(self._done.get())
        assert self._reader is not None
        done, _ = await asyncio.wait({getter, self._reader}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            return getter.result()
        getter.cancel()
        if self._reader in done:
            self._reader.result()  # raises the RPC error if any
            raise EOFError("the conversation ended before another turn completed")
        raise TimeoutError(f"no turn completed within {timeout_s} s")

    def completed_turns(self) -> list[TurnResult]:
        """Turns completed and not yet taken by :meth:`next_turn`, oldest first."""
        turns = []
        while not self._done.empty():
            turns.append(self._done.get_nowait())
        return turns

    async def _control(self, action: int) -> None:
        await self._write(assistant_pb2.ConverseRequest(control=assistant_pb2.ConverseControl(action=action)))

    async def _write(self, request: assistant_pb2.ConverseRequest) -> None:
        """Send one message. If the server has already ended the stream, raise the status it ended with
        (e.g. NOT_FOUND for an unknown voice), not gRPC's "Internal error from Core" about the failed write."""
        try:
            await self._call.write(request)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            if self._reader is not None:
                await asyncio.wait({self._reader}, timeout=5.0)
                if self._reader.done() and not self._reader.cancelled() and self._reader.exception() is not None:
                    raise self._reader.exception() from None
            raise

    def _sent_time_of(self, audio_s: float) -> float | None:
        if not self._sent_ends:
            return None
        i = bisect.bisect_left(self._sent_ends, int(audio_s * self.sample_rate_hz))
        return self._sent_times[min(i, len(self._sent_times) - 1)]

    async def _read(self) -> None:
        while (response := await self._call.read()) is not grpc.aio.EOF:
            now = time.monotonic()
            if self.on_event is not None:
                self.on_event(response)
            kind = response.WhichOneof("event")
            if kind == "session":
                self.session_id = response.session.session_id
                self._session_ready.set()
                continue
            turn = self._turns.setdefault(response.turn_index, TurnResult(turn_index=response.turn_index))
            if kind == "transcript":
                if response.transcript.is_final:
                    turn.transcript = response.transcript.text
                    turn._final_end_s = response.transcript.end_s
                    if not turn.transcript.strip():
                        self._turns.pop(response.turn_index, None)  # no speech: no turn follows
                else:
                    turn.interim.append(response.transcript.text)
            elif kind == "understanding":
                turn.understanding = response.understanding
            elif kind == "recommendations":
                turn.items = list(response.recommendations.items)
            elif kind == "reply":
                turn.reply_text = response.reply.text
            elif kind == "audio":
                if turn.first_audio_s is None:
                    turn.first_audio_s = now
                    sent = None if turn._final_end_s is None else self._sent_time_of(turn._final_end_s)
                    turn.client_voice_to_voice_ms = None if sent is None else (now - sent) * 1e3
                turn.audio.extend(response.audio.audio)
                turn.sample_rate_hz = response.audio.sample_rate_hz
            elif kind == "error":
                turn.errors.append(response.error)
                if response.error.stage == "orchestrator":  # refused or failed before a report
                    self._done.put_nowait(self._turns.pop(response.turn_index))
            elif kind == "report":
                turn.report = response.report
                self._done.put_nowait(self._turns.pop(response.turn_index))


async def stream_audio(conv: Conversation, pcm: bytes, sample_rate_hz: int, *, realtime: bool = True,
                       trailing_silence_ms: int = 600, end_of_utterance: bool = True, chunk_ms: int = CHUNK_MS) -> None:
    """Send ``pcm`` in ``chunk_ms`` chunks (at real-time pace unless ``realtime`` is False), then trailing silence.

    The trailing silence lets the server's VAD find the endpoint as it would for a live speaker; an
    explicit END_OF_UTTERANCE follows (it finalises nothing if the VAD already did).
    """
    step = sample_rate_hz * chunk_ms // 1000 * 2
    silence = b"\x00\x00" * (sample_rate_hz * trailing_silence_ms // 1000)
    data = pcm + silence
    start = time.monotonic()
    for i, offset in enumerate(range(0, len(data), step)):
        await conv.send_audio(data[offset : offset + step])
        if realtime:
            delay = start + (i + 1) * chunk_ms / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    if end_of_utterance:
        await conv.end_of_utterance()
