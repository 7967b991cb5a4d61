"""The floor under every voxpipe hop: a bare gRPC round trip between two Python processes on this machine.

A child process serves only ``grpc.health.v1.Health`` (grpc.aio, no voxpipe code: no interceptor, spans or
metrics); this process calls ``Check`` back to back over loopback TCP and a Unix socket, with the asyncio
client (what the orchestrator uses) and the synchronous one, in interleaved rounds. Compare with the
per-hop cost ``e2e_bench.py`` measures on the voxpipe stack.

    flock /tmp/voxpipe-bench.lock .venv/bin/python benchmarks/grpc_rtt.py [--calls 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.grpc_load import machine  # noqa: E402


async def _serve(address: str) -> None:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(address)
    await server.start()
    print("READY", flush=True)
    await server.wait_for_termination()


async def _aio_calls(address: str, calls: int) -> list[float]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub, request = health_pb2_grpc.HealthStub(channel), health_pb2.HealthCheckRequest()
        for _ in range(100):
            await stub.Check(request)
        out = []
        for _ in range(calls):
            t0 = time.perf_counter()
            await stub.Check(request)
            out.append(time.perf_counter() - t0)
        return out


def _sync_calls(address: str, calls: int) -> list[float]:
    with grpc.insecure_channel(address) as channel:
        stub, request = health_pb2_grpc.HealthStub(channel), health_pb2.HealthCheckRequest()
        for _ in range(100):
            stub.Check(request)
        out = []
        for _ in range(calls):
            t0 = time.perf_counter()
            stub.Check(request)
            out.append(time.perf_counter() - t0)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="round trips per client and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve))
        return
    print(f"# bare gRPC round trip  {machine()}")
    print(f"# command: {' '.join(sys.argv)}")
    with tempfile.TemporaryDirectory() as tmp:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        addresses = {"tcp 127.0.0.1": f"127.0.0.1:{port}", "unix socket": f"unix://{tmp}/rtt.sock"}
        servers, results = {}, {}
        try:
            for name, address in addresses.items():
                servers[name] = subprocess.Popen([sys.executable, __file__, "--serve", address],
                                                 stdout=subprocess.PIPE, text=True)
                servers[name].stdout.readline()
            for _ in range(args.rounds):
                for name, address in addresses.items():
                    results.setdefault(f"{name}, asyncio client", []).extend(asyncio.run(_aio_calls(address, args.calls)))
                    results.setdefault(f"{name}, sync client", []).extend(_sync_calls(address, args.calls))
        finally:
            for proc in servers.values():
                proc.kill()
                proc.wait()
    print("\n| transport, client | round trips | p50 ms | p90 ms | p99 ms |\n|---|---|---|---|---|")
    for name, values in results.items():
        q = statistics.quantiles(values, n=100)
        print(f"| {name} | {len(values)} | {q[49] * 1e3:.3f} | {q[89] * 1e3:.3f} | {q[98] * 1e3:.3f} |")


if __name__ == "__main__":
    main()
