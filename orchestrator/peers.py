"""Channels to the four stage services, the calls a turn makes on them, and the metadata every call carries."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import grpc

from orchestrator.calls import CallStream
from protos import (
    asr_pb2_grpc,
    nlp_pb2,
    nlp_pb2_grpc,
    recommender_pb2,
    recommender_pb2_grpc,
    tts_pb2,
    tts_pb2_grpc,
)
from services.common.context import BUDGET_HEADER, REQUEST_ID_HEADER, SENT_AT_HEADER, server_time_ms
from services.common.settings import split_addresses
from services.common.tracing import inject_metadata

_CHANNEL_OPTIONS = [
    ("grpc.lb_policy_name", "round_robin"),  # several replicas behind one DNS name (Kubernetes headless Service)
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    # A restarted stage is found again within ~2 s (gRPC's default backoff grows to 120 s between attempts).
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]
STAGE_CALLS = ("stream", "unary")


@dataclass(frozen=True, kw_only=True)
class PeerAddresses:
    asr: str
    nlp: str
    recommender: str
    tts: str


class Timing(Protocol):
    """Where a call records the stage server's own time (ms) for the turn report."""

    server_ms: float


class _Replicas:
    """Round-robin over the processes of one stage (``"host:p1,host:p2"``): one item per address."""

    def __init__(self, stage: str, items: list) -> None:
        self._stage = stage
        self._items = items
        self._next = itertools.cycle(range(len(items)))

    def pick(self):
        if not self._items:
            raise ValueError(f"no address configured for the {self._stage} stage")
        return self._items[next(self._next)]

    def __iter__(self):
        return iter(self._items)


