"""deploy/healthcheck.py (the image's HEALTHCHECK) against a real grpc.aio server on port 0.

The probe runs as Docker runs it: a separate process, configured only by the container's environment.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys

from services.common import ServerSettings, StageServer
from services.common.settings import STAGE_ORDER
from tests.stage.probe_stage import ProbeStage
from tests.unit.deploy_support import ROOT

SCRIPT = ROOT / "deploy" / "healthcheck.py"


def _closed_port() -> int:
    # A port nothing listens on: bound, then released.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**ports: int) -> dict[str, str]:
    """The container's view: bind-all host, and every stage's port pointed somewhere known."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXPIPE_")}
    env |= {"VOXPIPE_HOST": "0.0.0.0", "PYTHONPATH": str(ROOT), "VOXPIPE_HEALTHCHECK_TIMEOUT_S": "2"}
    for stage in STAGE_ORDER:
        env[f"VOXPIPE_{stage.upper()}__PORT"] = str(ports.get(stage) or _closed_port())
    return env


async def _probe(env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(sys.executable, str(SCRIPT), *args, env=env, cwd=ROOT,
                                                   stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode()


async def test_serving_stage_is_healthy_and_a_loading_one_is_not():
    stage = ProbeStage()
    stage.loaded.clear()  # hold the stage in its loading phase: bound, NOT_SERVING
    server = StageServer(stage, ServerSettings(host="127.0.0.1", port=0, grace_s=0.5))
    starting = asyncio.create_task(server.start())
    try:
        # The scaffold signals "bound" by no event; its handle appears once the port is bound.
        while server._handle is None:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        env = _env(asr=server._handle.port)
        code, out = await _probe(env, "asr")
        assert code == 1 and "NOT_SERVING" in out, out
        stage.loaded.set()
        await starting
        code, out = await _probe(env, "asr")
        assert code == 0 and f"asr 127.0.0.1:{server.port} SERVING" in out, out
    finally:
        stage.loaded.set()
        await starting
        await server.stop()
    code, out = await _probe(env, "asr")
    assert code == 1 and "UNREACHABLE" in out, out


async def test_without_a_stage_it_finds_the_one_running_in_the_container():
    server = StageServer(ProbeStage(), ServerSettings(host="127.0.0.1", port=0, grace_s=0.5))
    await server.start()
    try:
        code, out = await _probe(_env(tts=server.port))
        assert code == 0 and f"tts 127.0.0.1:{server.port} SERVING" in out, out
    finally:
        await server.stop()
    code, out = await _probe(_env())
    assert code == 1 and "no stage SERVING" in out, out


async def test_unknown_stage_and_bad_config_are_unhealthy_with_a_reason():
    code, out = await _probe(_env(), "asrr")
    assert code == 1 and "unknown stage" in out and "asrr" in out, out
    env = _env() | {"VOXPIPE_ASR__PORT": "fifty"}
    code, out = await _probe(env, "asr")
    assert code == 1 and "VOXPIPE_ASR__PORT" in out, out
