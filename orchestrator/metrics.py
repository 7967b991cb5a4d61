"""Prometheus metrics of the orchestrator: per-stage turn latency, voice-to-voice, misses, degradations."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_BUCKETS_S = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.2, 1.5, 2.0, 3.0, 5.0)

TURN_STAGE_SECONDS = Histogram("voxpipe_turn_stage_seconds", "Time per stage within a turn, as the orchestrator sees it.",
                               ("stage",), buckets=_BUCKETS_S)
VOICE_TO_VOICE_SECONDS = Histogram("voxpipe_voice_to_voice_seconds",
                                   "Last voiced sample received -> first reply audio sent.", buckets=_BUCKETS_S)
BUDGET_MISSES = Counter("voxpipe_budget_misses_total", "Stages that overran their share of the turn budget.", ("stage",))
DEGRADATIONS = Counter("voxpipe_degradations_total", "Stages cheapened or skipped to save the budget.", ("stage", "kind"))
TURNS = Counter("voxpipe_turns_total", "Turns by outcome.", ("outcome",))
ENDPOINT_JUDGEMENTS = Counter("voxpipe_endpoint_judgements_total", "Speculative transcripts judged by the adaptive "
                              "endpoint: complete (a short silence ends it), incomplete (a long one), unsure (the "
                              "stream's own).", ("judgement",))
CONVERSATIONS = Gauge("voxpipe_conversations_open", "Converse streams holding a slot.")
TURNS_IN_FLIGHT = Gauge("voxpipe_turns_in_flight", "Turns holding a turn slot.")
