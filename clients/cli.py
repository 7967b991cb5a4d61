"""The ``voxpipe`` command line: build models, run services, talk to the stack, benchmark it.

Environment variables are read here, once, and turned into settings dataclasses.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import os
import sys

from services.common import settings as stack_settings

# Command modules: each exposes register(subparsers). Modules added by later stages are listed here.
COMMANDS = ("clients.commands", "clients.demo", "clients.talk", "clients.transcribe", "clients.bench")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used by the docs test that checks --help)."""
    parser = argparse.ArgumentParser(
        prog="voxpipe",
        description="voxpipe: a spoken question in, a spoken answer out — ASR -> NLP -> recommender -> TTS "
                    "over gRPC under a latency budget.",
        epilog="Configuration: VOXPIPE_CONFIG=<file.toml> (defaults: services/common/voxpipe.toml), "
               "VOXPIPE_MODELS_DIR, VOXPIPE_DEVICE, VOXPIPE_<SECTION>__<KEY>. See docs/CONFIG.md.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``voxpipe`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = stack_settings.from_env(os.environ)
    except stack_settings.SettingsError as e:
        print(f"voxpipe: configuration error: {e}", file=sys.stderr)
        return 2
    try:
        return int(args.handler(args, settings) or 0)
    except KeyboardInterrupt:
        return 130


def run_async(coro) -> int:
    """Run a command's coroutine to completion and return its exit code."""
    return int(asyncio.run(coro) or 0)


if __name__ == "__main__":
    sys.exit(main())
