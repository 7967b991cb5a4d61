"""The dependency arrows run one way (docs/ARCHITECTURE.md, "Who owns what"):

clients -> orchestrator, services -> services.common -> engines (runtime)  ;  engines.build -> services.

The model builders may use service code (the tokenizer, the voice's names, the recommender's fold-in); the
services and the engine runtime never import the builders, the engine runtime never imports a service, and
only entry points read the environment.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _modules(folder: str, *, skip: str = "") -> list[Path]:
    return [p for p in (ROOT / folder).rglob("*.py")
            if "_pb2" not in p.name and not (skip and p.is_relative_to(ROOT / skip))]


def _violations(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [f"{p.relative_to(ROOT)} imports {name}" for p in paths for name in sorted(_imports(p))
            if any(name == f or name.startswith(f + ".") for f in forbidden)]


@pytest.mark.parametrize(("folder", "skip", "forbidden"), [
    ("engines", "engines/build", ("services", "orchestrator", "clients", "engines.build")),
    ("services", "", ("engines.build", "orchestrator", "clients")),
    ("orchestrator", "", ("engines.build", "clients", "services.asr", "services.nlp", "services.recommender",
                          "services.tts")),
])
def test_dependency_arrows_run_one_way(folder, skip, forbidden):
    assert _violations(_modules(folder, skip=skip), forbidden) == []


def test_only_entry_points_read_the_environment():
    # services/launcher.py hands the parent's environment on to the stage processes it starts.
    allowed = {ROOT / "services" / "launcher.py"}
    readers = [f"{p.relative_to(ROOT)}" for folder in ("engines", "services", "orchestrator")
               for p in _modules(folder) if p not in allowed
               and any(s in p.read_text(encoding="utf-8") for s in ("os.environ", "os.getenv"))]
    assert readers == []


def test_a_stage_folder_keeps_servicer_wiring_and_model_logic_apart():
    for stage in ("asr", "nlp", "recommender", "tts"):
        folder = ROOT / "services" / stage
        assert (folder / "servicer.py").is_file() and (folder / "stage.py").is_file(), stage
        servicer = (folder / "servicer.py").read_text(encoding="utf-8")
        assert "create_engines" not in servicer and "class " + "Stage(" not in servicer, stage
