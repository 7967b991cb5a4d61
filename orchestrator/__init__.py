"""The orchestrator: Converse, the turn budget and its policy, tracing of turns."""

from orchestrator.budget import PROFILES, BudgetConfig, TurnBudget
from orchestrator.stage import OrchestratorConfig, OrchestratorStage
from services.common import StageSettings


def create_stage(settings: StageSettings) -> OrchestratorStage:
    """The orchestrator stage for ``voxpipe serve orchestrator``."""
    return OrchestratorStage(settings)


__all__ = ["PROFILES", "BudgetConfig", "OrchestratorConfig", "OrchestratorStage", "TurnBudget", "create_stage"]
