"""The compose stack, for real: the image built, the five stages started as containers, asked the bundled
question from the host, one stage's process killed and brought back by compose's restart policy, then the
stack brought down. On a machine without a reachable registry it runs on the local engine of
deploy/containers.sh (Debian's podman behind the Docker API) with deploy/compose.local.yml (no Jaeger or
Prometheus: their images cannot be pulled). Needs root (or sudo) and apt; skipped where either is missing,
or with VOXPIPE_SKIP_CONTAINERS=1."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.containers, pytest.mark.models, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "containers.sh"
PROJECT = "voxpipe-test"


def _engine_env() -> dict[str, str]:
    exports = subprocess.run([str(SCRIPT), "env"], capture_output=True, text=True, check=True).stdout
    env = dict(os.environ)
    for assignment in shlex.split(exports.removeprefix("export ")):
        key, _, value = assignment.partition("=")
        env[key] = value
    return env


@pytest.fixture(scope="module")
def engine(models_dir):
    if os.environ.get("VOXPIPE_SKIP_CONTAINERS") == "1":
        pytest.skip("VOXPIPE_SKIP_CONTAINERS=1")
    if shutil.which("apt-get") is None or (os.geteuid() != 0 and shutil.which("sudo") is None):
        pytest.skip("the local container engine needs apt and root (or sudo)")
    for stage in ("asr", "nlp", "recommender", "tts"):
        models_dir(stage)  # the image takes the host's model repository
    subprocess.run([str(SCRIPT), "up"], check=True, timeout=900)
    try:
        subprocess.run([str(SCRIPT), "image"], check=True, timeout=1800, stdout=subprocess.DEVNULL)
        yield _engine_env()
    finally:
        subprocess.run([str(SCRIPT), "down"], check=False, timeout=60)


def compose(env, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    binary = Path(sys.executable).with_name("docker-compose")
    return subprocess.run([str(binary), "-p", PROJECT, "-f", str(ROOT / "docker-compose.yml"),
                           "-f", str(ROOT / "deploy" / "compose.local.yml"), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)


def inspect(env, container: str, template: str) -> str:
    return subprocess.run(["docker", "inspect", "-f", template, container], env=env, capture_output=True,
                          text=True, timeout=30, check=True).stdout.strip()


def talk(env) -> dict:
    done = subprocess.run([sys.executable, "-m", "clients.cli", "talk", "--address", "127.0.0.1:50050", "--fast",
                           "--json", "--budget-ms", "20000"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, (done.stdout, done.stderr)
    return json.loads(done.stdout.splitlines()[-1])


def test_the_stack_answers_restarts_a_killed_stage_and_comes_down(engine):
    up = compose(engine, "up", "-d", "--wait", "--no-build")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        turn = talk(engine)
        assert turn["reply_text"] and turn["items"] and turn["audio_s"] > 0 and not turn["errors"], turn

        tts = compose(engine, "ps", "-q", "tts").stdout.strip()
        os.kill(int(inspect(engine, tts, "{{.State.Pid}}")), signal.SIGKILL)  # the stage's container dies
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            restarts = int(inspect(engine, tts, "{{.RestartCount}}") or 0)
            health = inspect(engine, tts, "{{.State.Health.Status}}")
            if restarts >= 1 and health == "healthy":
                break
            time.sleep(2)
        assert restarts >= 1 and health == "healthy", (restarts, health)
        time.sleep(3)  # the orchestrator's reconnect backoff (at most 2 s)
        turn = talk(engine)
        assert turn["audio_s"] > 0 and not turn["errors"], turn
        assert not any(s["degraded"] for s in turn["report"]), turn["report"]
    finally:
        down = compose(engine, "down", "--timeout", "30", timeout_s=180)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not compose(engine, "ps", "-q").stdout.strip()
