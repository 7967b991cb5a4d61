"""The stage services (asr, nlp, recommender, tts) and the scaffold they share (``services.common``)."""

import importlib

STAGES = ("asr", "nlp", "recommender", "tts")


def stage_module(name: str):
    """The package of stage ``name`` (``services.<name>``, or ``orchestrator``), which exports ``create_stage``."""
    return importlib.import_module("orchestrator" if name == "orchestrator" else f"services.{name}")


def available_stages() -> list[str]:
    """Stages whose package exists and exports ``create_stage`` (others are simply not started)."""
    found = []
    for name in (*STAGES, "orchestrator"):
        try:
            module = stage_module(name)
        except ImportError:
            continue
        if hasattr(module, "create_stage"):
            found.append(name)
    return found
