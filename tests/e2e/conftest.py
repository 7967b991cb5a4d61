"""The whole stack, started by the real ``voxpipe up`` on free ports, shared by the end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.common.settings import STAGE_ORDER as STAGES


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Stack:
    addresses: dict[str, str]
    process: subprocess.Popen
    log: list[str]
    metrics_ports: dict[str, int]

    @property
    def orchestrator(self) -> str:
        return self.addresses["orchestrator"]

    def metric(self, stage: str, name: str) -> float:
        """A stage's Prometheus sample ``name`` (unlabelled), read from its metrics endpoint."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_ports[stage]}/metrics", timeout=5) as reply:
            for line in reply.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        raise KeyError(f"{stage} reports no {name}")


def start_stack(models_dir, **env_overrides: str):
    """``voxpipe up`` with every stage on a free port; a generator: yields the Stack, then stops it (SIGINT,
    drained) and checks it exited 0."""
    root = None
    for stage in ("asr", "nlp", "recommender", "tts"):
        root = models_dir(stage)
    ports = {stage: free_port() for stage in STAGES}
    metrics_ports = {stage: free_port() for stage in STAGES}
    env = {**os.environ, "VOXPIPE_MODELS_DIR": str(root), "VOXPIPE_LOG_LEVEL": "WARNING", **env_overrides}
    for stage, port in ports.items():
        env[f"VOXPIPE_{stage.upper()}__PORT"] = str(port)
        env[f"VOXPIPE_{stage.upper()}__METRICS_PORT"] = str(metrics_ports[stage])
    process = subprocess.Popen([sys.executable, "-m", "clients.cli", "up"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, cwd=Path(__file__).resolve().parents[2])
    log: list[str] = []
    ready = threading.Event()

    def reader() -> None:
        for line in process.stdout:
            log.append(line.rstrip())
            if "all stages SERVING" in line:
                ready.set()

    threading.Thread(target=reader, daemon=True).start()
    deadline = time.monotonic() + 300
    while not ready.is_set():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("voxpipe up did not get every stage SERVING:\n" + "\n".join(log[-40:]))
        time.sleep(0.2)
    yield Stack({s: f"127.0.0.1:{p}" for s, p in ports.items()}, process, log, metrics_ports)
    process.send_signal(signal.SIGINT)
    try:
        code = process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert code == 0, "voxpipe up did not stop cleanly:\n" + "\n".join(log[-40:])


@pytest.fixture(scope="session")
def stack(models_dir) -> Stack:
    """The whole stack for the session's end-to-end tests."""
    yield from start_stack(models_dir)
