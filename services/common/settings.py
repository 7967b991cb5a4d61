"""Stack settings: one TOML file with documented defaults, overridden by ``VOXPIPE_*`` variables.

Environment variables are read only by the entry point (``from_env``), which passes dataclasses down.
``VOXPIPE_MODELS_DIR``, ``VOXPIPE_DEVICE``, ``VOXPIPE_HOST``, ``VOXPIPE_SESSION_TTL_S``,
``VOXPIPE_TRACE_FILE_MAX_MB`` and ``VOXPIPE_CONFIG`` set stack-wide values;
``VOXPIPE_<SECTION>__<KEY>`` sets one key of a section, e.g. ``VOXPIPE_ASR__SILENCE_MS=400``, and
``VOXPIPE_MODELS__<MODEL>__<KEY>`` one serving key of a model (``-`` in the model name written ``_``), e.g.
``VOXPIPE_MODELS__MINILM__INSTANCES=2``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = Path(__file__).with_name("voxpipe.toml")
# The one list of stages: the four model stages in pipeline order, then the orchestrator that chains them.
MODEL_STAGES = ("asr", "nlp", "recommender", "tts")
STAGE_ORDER = (*MODEL_STAGES, "orchestrator")
DEFAULT_SESSION_TTL_S = 1800.0
MODELS_SECTION = "models"  # [models.<name>]: serving settings per model, resolved by the model repository
SERVER_KEYS = ("port", "metrics_port", "grace_s", "processes", "mps_active_thread_percentage")
PROCESS_PORT_STEP = 100  # process i of a stage listens on port + 100 i (the stages' default ports are consecutive)
# Stages whose processes keep no state a later call needs, so a caller may send any call to any process.
# The recommender keeps each session's ratings and shown items in its process: it runs as one.
REPLICABLE_STAGES = ("asr", "nlp", "tts", "orchestrator")


class SettingsError(ValueError):
    """A configuration value is missing or malformed."""


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """How one stage's process listens and shuts down."""

    host: str = "127.0.0.1"
    port: int = 0
    metrics_port: int = 0  # 0 = no metrics endpoint
    grace_s: float = 10.0
    # Processes of this stage on the host: process i listens on port + 100 i (and metrics_port + 100 i, as
    # the stages' own ports are consecutive); callers spread calls over them (see ``addresses``). Several GPU
    # processes share the card best under MPS.
    processes: int = 1
    # Under MPS (``voxpipe up --mps``): the share of the GPU's SMs each process of this stage may use
    # (CUDA_MPS_ACTIVE_THREAD_PERCENTAGE); 0 = no limit.
    mps_active_thread_percentage: int = 0

    def __post_init__(self) -> None:
        if self.processes < 1:
            raise SettingsError(f"processes={self.processes} must be >= 1")
        if self.processes > 1 and self.port == 0:
            raise SettingsError(f"processes={self.processes} needs a fixed port (port 0 picks a free one per process)")
        if not 0 <= self.mps_active_thread_percentage <= 100:
            raise SettingsError(f"mps_active_thread_percentage={self.mps_active_thread_percentage} is outside 0..100")

    @property
    def address(self) -> str:
        """The first process's address."""
        return f"{self.host}:{self.port}"

    @property
    def addresses(self) -> tuple[str, ...]:
        """Every process's address, in order."""
        return tuple(self.process(i).address for i in range(self.processes))

    def process(self, index: int) -> ServerSettings:
        """The settings process ``index`` listens with."""
        step = PROCESS_PORT_STEP * index
        return replace(self, port=self.port + step, processes=1,
                       metrics_port=self.metrics_port + step if self.metrics_port else 0)


def split_addresses(target: str) -> tuple[str, ...]:
    """``"host:p1,host:p2"`` (how a stage's processes are written as one peer address) as a tuple."""
    return tuple(a.strip() for a in target.split(",") if a.strip())

