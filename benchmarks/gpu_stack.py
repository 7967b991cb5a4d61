"""The whole stack on the GPU: ``voxpipe up --device cuda``, ``voxpipe health``, ``voxpipe talk`` (twice), and a
short ``voxpipe bench`` of concurrent real-time conversations; everything it prints goes to ``--out/stack.log``.

    PYTHONPATH=/tmp/vx/site:. python3 benchmarks/gpu_stack.py --root /tmp/vx --out $OUT
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/vx"))
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--bench-streams", type=int, default=8)
    parser.add_argument("--bench-seconds", type=int, default=40)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "VOXPIPE_MODELS_DIR": str(args.root / "models"), "VOXPIPE_CACHE_DIR": str(args.root / "cache"),
           "PYTHONUNBUFFERED": "1"}
    cli = [sys.executable, "-m", "clients.cli"]
    log = (args.out / "stack.log").open("w")

    def say(text: str) -> None:
        print(text, flush=True)
        log.write(text + "\n")
        log.flush()

    def run(*argv: str, timeout: float = 120) -> int:
        say(f"$ voxpipe {' '.join(argv)}")
        done = subprocess.run([*cli, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)
        say((done.stdout + done.stderr).rstrip())
        return done.returncode

    code = 1
    with voxpipe_up(["--device", args.device], env, say):
        run("health")
        code = run("talk", "clients/data/question.wav", "-o", str(args.out / "reply.wav"))
        run("talk", "clients/data/question.wav", "-o", str(args.out / "reply.wav"))
        run("bench", "clients/data", "-n", str(args.bench_streams), "-d", str(args.bench_seconds),
            "--json", str(args.out / "stack_bench.json"), timeout=args.bench_seconds + 120)
    return code


@contextlib.contextmanager
def voxpipe_up(argv: list[str], env: dict[str, str], say: Callable[[str], None], *,
               up_within_s: float = 300.0) -> Iterator[subprocess.Popen]:
    """``voxpipe up <argv>`` until every stage is SERVING (``up_within_s`` at most), then the caller's; on the
    way out the stack is stopped with SIGINT (killed after 60 s). Everything it prints goes to ``say``."""
    say(f"$ voxpipe up {' '.join(argv)}")
    up = subprocess.Popen([sys.executable, "-m", "clients.cli", "up", *argv], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started = time.monotonic()
    try:
        assert up.stdout is not None
        for line in up.stdout:
            say(line.rstrip())
            if "all stages SERVING" in line:
                say(f"(stack up in {time.monotonic() - started:.1f} s)")
                break
            if time.monotonic() - started > up_within_s:
                raise TimeoutError(f"the stack did not come up within {up_within_s:.0f} s")
        else:
            raise RuntimeError(f"voxpipe up exited with {up.wait()}")
        yield up
    finally:
        up.send_signal(signal.SIGINT)
        try:
            rest, _ = up.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            rest, _ = up.communicate()
        say(rest.rstrip() if rest else "")
        say(f"voxpipe up exited with {up.returncode}")


if __name__ == "__main__":
    sys.exit(main())
