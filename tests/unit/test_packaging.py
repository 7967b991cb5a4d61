"""Every third-party module a running voxpipe process imports at module level is a runtime dependency of the
package (``[project] dependencies``), not only of an extra: ``pip install voxpipe`` without extras (what the
Dockerfile's runtime stage does) must be able to serve. Imports inside functions are the optional paths (the
GPU backends, the microphone, plots) and belong to extras."""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ("services", "engines", "orchestrator", "clients", "protos")
NOT_RUNTIME = (ROOT / "engines" / "build", ROOT / "protos" / "generate.py")
# The PyTorch modules of the GPU backend (the ``gpu`` extra): loaded only by ``engines.torch`` when a model runs
# on CUDA. The wheel test (tests/stage/test_wheel.py) shows a CPU stage serving without them.
EXTRA_ONLY = {"torch": ROOT / "engines" / "models"}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def module_level_imports() -> dict[str, set[str]]:
    """Top-level module name -> files importing it at module level, for the runtime packages."""
    found: dict[str, set[str]] = {}
    for folder in RUNTIME:
        for path in (ROOT / folder).rglob("*.py"):
            if any(path == p or path.is_relative_to(p) for p in NOT_RUNTIME):
                continue
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names = [node.module]
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_module_level_import_is_a_runtime_dependency():
    declared = {_name(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    distributions = metadata.packages_distributions()
    ours = set(RUNTIME) | {"benchmarks"}
    missing = {}
    for module, files in sorted(module_level_imports().items()):
        if module in sys.stdlib_module_names or module in ours:
            continue
        provided_by = {_name(d) for d in distributions.get(module, [])}
        if module in EXTRA_ONLY and all((ROOT / f).is_relative_to(EXTRA_ONLY[module]) for f in files):
            continue
        if not provided_by & declared:
            missing[module] = (sorted(provided_by), sorted(files))
    assert not missing, f"imported at module level but not in [project] dependencies: {missing}"
