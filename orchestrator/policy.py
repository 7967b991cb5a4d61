"""The degradation policy: when the remaining budget cannot cover a stage, cheapen or skip it.

Decisions compare the time left with each stage's recent p95 (``StageStats``), so a slow machine or a
loaded batcher degrades gracefully instead of blowing every budget:

* recommender: if what is left cannot cover recommender p95 + TTS p95 -> ask for the popularity list
  (no ranking); if it cannot even cover TTS p95 -> skip the call and answer from the cached popularity list;
* TTS: if what is left cannot cover the p95 time to first audio of a full reply -> speak one sentence only;
* NLP: if what is left cannot cover NLP p95 + TTS p95 -> skip understanding and answer with popular movies.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

import numpy as np

from orchestrator.budget import BudgetConfig


class Degradation(Enum):
    NONE = "none"
    SKIP = "skip"
    POPULARITY = "popularity list instead of ranking"
    CACHED_POPULARITY = "cached popularity list, recommender skipped"
    ONE_SENTENCE = "one-sentence reply"


@dataclass(frozen=True, kw_only=True)
class PolicyConfig:
    """Which degradations are allowed."""

    enabled: bool = True
    window: int = 200  # recent samples per stage for the p95


class StageStats:
    """Rolling p95 of each stage's latency; before any sample, the stage's budget share stands in."""

    def __init__(self, budget: BudgetConfig, window: int = 200) -> None:
        self._budget = budget
        self._samples: dict[str, deque[float]] = {}
        self._window = window

    def observe(self, stage: str, ms: float) -> None:
        """Record one stage duration."""
        self._samples.setdefault(stage, deque(maxlen=self._window)).append(ms)

    def p95_ms(self, stage: str) -> float:
        """Recent p95 of ``stage``."""
        samples = self._samples.get(stage)
        if not samples:
            return self._budget.share_ms(stage) * 0.5
        return float(np.percentile(np.fromiter(samples, float), 95))


class DegradationPolicy:
    """Decides, stage by stage, what to do with the time left."""

    def __init__(self, config: PolicyConfig, stats: StageStats) -> None:
        self.config = config
        self.stats = stats

    def for_nlp(self, remaining_ms: float) -> Degradation:
        if self.config.enabled and remaining_ms < self.stats.p95_ms("nlp") + self.stats.p95_ms("tts"):
            return Degradation.SKIP
        return Degradation.NONE

    def for_recommender(self, remaining_ms: float) -> Degradation:
        if not self.config.enabled:
            return Degradation.NONE
        tts = self.stats.p95_ms("tts")
        if remaining_ms < tts:
            return Degradation.CACHED_POPULARITY
        if remaining_ms < self.stats.p95_ms("recommender") + tts:
            return Degradation.POPULARITY
        return Degradation.NONE

    def for_tts(self, remaining_ms: float) -> Degradation:
        if self.config.enabled and remaining_ms < self.stats.p95_ms("tts"):
            return Degradation.ONE_SENTENCE
        return Degradation.NONE
