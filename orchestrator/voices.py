"""The TTS stage's voices, as the orchestrator last heard them: a Converse config naming a voice TTS does
not have is refused when the stream opens (NOT_FOUND, naming the voices), not after a whole turn.

Filled from ``ListVoices`` when the orchestrator starts and refreshed in the background until it answers;
while TTS has not answered, any voice is let through (TTS itself then says NOT_FOUND in the turn).
"""

from __future__ import annotations

import logging

import grpc

from protos import tts_pb2
from services.common.errors import NotFoundError, shown

log = logging.getLogger(__name__)


class VoiceCatalog:
    def __init__(self) -> None:
        self.names: frozenset[str] = frozenset()  # lower case: TTS matches voice names without case

    async def refresh(self, stub, timeout_s: float = 5.0) -> bool:
        """Fetch the voices from TTS; False (and the old list kept) if it is not reachable."""
        try:
            reply = await stub.ListVoices(tts_pb2.ListVoicesRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError as e:
            log.warning("voice list not refreshed: %s %s", e.code().name, e.details())
            return False
        self.names = frozenset(v.name.lower() for v in reply.voices)
        return True

    def check(self, voice: str) -> None:
        """Raise NotFoundError if TTS is known not to have ``voice`` ("" = the default: always fine)."""
        if voice and self.names and voice.lower() not in self.names:
            raise NotFoundError(f"config.voice={shown(voice)} is not a voice of the TTS stage; available: "
                                f"{', '.join(sorted(self.names))}")
