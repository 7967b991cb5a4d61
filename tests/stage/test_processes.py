"""A stage as several processes: the real launcher starts two NLP servers (process i on port + 100 i), and
the orchestrator's stage clients spread their calls over both, read back from each process's metrics. A stage
process drains and exits when the process that started it is killed outright."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from benchmarks.servers import free_port
from orchestrator.peers import PeerAddresses, StageClients
from protos import nlp_pb2
from services import launcher
from services.common import settings
from services.common.settings import PROCESS_PORT_STEP
from tests.helpers import process_running


def _free_pair() -> int:
    """A port p with p + PROCESS_PORT_STEP free too."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            if port + PROCESS_PORT_STEP > 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + PROCESS_PORT_STEP))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port pair")


def _handled(metrics_port: int, method: str) -> float:
    """RPCs of ``method`` the process has finished (any status: a call stream ends when its caller closes it)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for labels, value in re.findall(r"^voxpipe_grpc_handled_total\{([^}]*)\} (\S+)$", text, flags=re.MULTILINE):
        named = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if named["method"] == method:
            total += float(value)
    return total


class _Timing:
    server_ms = 0.0


@pytest.fixture
async def two_nlp_processes(models_dir, monkeypatch):
    root = models_dir("nlp")
    port, metrics = _free_pair(), _free_pair()
    env = {"VOXPIPE_MODELS_DIR": str(root), "VOXPIPE_NLP__PORT": str(port), "VOXPIPE_NLP__METRICS_PORT": str(metrics),
           "VOXPIPE_NLP__PROCESSES": "2", "VOXPIPE_LOG_LEVEL": "WARNING"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    stack = await launcher.launch(settings.load(env=env), stages=["nlp"])
    try:
        yield stack
    finally:
        await launcher.shutdown(stack)


@pytest.mark.parametrize("stage_calls", ["unary", "stream"])
async def test_calls_are_spread_over_the_processes_of_a_stage(two_nlp_processes, stage_calls):
    stack = two_nlp_processes
    assert [(s.label, s.index) for s in stack.stages] == [("nlp", 0), ("nlp[1]", 1)]
    assert {s.env["VOXPIPE_PARENT_PID"] for s in stack.stages} == {str(os.getpid())}  # they end with the launcher
    target = ",".join(s.address for s in stack.stages)
    clients = StageClients(PeerAddresses(asr="", nlp=target, recommender="", tts=""), stage_calls)
    await clients.open()
    try:
        for i in range(6):
            reply = await clients.understand(nlp_pb2.UnderstandRequest(text=f"recommend a comedy {i}"), timeout_s=10,
                                             metadata=[], timing=_Timing())
            assert reply.intent
    finally:
        await clients.close()
    method = "Understand" if stage_calls == "unary" else "UnderstandCalls"
    for _ in range(50):  # a closed stream is counted once the server has seen it end
        counts = [_handled(s.metrics_port, method) for s in stack.stages]
        if all(counts):
            break
        await asyncio.sleep(0.1)
    if stage_calls == "unary":
        assert counts == [3.0, 3.0]
    else:  # one multiplexed stream per process, counted when it closes
        assert counts == [1.0, 1.0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_stage_drains_and_exits_when_the_process_that_started_it_is_killed(models_dir, tmp_path):
    port, log = free_port(), tmp_path / "nlp.log"
    env = {**os.environ, "VOXPIPE_MODELS_DIR": str(models_dir("nlp")), "VOXPIPE_LOG_LEVEL": "INFO",
           "VOXPIPE_NLP__METRICS_PORT": str(free_port())}
    # A stand-in for `voxpipe up`: starts the stage as the launcher does (its pid in the environment) and waits.
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, subprocess, sys
        from services.common.parent import parent_env
        with open({str(log)!r}, "wb") as log:
            stage = subprocess.Popen([sys.executable, "-m", "clients.cli", "serve", "nlp", "--port", "{port}"],
                                     env={{**os.environ, **parent_env()}}, stdout=log, stderr=subprocess.STDOUT)
        print(stage.pid, flush=True)
        stage.wait()
    """)], cwd=Path(__file__).resolve().parents[2], env=env, stdout=subprocess.PIPE, text=True)
    try:
        stage = int(parent.stdout.readline())
        asyncio.run(launcher.wait_serving(f"127.0.0.1:{port}", 120))
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 30
        while process_running(stage):
            assert time.monotonic() < deadline, "the stage outlived the process that started it"
            time.sleep(0.1)
        text = log.read_text()
        assert "nlp draining" in text and "nlp stopped" in text, text[-2000:]  # SIGTERM's drain, not a kill
    finally:
        parent.kill()