@dataclass(frozen=True, kw_only=True)
class StageSettings:
    """What a stage's ``create_stage`` receives: where models are, which device, its own options."""

    name: str
    models_dir: Path
    device: str = "cpu"
    server: ServerSettings = field(default_factory=ServerSettings)
    options: Mapping[str, Any] = field(default_factory=dict)
    # [models.<name>] sections: serving overrides per model (engines.repository.ModelRepository applies them).
    models: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Addresses of the other stages (the orchestrator dials them).
    peers: Mapping[str, str] = field(default_factory=dict)
    # Idle time after which a conversation is forgotten: one value for every stage that keeps session state
    # (the recommender's ratings and shown items, the orchestrator's dialogue context), so neither outlives the other.
    session_ttl_s: float = DEFAULT_SESSION_TTL_S


@dataclass(frozen=True, kw_only=True)
class StackSettings:
    """The whole stack: shared values plus one section per stage."""

    models_dir: Path
    device: str = "cpu"
    host: str = "127.0.0.1"
    log_level: str = "INFO"
    session_ttl_s: float = DEFAULT_SESSION_TTL_S
    trace_file_max_mb: float = 64.0  # each stage's JSON-lines trace file rotates at this size (one old file kept)
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def stage(self, name: str) -> StageSettings:
        """Settings for one stage, with server keys split from its own options."""
        section = dict(self.sections.get(name, {}))
        server = self.server(name)
        for key in SERVER_KEYS:
            section.pop(key, None)
        peers = {s: ",".join(self.server(s).addresses) for s in STAGE_ORDER if s != name}
        return StageSettings(name=name, models_dir=self.models_dir, device=self.device, server=server,
                             options=section, models=self.sections.get(MODELS_SECTION, {}), peers=peers,
                             session_ttl_s=self.session_ttl_s)

    def check_ports(self, names: list[str]) -> None:
        """Raise SettingsError if two processes of these stages would listen on the same port."""
        taken: dict[int, str] = {}
        for name in names:
            server = self.server(name)
            for i in range(server.processes):
                own = server.process(i)
                for kind, port in (("port", own.port), ("metrics_port", own.metrics_port)):
                    if not port:
                        continue
                    label = f"{name}[{i}] {kind}" if server.processes > 1 else f"{name} {kind}"
                    if port in taken:
                        raise SettingsError(f"{label} {port} is also {taken[port]} (process i of a stage listens on "
                                            f"port + {PROCESS_PORT_STEP} i); move one of them")
                    taken[port] = label

    def server(self, name: str) -> ServerSettings:
        """How stage ``name``'s processes listen.

        Raises:
            SettingsError: a server key is malformed, or a stage that keeps state asks for several processes.
        """
        section = self.sections.get(name, {})
        values = {k: section[k] for k in SERVER_KEYS if k in section}
        for key in ("port", "metrics_port", "processes", "mps_active_thread_percentage"):
            if key in values and isinstance(values[key], str):
                values[key] = _coerce(values[key], 0, f"VOXPIPE_{name.upper()}__{key.upper()}")
        try:
            server = ServerSettings(host=self.host, **values)
        except SettingsError as e:
            raise SettingsError(f"[{name}] {e}") from None
        if server.processes > 1 and name not in REPLICABLE_STAGES:
            raise SettingsError(f"[{name}] processes={server.processes}: the {name} stage keeps session state in its "
                                f"process and runs as one (stages that can run as several: {', '.join(REPLICABLE_STAGES)})")
        return server


