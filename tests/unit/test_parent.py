"""A stage process ends with its parent (services.common.parent): real child processes, the parent SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from services.common.parent import PARENT_ENV, parent_env, parent_pid
from services.common.settings import SettingsError
from tests.helpers import process_running

ROOT = Path(__file__).resolve().parents[2]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")

# The child: follows its parent, then says so and waits (SIGTERM's default action ends it).
CHILD = "import os, time; from services.common.parent import follow_parent, parent_pid; " \
        "follow_parent(parent_pid(os.environ)); print('following', flush=True); time.sleep(120)"


def test_the_parent_named_or_none():
    assert parent_pid({}) is None
    assert parent_pid({PARENT_ENV: " "}) is None
    assert parent_pid({PARENT_ENV: "4242"}) == 4242


@pytest.mark.parametrize("value", ["abc", "0", "-4", "12.5"])
def test_a_bad_pid_is_refused_naming_it(value):
    with pytest.raises(SettingsError, match=f"{PARENT_ENV}='{value}' is not a process id"):
        parent_pid({PARENT_ENV: value})


def test_parent_env_names_this_process():
    assert parent_env() == {PARENT_ENV: str(os.getpid())}


@linux_only
def test_a_child_ends_when_its_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, subprocess, sys
        from services.common.parent import parent_env
        child = subprocess.Popen([sys.executable, "-c", {CHILD!r}], env={{**os.environ, **parent_env()}},
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline() == "following\\n"
        print(child.pid, flush=True)
        child.wait()
    """)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert process_running(child)
        parent.send_signal(signal.SIGKILL)  # no clean-up of its own: only the kernel can tell the child
        parent.wait(10)
        deadline = time.monotonic() + 10
        while process_running(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not process_running(child), "the child outlived its SIGKILLed parent"
    finally:
        parent.kill()


@linux_only
def test_a_child_whose_parent_is_gone_does_not_start():
    # The child's parent is this test; it is told its parent is another process (one that has exited).
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    done = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env={**os.environ, PARENT_ENV: str(gone.pid)},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert f"the process that started this stage (pid {gone.pid}) is gone" in done.stderr
    assert "following" not in done.stdout


def test_voxpipe_serve_refuses_a_bad_parent_naming_it():
    done = subprocess.run([sys.executable, "-m", "clients.cli", "serve", "nlp"], cwd=ROOT,
                          env={**os.environ, PARENT_ENV: "launcher"}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"voxpipe serve nlp: {PARENT_ENV}='launcher' is not a process id" in done.stderr
