"""The orchestrator as a stage: its config, its servicer wiring, and its peers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

import grpc

from orchestrator import metrics
from orchestrator.admission import Admission
from orchestrator.budget import PROFILES, BudgetConfig
from orchestrator.completeness import AdaptiveEndpoint
from orchestrator.converse import AssistantServicer, ConversationOptions
from orchestrator.peers import PeerAddresses, StageClients
from orchestrator.policy import DegradationPolicy, PolicyConfig, StageStats
from orchestrator.popularity import PopularityCache
from orchestrator.session import SessionStore
from orchestrator.turn import TurnRunner
from orchestrator.voices import VoiceCatalog
from protos import assistant_pb2, assistant_pb2_grpc
from services.common import Stage, StageSettings, options_to
from services.common.settings import SettingsError


@dataclass(frozen=True, kw_only=True)
class OrchestratorConfig:
    """The ``[orchestrator]`` section. Budget keys left at 0 take the profile's default."""

    profile: str = "auto"  # "cpu" or "gpu": default turn budget and shares; "auto" follows the stack's device
    budget_ms: float = 0.0
    asr_share_ms: float = 0.0
    nlp_share_ms: float = 0.0
    recommender_share_ms: float = 0.0
    tts_share_ms: float = 0.0
    margin_ms: float = 0.0
    degrade: bool = True
    overrun: str = "best_effort"  # once the budget is overrun: "best_effort" or "strict" (docs/ARCHITECTURE.md)
    max_streams: int = 64
    max_concurrent_turns: int = 16
    max_turns_per_s: float = 20.0
    max_admission_wait_ms: float = 20.0
    recommendations_k: int = 3
    tts_stream_timeout_s: float = 30.0
    config_timeout_s: float = 10.0  # a Converse stream must send its config within this
    idle_timeout_s: float = 120.0  # a Converse stream silent this long with no turn running is closed
    max_sessions: int = 10_000  # dialogue context kept per session; idle ones go after [stack] session_ttl_s
    # Speculative turns (orchestrator/speculation.py): started only while fewer turns than speculation_max_busy
    # are being prepared (0: the profile's, 1 on the CPU, 64 on a GPU).
    speculation: bool = True
    speculation_max_busy: int = 0
    # The adaptive endpoint (orchestrator/completeness.py; needs speculation): a speculative transcript that is a
    # complete request ends its utterance after complete_silence_ms of silence, a visibly unfinished one after
    # incomplete_silence_ms, any other after unsure_silence_ms (0: ASR's own silence_ms).
    adaptive_endpoint: bool = True
    complete_silence_ms: int = 200
    incomplete_silence_ms: int = 1200
    unsure_silence_ms: int = 0
    complete_min_confidence: float = 0.8  # the NLP's intent confidence a complete request needs
    # How a turn calls NLP, the recommender and TTS: "stream" (many calls multiplexed over one open stream per
    # stage: about half the cost of a unary RPC per call) or "unary" (one RPC per call, each balanced on its own
    # across a stage's replicas, and with a gRPC deadline of its own).
    stage_calls: str = "stream"
    # Peer addresses; empty = the peer stage's [section] port on the stack host.
    asr_address: str = ""
    nlp_address: str = ""
    recommender_address: str = ""
    tts_address: str = ""

    def resolved_profile(self, device: str = "cpu") -> str:
        """``profile``, with "auto" resolved by the stack's ``device``."""
        profile = self.profile
        if profile == "auto":
            from engines.device import resolve_target

            profile = "gpu" if resolve_target(device) == "cuda" else "cpu"
        if profile not in PROFILES:
            raise SettingsError(f"[orchestrator] profile={self.profile!r} is not one of auto, {', '.join(sorted(PROFILES))}")
        return profile

    def max_busy(self, device: str = "cpu") -> int:
        """``speculation_max_busy`` with 0 resolved by the profile."""
        if self.speculation_max_busy < 0:
            raise SettingsError(f"[orchestrator] speculation_max_busy={self.speculation_max_busy} must be >= 0")
        return self.speculation_max_busy or (64 if self.resolved_profile(device) == "gpu" else 1)

    def endpoint(self) -> AdaptiveEndpoint | None:
        """The adaptive endpoint's settings, or None when it (or speculation, which it needs) is off."""
        if not (self.adaptive_endpoint and self.speculation):
            return None
        try:
            return AdaptiveEndpoint(complete_silence_ms=self.complete_silence_ms,
                                    incomplete_silence_ms=self.incomplete_silence_ms,
                                    unsure_silence_ms=self.unsure_silence_ms,
                                    min_confidence=self.complete_min_confidence)
        except ValueError as e:
            raise SettingsError(f"[orchestrator] {e}") from None

    def budget(self, device: str = "cpu") -> BudgetConfig:
        """The turn budget: the profile's defaults with any explicit keys applied (``device``: the stack's,
        for ``profile = "auto"``)."""
        base = PROFILES[self.resolved_profile(device)]
        overrides = {k: v for k, v in (("total_ms", self.budget_ms), ("asr_ms", self.asr_share_ms),
                                       ("nlp_ms", self.nlp_share_ms), ("recommender_ms", self.recommender_share_ms),
                                       ("tts_ms", self.tts_share_ms), ("margin_ms", self.margin_ms)) if v}
        return replace(base, **overrides)


