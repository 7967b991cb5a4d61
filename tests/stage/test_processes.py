"""A stage as several processes: the real launcher starts two NLP servers (process i on port + 100 i), and
the orchestrator's stage clients spread their calls over both, read back from each process's metrics."""

from __future__ import annotations

import asyncio
import re
import socket
import urllib.request

import pytest

from orchestrator.peers import PeerAddresses, StageClients
from protos import nlp_pb2
from services import launcher
from services.common import settings
from services.common.settings import PROCESS_PORT_STEP


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
