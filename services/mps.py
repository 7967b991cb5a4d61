"""NVIDIA MPS for a local stack: start a control daemon (or join a running one) and stop only our own.

Several processes on one GPU time-slice it by default: one context runs at a time. Under MPS (the
Multi-Process Service) their kernels run concurrently, as if from one process. ``voxpipe up --mps`` starts
``nvidia-cuda-mps-control -d`` with its pipe and log directories under the stack's run folder, hands
``CUDA_MPS_PIPE_DIRECTORY``/``CUDA_MPS_LOG_DIRECTORY`` to the stages it starts, and sends the daemon
``quit`` when the stack stops. A daemon already answering on ``CUDA_MPS_PIPE_DIRECTORY`` (or the driver's
default ``/tmp/nvidia-mps``) is joined instead, and left running.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CONTROL = "nvidia-cuda-mps-control"
DEFAULT_PIPE_DIR = Path("/tmp/nvidia-mps")  # where the driver looks when CUDA_MPS_PIPE_DIRECTORY is unset


class MpsError(RuntimeError):
    """The MPS control daemon could not be found, started or reached."""


@dataclass(frozen=True, kw_only=True)
class MpsDaemon:
    """A running control daemon the stack's GPU stages are clients of."""

    pipe_dir: Path
    log_dir: Path
    started: bool  # True: this stack started it and stops it

    def env(self) -> dict[str, str]:
        """What a client process needs to find the daemon."""
        return {"CUDA_MPS_PIPE_DIRECTORY": str(self.pipe_dir), "CUDA_MPS_LOG_DIRECTORY": str(self.log_dir)}


async def _control(command: str, pipe_dir: Path, log_dir: Path, timeout_s: float = 5.0,
                   *, binary: str = CONTROL) -> tuple[int, str]:
    """Send one command to the daemon at ``pipe_dir``; returns the exit code and output."""
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "CUDA_MPS_PIPE_DIRECTORY": str(pipe_dir),
           "CUDA_MPS_LOG_DIRECTORY": str(log_dir)}
    process = await asyncio.create_subprocess_exec(
        binary, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=env)
    try:
        out, _ = await asyncio.wait_for(process.communicate(f"{command}\n".encode()), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        return 124, f"{CONTROL} did not answer {command!r} within {timeout_s:.0f} s"
    return process.returncode or 0, out.decode(errors="replace").strip()


async def _answers(pipe_dir: Path, log_dir: Path, binary: str) -> bool:
    if not (pipe_dir / "control").exists():
        return False
    code, _ = await _control("get_server_list", pipe_dir, log_dir, binary=binary)
    return code == 0


async def start(run_dir: Path, environ: Mapping[str, str], *, binary: str = CONTROL,
                ready_timeout_s: float = 10.0) -> MpsDaemon:
    """Join the daemon already answering (``CUDA_MPS_PIPE_DIRECTORY`` or the default), else start one
    with its pipe and log directories under ``run_dir/mps``.

    Raises:
        MpsError: the control binary is missing, or the daemon did not answer within ``ready_timeout_s``.
    """
    path = shutil.which(binary) if "/" not in binary else binary
    if path is None:
        raise MpsError(f"{binary} not found on PATH: MPS needs the NVIDIA driver's MPS binaries "
                       "(or run without --mps: the GPU stages then time-slice the card)")
    existing = Path(environ["CUDA_MPS_PIPE_DIRECTORY"]) if environ.get("CUDA_MPS_PIPE_DIRECTORY") else DEFAULT_PIPE_DIR
    existing_log = Path(environ.get("CUDA_MPS_LOG_DIRECTORY") or "/var/log/nvidia-mps")
    if await _answers(existing, existing_log, path):
        log.info("joining the MPS control daemon at %s", existing)
        return MpsDaemon(pipe_dir=existing, log_dir=existing_log, started=False)
    pipe_dir, log_dir = run_dir / "mps" / "pipe", run_dir / "mps" / "log"
    if await _answers(pipe_dir, log_dir, path):  # left running by an earlier stack that was killed
        log.info("joining the MPS control daemon at %s", pipe_dir)
        return MpsDaemon(pipe_dir=pipe_dir, log_dir=log_dir, started=False)
    if len(str(pipe_dir / "control")) > 100:
        raise MpsError(f"MPS pipe directory {pipe_dir} is too long for a socket path; set VOXPIPE_CACHE_DIR shorter")
    for d in (pipe_dir, log_dir):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o700)
    code, out = await _control_daemon(path, pipe_dir, log_dir)
    if code != 0:
        raise MpsError(f"{binary} -d exited with {code}: {out or 'no output'} (see {log_dir}/control.log)")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ready_timeout_s
    while not await _answers(pipe_dir, log_dir, path):
        if loop.time() > deadline:
            raise MpsError(f"the MPS control daemon did not answer at {pipe_dir} within {ready_timeout_s:.0f} s "
                           f"(see {log_dir}/control.log)")
        await asyncio.sleep(0.1)
    log.info("started the MPS control daemon (pipe %s, log %s)", pipe_dir, log_dir)
    return MpsDaemon(pipe_dir=pipe_dir, log_dir=log_dir, started=True)


async def _control_daemon(path: str, pipe_dir: Path, log_dir: Path) -> tuple[int, str]:
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "CUDA_MPS_PIPE_DIRECTORY": str(pipe_dir),
           "CUDA_MPS_LOG_DIRECTORY": str(log_dir)}
    process = await asyncio.create_subprocess_exec(path, "-d", env=env, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT)
    out, _ = await process.communicate()  # -d forks the daemon and returns
    return process.returncode or 0, out.decode(errors="replace").strip()


async def stop(daemon: MpsDaemon, *, binary: str = CONTROL, timeout_s: float = 10.0) -> None:
    """``quit`` the daemon if this stack started it (after its clients have exited); else leave it."""
    if not daemon.started:
        return
    path = shutil.which(binary) if "/" not in binary else binary
    assert path is not None
    code, out = await _control("quit", daemon.pipe_dir, daemon.log_dir, binary=path)
    if code != 0:
        log.warning("MPS control daemon at %s did not take quit (%d): %s", daemon.pipe_dir, code, out)
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while await _answers(daemon.pipe_dir, daemon.log_dir, path):
        if loop.time() > deadline:
            log.warning("MPS control daemon at %s still answers %.0f s after quit", daemon.pipe_dir, timeout_s)
            return
        await asyncio.sleep(0.1)
    log.info("stopped the MPS control daemon at %s", daemon.pipe_dir)
