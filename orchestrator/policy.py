"""The degradation policy: when the remaining budget cannot cover a stage, cheapen or skip it.

Decisions compare the time left with each stage's recent p95 (``StageStats``), so a slow machine or a
loaded batcher degrades gracefully instead of blowing every budget:

* recommender: if what is left cannot cover recommender p95 + TTS p95 -> ask for the popularity list
  (no ranking); if it cannot even cover TTS p95 -> skip the call and answer from the cached popularity list;
* TTS: if what is left cannot cover the p95 time to first audio of a full reply -> speak one sentence only;
* NLP: only under ``overrun="strict"``: if what is left cannot cover NLP p95 + TTS p95 -> skip understanding
  and answer with popular movies.

Once the budget is overrun (typically by a slow ASR final under load), ``overrun`` decides what happens:
``"best_effort"`` (default) still gives every stage at least its own share as its gRPC timeout and never
skips understanding for time — a late answer that is right beats a late answer that is wrong, and NLP
costs milliseconds; ``"strict"`` fails fast: calls get what is left (1 ms) and NLP is skipped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

from orchestrator.budget import BudgetConfig


class Degradation(Enum):
    NONE = "none"
    SKIP = "skip"
    POPULARITY = "popularity list instead of ranking"
    CACHED_POPULARITY = "cached popularity list, recommender skipped"
    ONE_SENTENCE = "one-sentence reply"
    NO_AUDIO = "no audio"  # TTS unavailable or failing: the reply is text only
    AUDIO_CUT = "audio cut short"  # TTS failed after the first audio: the reply's text is whole, its audio not


@dataclass(frozen=True, kw_only=True)
class PolicyConfig:
    """Which degradations are allowed."""

    enabled: bool = True
    window: int = 200  # recent samples per stage for the p95
    overrun: str = "best_effort"  # or "strict" (see the module docstring)

    def __post_init__(self) -> None:
        if self.overrun not in ("best_effort", "strict"):
            raise ValueError(f"overrun={self.overrun!r} is not 'best_effort' or 'strict'")


class StageStats:
    """Rolling p95 of each stage's latency; before any sample, the stage's budget share stands in."""

    def __init__(self, budget: BudgetConfig, window: int = 200) -> None:
        self.budget = budget
        self._samples: dict[str, deque[float]] = {}
        self._window = window

    def observe(self, stage: str, ms: float) -> None:
        """Record one stage duration."""
        self._samples.setdefault(stage, deque(maxlen=self._window)).append(ms)

    def p95_ms(self, stage: str) -> float:
        """Recent p95 of ``stage``."""
        samples = self._samples.get(stage)
        if not samples:
            return self.budget.share_ms(stage) * 0.5
        # numpy.percentile's linear interpolation, in plain Python: ~10 us for 200 samples instead of ~150 us
        # of numpy call overhead, three times per turn on the orchestrator's event loop.
        ordered = sorted(samples)
        pos = 0.95 * (len(ordered) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


class DegradationPolicy:
    """Decides, stage by stage, what to do with the time left."""

    def __init__(self, config: PolicyConfig, stats: StageStats) -> None:
        self.config = config
        self.stats = stats

    def for_nlp(self, remaining_ms: float) -> Degradation:
        if (self.config.enabled and self.config.overrun == "strict"
                and remaining_ms < self.stats.p95_ms("nlp") + self.stats.p95_ms("tts")):
            return Degradation.SKIP
        return Degradation.NONE

    def floor_ms(self, stage: str) -> float:
        """The smallest timeout a call to ``stage`` gets, whatever is left of the budget."""
        return self.stats.budget.share_ms(stage) if self.config.overrun == "best_effort" else 1.0

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
