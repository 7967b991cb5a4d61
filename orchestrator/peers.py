"""Channels and stubs to the four stage services, and the metadata every downstream call carries."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from protos import asr_pb2_grpc, nlp_pb2_grpc, recommender_pb2_grpc, tts_pb2_grpc
from services.common.context import BUDGET_HEADER, REQUEST_ID_HEADER, server_time_ms
from services.common.tracing import inject_metadata

_CHANNEL_OPTIONS = [
    ("grpc.lb_policy_name", "round_robin"),  # several replicas behind one DNS name (Kubernetes headless Service)
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]


@dataclass(frozen=True, kw_only=True)
class PeerAddresses:
    asr: str
    nlp: str
    recommender: str
    tts: str


class StageClients:
    """One channel per stage, opened on the running loop by :meth:`open`, closed by :meth:`close`."""

    def __init__(self, addresses: PeerAddresses) -> None:
        self.addresses = addresses
        self._channels: list[grpc.aio.Channel] = []

    async def open(self) -> None:
        def channel(address: str) -> grpc.aio.Channel:
            ch = grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
            self._channels.append(ch)
            return ch

        self.asr = asr_pb2_grpc.RecognizerStub(channel(self.addresses.asr))
        self.nlp = nlp_pb2_grpc.UnderstanderStub(channel(self.addresses.nlp))
        self.recommender = recommender_pb2_grpc.RecommenderStub(channel(self.addresses.recommender))
        self.tts = tts_pb2_grpc.SynthesizerStub(channel(self.addresses.tts))

    async def close(self) -> None:
        for ch in self._channels:
            await ch.close()
        self._channels.clear()


def call_metadata(request_id: str, budget_ms: float | None = None) -> list[tuple[str, str]]:
    """Request id, remaining budget (for the stage's deadline-aware batcher) and the trace context."""
    metadata = [(REQUEST_ID_HEADER, request_id)]
    if budget_ms is not None:
        metadata.append((BUDGET_HEADER, f"{max(budget_ms, 0.0):.1f}"))
    return inject_metadata(metadata)


async def server_ms(call: grpc.aio.Call) -> float:
    """The finished ``call``'s time inside the stage's server, from its trailing metadata (0: not reported)."""
    return server_time_ms(await call.trailing_metadata()) or 0.0