def load(path: Path | None = None, env: Mapping[str, str] | None = None) -> StackSettings:
    """Read the TOML file (the packaged defaults if ``path`` is None) and apply ``VOXPIPE_*`` overrides."""
    path = path or DEFAULT_CONFIG
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise SettingsError(f"config file {path} not found") from e
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"config file {path}: {e}") from e
    stack = raw.pop("stack", {})
    sections = {k: dict(v) for k, v in raw.items() if isinstance(v, dict)}
    env = env or {}
    for key, value in env.items():
        if not key.startswith("VOXPIPE_") or "__" not in key:
            continue
        section, _, option = key[len("VOXPIPE_"):].lower().partition("__")
        if section == MODELS_SECTION:
            model, _, option = option.partition("__")
            if not model or not option:
                raise SettingsError(f"{key}: write VOXPIPE_MODELS__<MODEL>__<KEY>, e.g. VOXPIPE_MODELS__MINILM__INSTANCES")
            sections.setdefault(MODELS_SECTION, {}).setdefault(model, {})[option] = value  # typed by the model's config
            continue
        if section not in sections:
            raise SettingsError(f"{key}: no section [{section}] (have {', '.join(sections)})")
        sections[section][option] = _coerce(value, sections[section].get(option), key)
    models_dir = env.get("VOXPIPE_MODELS_DIR") or stack.get("models_dir") or "~/.cache/voxpipe/models"
    return StackSettings(
        models_dir=Path(models_dir).expanduser(),
        device=env.get("VOXPIPE_DEVICE", stack.get("device", "cpu")),
        host=env.get("VOXPIPE_HOST", stack.get("host", "127.0.0.1")),
        log_level=env.get("VOXPIPE_LOG_LEVEL", stack.get("log_level", "INFO")),
        session_ttl_s=_positive("session_ttl_s", env.get("VOXPIPE_SESSION_TTL_S",
                                                          stack.get("session_ttl_s", DEFAULT_SESSION_TTL_S)),
                                unit=" of seconds"),
        trace_file_max_mb=_positive("trace_file_max_mb", env.get("VOXPIPE_TRACE_FILE_MAX_MB",
                                                                  stack.get("trace_file_max_mb", 64.0))),
        sections=sections,
    )


def _positive(key: str, value: Any, *, unit: str = "") -> float:
    """A ``[stack]`` number that must be > 0; SettingsError naming the key and value otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError) as e:
        raise SettingsError(f"[stack] {key}={value!r} is not a number{unit}") from e
    if not number > 0:
        raise SettingsError(f"[stack] {key}={value!r} must be > 0")
    return number


def cache_root(environ: Mapping[str, str]) -> Path:
    """Root of voxpipe's caches (models, downloads, traces, generated test sets): ``VOXPIPE_CACHE_DIR`` or
    ``~/.cache/voxpipe``. Entry points (the CLI, benchmarks, tests) pass their environment."""
    return Path(environ.get("VOXPIPE_CACHE_DIR") or Path.home() / ".cache" / "voxpipe")


def from_env(environ: Mapping[str, str]) -> StackSettings:
    """The entry point's one read of the environment: ``VOXPIPE_CONFIG`` names the TOML file."""
    config = environ.get("VOXPIPE_CONFIG")
    return load(Path(config) if config else None, env=environ)


def _coerce(value: str, current: Any, key: str) -> Any:
    """Parse an environment string as the type of the default it overrides."""
    try:
        if isinstance(current, bool):
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("1", "true", "yes")
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, tuple):  # comma-separated numbers, e.g. "10,30"
            return tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError as e:
        raise SettingsError(f"{key}={value!r} is not a valid {type(current).__name__}") from e
    return value


def options_to(cls: type, options: Mapping[str, Any], section: str) -> Any:
    """Build a stage's own config dataclass from its section, rejecting unknown keys by name."""
    by_name = {f.name: f for f in fields(cls)}
    unknown = sorted(set(options) - set(by_name))
    if unknown:
        raise SettingsError(f"[{section}] has unknown keys {unknown}; known: {sorted(by_name)}")
    # Environment overrides of keys the TOML leaves out arrive as strings: type them by the field's default.
    typed = {}
    for key, value in options.items():
        default = by_name[key].default
        if isinstance(value, str) and default is not MISSING and not isinstance(default, str):
            value = _coerce(value, default, f"VOXPIPE_{section.upper()}__{key.upper()}")
        typed[key] = value
    try:
        return cls(**typed)
    except (TypeError, ValueError) as e:
        raise SettingsError(f"[{section}]: {e}") from e


def with_port(settings: StageSettings, port: int) -> StageSettings:
    """A copy listening on ``port`` (tests use 0)."""
    return replace(settings, server=replace(settings.server, port=port))
