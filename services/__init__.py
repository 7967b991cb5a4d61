"""The stage services (asr, nlp, recommender, tts) and the scaffold they share (``services.common``)."""

import importlib

from services.common.settings import MODEL_STAGES as STAGES
from services.common.settings import STAGE_ORDER

__all__ = ["STAGES", "STAGE_ORDER", "available_stages", "module_name", "stage_module"]


def module_name(name: str) -> str:
    """The package of stage ``name``: ``services.<name>``, or ``orchestrator``."""
    return "orchestrator" if name == "orchestrator" else f"services.{name}"


def stage_module(name: str):
    """The package of stage ``name``, which exports ``create_stage``."""
    return importlib.import_module(module_name(name))


def available_stages() -> list[str]:
    """Stages whose package exists and exports ``create_stage`` (others are simply not started)."""
    found = []
    for name in STAGE_ORDER:
        try:
            module = stage_module(name)
        except ModuleNotFoundError as e:
            if e.name != module_name(name):
                raise  # a stage that exists but cannot import is an error, not an absent stage
            continue
        if hasattr(module, "create_stage"):
            found.append(name)
    return found
