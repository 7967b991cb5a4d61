"""``voxpipe demo``: build what is missing, start the stack, ask the bundled question, print, stop."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from services.common.settings import StackSettings


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``demo`` to the CLI."""
    p = sub.add_parser("demo", help="build models if missing, start the stack, ask the bundled spoken question",
                       description="The README's first command: builds the model repository if needed (cached), "
                                   "starts every stage locally on the CPU default, streams the bundled question "
                                   "in real time, prints transcript, intent, movies, reply and the turn's latency "
                                   "table, writes the spoken reply to a WAV file, and stops the stack.")
    p.add_argument("-o", "--output", type=Path, default=Path("voxpipe-reply.wav"), help="reply WAV (default: %(default)s)")
    p.add_argument("audio", nargs="?", type=Path, help="ask this audio file instead of the bundled question")
    p.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace, settings: StackSettings) -> int:
    from engines.build import STAGES, BuildContext, build_stage
    from services.common.settings import cache_root

    ctx = BuildContext(models_dir=settings.models_dir, downloads_dir=cache_root(os.environ) / "downloads")
    for stage in STAGES:
        start = time.perf_counter()
        build_stage(stage, ctx)
        print(f"models  {stage:<12} ready ({time.perf_counter() - start:.1f} s)", flush=True)
    return asyncio.run(_run(args, settings))


async def _run(args: argparse.Namespace, settings: StackSettings) -> int:
    from clients.talk import BUNDLED_QUESTION, TalkOptions, talk
    from services.launcher import LaunchError, format_table, launch, shutdown

    print("starting the stack (CPU)…", flush=True)
    try:
        stack = await launch(settings)
    except LaunchError as e:
        print(f"voxpipe demo: {e}", file=sys.stderr)
        return 1
    print(format_table(stack.stages), flush=True)
    try:
        audio = args.audio or BUNDLED_QUESTION
        print(f"\nasking: {audio}", flush=True)
        turns = await talk(TalkOptions(
            address=settings.stage("orchestrator").server.address, audio=audio, mic_s=0.0, realtime=True,
            output=args.output, as_json=False, budget_ms=0, session_id="", voice=""))
    finally:
        print("\nstopping the stack…", flush=True)
        await shutdown(stack)
    if not turns:
        print("voxpipe demo: no turn completed", file=sys.stderr)
        return 1
    return 0
