"""A stage process that ends with the process that started it.

``voxpipe up`` and the benchmarks start each stage as a child process and stop it with SIGTERM when they stop.
If they are killed outright (SIGKILL, the OOM killer, a closed terminal that never delivered SIGHUP), nothing
stops their children: each stays up holding its port, its models' memory and, on a GPU, a CUDA context, and the
next ``voxpipe up`` fails on the port. So the parent names itself in ``VOXPIPE_PARENT_PID``, and the child asks
the kernel for SIGTERM when the parent dies (Linux ``PR_SET_PDEATHSIG``): the stage drains and exits as if the
parent had stopped it. Unset (a stage started by hand, by docker compose or by systemd), nothing changes.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections.abc import Mapping

from services.common.settings import SettingsError

log = logging.getLogger(__name__)

PARENT_ENV = "VOXPIPE_PARENT_PID"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def parent_env() -> dict[str, str]:
    """What a process adds to a stage child's environment so the child ends with it."""
    return {PARENT_ENV: str(os.getpid())}


def parent_pid(env: Mapping[str, str]) -> int | None:
    """The pid ``env`` names as this stage's parent, or None when it names none.

    Raises:
        SettingsError: the variable is not a process id.
    """
    raw = env.get(PARENT_ENV, "").strip()
    if not raw:
        return None
    try:
        pid = int(raw)
    except ValueError:
        raise SettingsError(f"{PARENT_ENV}={raw!r} is not a process id") from None
    if pid <= 0:
        raise SettingsError(f"{PARENT_ENV}={raw!r} is not a process id")
    return pid


def follow_parent(parent: int) -> None:
    """Get SIGTERM when the process ``parent`` dies (Linux; elsewhere logged and ignored).

    Raises:
        SystemExit: the parent is already gone (it died before this process could ask to follow it).
    """
    if not sys.platform.startswith("linux"):
        log.info("%s is ignored on %s: this stage will outlive its parent if that is killed", PARENT_ENV, sys.platform)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        log.warning("cannot follow the parent process %d: prctl failed (%s)", parent, os.strerror(ctypes.get_errno()))
        return
    # Asked only now, so a parent that died before the prctl is seen here (this process was re-parented).
    if os.getppid() != parent:
        raise SystemExit(f"the process that started this stage (pid {parent}) is gone; not starting")