class OrchestratorStage(Stage):
    name = "orchestrator"
    service_names = (assistant_pb2.DESCRIPTOR.services_by_name["Assistant"].full_name,)

    def __init__(self, settings: StageSettings) -> None:
        self.config = options_to(OrchestratorConfig, settings.options, "orchestrator")
        budget = self.config.budget(settings.device)
        peers = settings.peers
        self.addresses = PeerAddresses(
            asr=self.config.asr_address or peers.get("asr", ""),
            nlp=self.config.nlp_address or peers.get("nlp", ""),
            recommender=self.config.recommender_address or peers.get("recommender", ""),
            tts=self.config.tts_address or peers.get("tts", ""))
        try:
            self.clients = StageClients(self.addresses, self.config.stage_calls)
        except ValueError as e:
            raise SettingsError(f"[orchestrator] {e}") from None
        self.stats = StageStats(budget)
        self.popularity = PopularityCache()
        self.runner = TurnRunner(self.clients, DegradationPolicy(
            PolicyConfig(enabled=self.config.degrade, overrun=self.config.overrun), self.stats),
                                 self.popularity, k=self.config.recommendations_k,
                                 tts_stream_timeout_s=self.config.tts_stream_timeout_s)
        self.admission = Admission(max_streams=self.config.max_streams,
                                   max_concurrent_turns=self.config.max_concurrent_turns,
                                   max_turns_per_s=self.config.max_turns_per_s,
                                   max_admission_wait_ms=self.config.max_admission_wait_ms)
        metrics.CONVERSATIONS.set_function(lambda: self.admission.streams)
        metrics.TURNS_IN_FLIGHT.set_function(lambda: self.admission.turns)
        self.sessions = SessionStore(max_sessions=self.config.max_sessions, ttl_s=settings.session_ttl_s)
        self.options = ConversationOptions(budget=budget, config_timeout_s=self.config.config_timeout_s,
                                           idle_timeout_s=self.config.idle_timeout_s,
                                           speculation=self.config.speculation,
                                           speculation_max_busy=self.config.max_busy(settings.device),
                                           endpoint=self.config.endpoint())
        self.voices = VoiceCatalog()
        self._refresh: asyncio.Task | None = None
        self._servicer: AssistantServicer | None = None

    async def start(self) -> None:
        await self.clients.open()
        # The popularity list is the answer of last resort, the voice list checks configs; fetch both now, and
        # retry in the background what did not answer.
        if not await self._refresh_once():
            self._refresh = asyncio.create_task(self._refresh_until_ok(), name="peer-lists-refresh")

    async def _refresh_once(self) -> bool:
        popularity = bool(self.popularity.items) or await self.popularity.refresh(self.clients.recommender, timeout_s=2.0)
        voices = bool(self.voices.names) or await self.voices.refresh(self.clients.tts, timeout_s=2.0)
        return popularity and voices

    async def _refresh_until_ok(self) -> None:
        # Retrying remote peers, not waiting on local state.
        while not await self._refresh_once():  # noqa: ASYNC110
            await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            await asyncio.gather(self._refresh, return_exceptions=True)
        await self.clients.close()

    def register(self, server: grpc.aio.Server) -> None:
        self._servicer = AssistantServicer(self.runner, self.clients, self.admission, self.sessions, self.options,
                                           voices=self.voices)
        assistant_pb2_grpc.add_AssistantServicer_to_server(self._servicer, server)

    def drain(self) -> None:
        """Each conversation ends once its turn in flight (if any) has answered: UNAVAILABLE, reconnect."""
        if self._servicer is not None:
            self._servicer.draining.set()
