"""A stage asked for a GPU it cannot use fails at start, naming the stage, the model and the reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engines.device import cuda_problem
from tests.stage.recommender_fixtures import rec_models_fixture  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.models


@pytest.mark.skipif(cuda_problem() is None, reason="this machine has a usable GPU")
def test_serve_on_cuda_without_a_gpu_exits_with_the_reason(rec_models):
    env = {**os.environ, "VOXPIPE_MODELS_DIR": str(rec_models), "VOXPIPE_RECOMMENDER__METRICS_PORT": "0"}
    done = subprocess.run([sys.executable, "-m", "clients.cli", "serve", "recommender", "--device", "cuda",
                           "--port", "0"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert (f"voxpipe serve recommender: model 'recommender': device 'cuda' requested but {cuda_problem()}"
            in done.stderr), done.stderr
    assert "voxpipe build" not in done.stderr


def test_auto_serves_on_the_cpu_without_a_gpu(rec_models):
    from engines.repository import ModelRepository

    serving = ModelRepository(rec_models, target="auto").resolve("recommender").serving
    assert serving.device == ("cpu" if cuda_problem() else "cuda")
