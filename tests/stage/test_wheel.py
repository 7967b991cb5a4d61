"""The wheel as a user (or the Dockerfile's runtime stage) installs it: built from this tree, installed without
extras into a clean virtual environment, run outside the source tree. ``voxpipe serve nlp`` must reach
SERVING and stop cleanly on SIGTERM; a runtime dependency missing from ``[project] dependencies`` fails here
(threadpoolctl once did: every container died at start)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import venv
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.conftest import free_port

pytestmark = [pytest.mark.models, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def _not_source(folder: str, names: list[str]) -> set[str]:
    """What a clean checkout would not have: the venv, caches, bundles, and build outputs at the top (not
    ``engines/build``, which is source)."""
    top = Path(folder) == ROOT
    return {n for n in names if n in (".git", "__pycache__", ".hypothesis") or n.endswith((".egg-info", "_cache"))
            or top and n in (".venv", ".gpu", "build", "dist")}


def test_the_wheel_installed_without_extras_serves_a_stage(tmp_path, models_dir):
    models = models_dir("nlp")
    source = tmp_path / "source"  # a copy, so that the build leaves nothing in the working tree
    shutil.copytree(ROOT, source, ignore=_not_source)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("voxpipe-*.whl")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    installed = subprocess.run([str(env_dir / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                                str(wheel)], capture_output=True, text=True, timeout=900, check=False)
    assert installed.returncode == 0, installed.stderr[-3000:]
    port = free_port()
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(tmp_path)), "VOXPIPE_MODELS_DIR": str(models),
           "VOXPIPE_NLP__PORT": str(port), "VOXPIPE_NLP__METRICS_PORT": "0", "VOXPIPE_LOG_LEVEL": "WARNING"}
    stage = subprocess.Popen([str(env_dir / "bin" / "voxpipe"), "serve", "nlp"], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        status = None
        deadline = time.monotonic() + 180
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline and stage.poll() is None:
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                except grpc.RpcError:
                    status = None
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
                time.sleep(0.5)
        assert status == health_pb2.HealthCheckResponse.SERVING, stage.stdout.read() if stage.poll() is not None else ""
        stage.send_signal(signal.SIGTERM)
        assert stage.wait(timeout=60) == 0, stage.stdout.read()
    finally:
        if stage.poll() is None:
            stage.kill()
            stage.wait()
