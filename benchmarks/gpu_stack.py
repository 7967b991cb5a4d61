"""The whole stack on the GPU: ``voxpipe up --device cuda``, ``voxpipe health``, ``voxpipe talk`` (twice), and a
short ``voxpipe bench`` of concurrent real-time conversations; everything it prints goes to ``--out/stack.log``.

    PYTHONPATH=/tmp/vx/site:. python3 benchmarks/gpu_stack.py --root /tmp/vx --out $OUT
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
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

    say(f"$ voxpipe up --device {args.device}")
    up = subprocess.Popen([*cli, "up", "--device", args.device], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    started = time.monotonic()
    code = 1
    try:
        assert up.stdout is not None
        for line in up.stdout:
            say(line.rstrip())
            if "all stages SERVING" in line:
                say(f"(stack up in {time.monotonic() - started:.1f} s)")
                break
            if time.monotonic() - started > 300:
                raise TimeoutError("the stack did not come up within 300 s")
        else:
            raise RuntimeError(f"voxpipe up exited with {up.wait()}")
        run("health")
        code = run("talk", "clients/data/question.wav", "-o", str(args.out / "reply.wav"))
        run("talk", "clients/data/question.wav", "-o", str(args.out / "reply.wav"))
        run("bench", "clients/data", "-n", str(args.bench_streams), "-d", str(args.bench_seconds),
            "--json", str(args.out / "stack_bench.json"), timeout=args.bench_seconds + 120)
    finally:
        up.send_signal(signal.SIGINT)
        try:
            rest, _ = up.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            rest, _ = up.communicate()
        say(rest.rstrip() if rest else "")
        say(f"voxpipe up exited with {up.returncode}")
    return code


if __name__ == "__main__":
    sys.exit(main())
