"""The turn budget: one object holding the end-to-end budget and each stage's share.

The clock starts at the endpoint (the moment ASR declared the end of the utterance). Each downstream
call asks the budget how much is left and gets its gRPC ``timeout=`` from it; every stage's time is
recorded against its share so the turn report can say what was spent, what was allowed, and what missed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from services.common.settings import MODEL_STAGES as STAGES  # budget shares, in pipeline order


@dataclass(frozen=True, kw_only=True)
class BudgetConfig:
    """End-to-end turn budget and per-stage shares, in milliseconds. ``tts_ms`` is time to first audio."""

    total_ms: float = 1200.0
    asr_ms: float = 550.0
    nlp_ms: float = 60.0
    recommender_ms: float = 40.0
    tts_ms: float = 450.0
    # Kept back from every gRPC timeout so the orchestrator can still answer (degrade) in time.
    margin_ms: float = 20.0

    def __post_init__(self) -> None:
        for name in ("total_ms", *(f"{s}_ms" for s in STAGES)):
            if getattr(self, name) <= 0:
                raise ValueError(f"budget {name} must be > 0, got {getattr(self, name)}")
        if self.margin_ms < 0:
            raise ValueError(f"budget margin_ms must be >= 0, got {self.margin_ms}")

    def share_ms(self, stage: str) -> float:
        """The share of ``stage``."""
        return float(getattr(self, f"{stage}_ms"))


# Defaults per deployment profile: 2 CPU cores vs one data-centre GPU.
PROFILES = {
    "cpu": BudgetConfig(),
    "gpu": BudgetConfig(total_ms=400.0, asr_ms=150.0, nlp_ms=20.0, recommender_ms=15.0, tts_ms=120.0, margin_ms=10.0),
}


@dataclass
class StageSpend:
    """What one stage used of the budget."""

    stage: str
    ms: float
    budget_ms: float
    degraded: bool = False
    note: str = ""
    server_ms: float = 0.0  # of ``ms``, inside the stage's server (0: not reported)

    @property
    def missed(self) -> bool:
        return self.ms > self.budget_ms

    @property
    def hop_ms(self) -> float:
        """Of ``ms``, outside the stage's server: gRPC, network, scheduling (0 when the server did not report)."""
        return max(self.ms - self.server_ms, 0.0) if self.server_ms else 0.0


@dataclass
class TurnBudget:
    """A running turn budget. ``start_s`` is the endpoint on ``clock`` (``time.monotonic``)."""

    config: BudgetConfig
    start_s: float
    clock: Callable[[], float] = time.monotonic
    spent: list[StageSpend] = field(default_factory=list)

    @classmethod
    def starting_at(cls, config: BudgetConfig, start_s: float, clock: Callable[[], float] = time.monotonic) -> TurnBudget:
        return cls(config=config, start_s=start_s, clock=clock)

    def elapsed_ms(self) -> float:
        """Milliseconds since the endpoint."""
        return (self.clock() - self.start_s) * 1e3

    def remaining_ms(self) -> float:
        """Milliseconds left of the whole turn (negative once overrun)."""
        return self.config.total_ms - self.elapsed_ms()

    def timeout_s(self, floor_ms: float = 1.0) -> float:
        """The ``timeout=`` for the next downstream call: what is left minus the margin, at least ``floor_ms``."""
        return max(self.remaining_ms() - self.config.margin_ms, floor_ms) / 1e3

    def deadline_s(self) -> float:
        """Absolute end of the turn on the budget's clock."""
        return self.start_s + self.config.total_ms / 1e3

    def record(self, stage: str, ms: float, *, degraded: bool = False, note: str = "",
               server_ms: float = 0.0) -> StageSpend:
        """Record time spent by ``stage`` against its share (``server_ms`` of it inside the stage's server)."""
        spend = StageSpend(stage=stage, ms=ms, budget_ms=self.config.share_ms(stage), degraded=degraded, note=note,
                           server_ms=server_ms)
        self.spent.append(spend)
        return spend

    @property
    def missed(self) -> bool:
        """True if any stage missed its share or the whole turn ran over."""
        return any(s.missed for s in self.spent) or self.remaining_ms() < 0