class StageClients:
    """Channels to the stages, opened on the running loop by :meth:`open`, closed by :meth:`close`.

    A stage running as several processes (a peer address ``"host:p1,host:p2"``, see ``[<stage>] processes``)
    gets one channel per process, and calls take the processes in turn. A turn's critical-path calls
    (:meth:`understand`, :meth:`recommend`, :meth:`synthesize`) go over one multiplexed stream per process
    (``stage_calls="stream"``, see ``orchestrator.calls``), or as unary RPCs (``"unary"``: each call
    balanced on its own across a stage's replicas behind one name). :attr:`asr`, :attr:`recommender` and :attr:`tts` are
    stubs for the other RPCs (the next process's at each access).
    """

    def __init__(self, addresses: PeerAddresses, stage_calls: str = "stream") -> None:
        if stage_calls not in STAGE_CALLS:
            raise ValueError(f"stage_calls={stage_calls!r} is not one of {', '.join(STAGE_CALLS)}")
        self.addresses = addresses
        self.stage_calls = stage_calls
        self._channels: list[grpc.aio.Channel] = []
        self._streams: list[CallStream] = []

    async def open(self) -> None:
        def stubs(stage: str, target: str, stub: type) -> _Replicas:
            made = []
            for address in split_addresses(target):
                ch = grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
                self._channels.append(ch)
                made.append(stub(ch))
            return _Replicas(stage, made)

        def calls(name: str, replicas: _Replicas, method: str, call_type: type) -> _Replicas:
            made = [CallStream(name, getattr(stub, method), call_type) for stub in replicas]
            self._streams.extend(made)
            return _Replicas(name, made)

        self._asr = stubs("asr", self.addresses.asr, asr_pb2_grpc.RecognizerStub)
        self._nlp = stubs("nlp", self.addresses.nlp, nlp_pb2_grpc.UnderstanderStub)
        self._recommender = stubs("recommender", self.addresses.recommender, recommender_pb2_grpc.RecommenderStub)
        self._tts = stubs("tts", self.addresses.tts, tts_pb2_grpc.SynthesizerStub)
        self._nlp_calls = calls("nlp", self._nlp, "UnderstandCalls", nlp_pb2.UnderstandCall)
        self._recommend_calls = calls("recommender", self._recommender, "RecommendCalls", recommender_pb2.RecommendCall)
        self._tts_calls = calls("tts", self._tts, "SynthesizeCalls", tts_pb2.SynthesizeCall)
        if self.stage_calls != "unary":
            for stream in self._streams:
                stream.connect()

    @property
    def asr(self) -> asr_pb2_grpc.RecognizerStub:
        return self._asr.pick()

    @property
    def recommender(self) -> recommender_pb2_grpc.RecommenderStub:
        return self._recommender.pick()

    @property
    def tts(self) -> tts_pb2_grpc.SynthesizerStub:
        return self._tts.pick()

    async def close(self) -> None:
        for stream in self._streams:
            await stream.close()
        for ch in self._channels:
            await ch.close()
        self._channels.clear()

    async def understand(self, request: nlp_pb2.UnderstandRequest, *, timeout_s: float, metadata,
                         timing: Timing) -> nlp_pb2.UnderstandResponse:
        return await self._call(self._nlp_calls, self._nlp, "Understand", request, timeout_s, metadata, timing)

    async def recommend(self, request: recommender_pb2.RecommendRequest, *, timeout_s: float, metadata,
                        timing: Timing) -> recommender_pb2.RecommendResponse:
        return await self._call(self._recommend_calls, self._recommender, "Recommend", request, timeout_s, metadata,
                                timing)

    async def get_items(self, request: recommender_pb2.GetItemsRequest, *, timeout_s: float, metadata,
                        timing: Timing) -> recommender_pb2.GetItemsResponse:
        return await _rpc(self.recommender.GetItems, request, timeout_s, metadata, timing)

    async def feedback(self, request: recommender_pb2.FeedbackRequest, *, timeout_s: float, metadata,
                       timing: Timing) -> recommender_pb2.FeedbackResponse:
        return await _rpc(self.recommender.Feedback, request, timeout_s, metadata, timing)

    async def mark_shown(self, request: recommender_pb2.MarkShownRequest, *, timeout_s: float, metadata,
                         timing: Timing) -> recommender_pb2.MarkShownResponse:
        return await _rpc(self.recommender.MarkShown, request, timeout_s, metadata, timing)

    async def synthesize(self, request: tts_pb2.SynthesizeRequest, *, timeout_s: float, metadata,
                         timing: Timing) -> AsyncIterator[tts_pb2.SynthesizeResponse]:
        """The reply's audio chunks; leaving early (``aclose``, cancellation) cancels the call."""
        if self.stage_calls != "unary":
            async for response, ms in self._tts_calls.pick().stream(request, timeout_s=timeout_s, metadata=metadata):
                timing.server_ms = ms
                yield response
            return
        call = self._tts.pick().Synthesize(request, timeout=timeout_s, metadata=metadata)
        try:
            async for response in call:
                yield response
            timing.server_ms = await server_ms(call)
        finally:
            call.cancel()

    async def _call(self, calls: _Replicas, stubs: _Replicas, method: str, request, timeout_s: float, metadata,
                    timing: Timing):
        if self.stage_calls == "unary":
            return await _rpc(getattr(stubs.pick(), method), request, timeout_s, metadata, timing)
        response, timing.server_ms = await calls.pick().unary(request, timeout_s=timeout_s, metadata=metadata)
        return response


async def _rpc(method, request, timeout_s: float, metadata, timing: Timing):
    """A unary RPC; the server's time comes back in its trailing metadata."""
    call = method(request, timeout=timeout_s, metadata=metadata)
    response = await call
    timing.server_ms = await server_ms(call)
    return response


def call_metadata(request_id: str, budget_ms: float | None = None) -> list[tuple[str, str]]:
    """Request id, remaining budget (for the stage's deadline-aware batcher) and the trace context."""
    metadata = [(REQUEST_ID_HEADER, request_id)]
    if budget_ms is not None:
        metadata += [(BUDGET_HEADER, f"{max(budget_ms, 0.0):.1f}"), (SENT_AT_HEADER, str(time.time_ns()))]
    return inject_metadata(metadata)


async def server_ms(call: grpc.aio.Call) -> float:
    """The finished ``call``'s time inside the stage's server, from its trailing metadata (0: not reported)."""
    return server_time_ms(await call.trailing_metadata()) or 0.0
