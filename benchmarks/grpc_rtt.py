"""The floor under every voxpipe hop: a bare gRPC round trip between two Python processes on this machine.

A child process serves ``grpc.health.v1.Health`` and a bare echo over a bidirectional stream (grpc.aio, no
voxpipe code: no interceptor, spans or metrics). This process calls ``Check`` back to back over loopback
TCP and a Unix socket, with the asyncio client (what the orchestrator uses) and the synchronous one; and it
sends one message at a time on an open stream, as voxpipe's multiplexed stage calls do (a task per call on
the server, a reply routed to the caller's queue). Rounds are interleaved. The unary and stream rows are
repeated with ``--idle-ms`` of sleep before each call, as between a turn's calls, where the processes'
threads must wake up first. Compare with the per-hop cost ``e2e_bench.py`` measures on the voxpipe stack.

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


def _same(x: bytes) -> bytes:
    return x


async def _echo_calls(requests, context):
    """Each message is a call: answered from a task of its own through one reply queue (as CallServer)."""
    replies: asyncio.Queue = asyncio.Queue(maxsize=64)

    async def call(message: bytes) -> None:
        await replies.put(message)

    async def read() -> None:
        async with asyncio.TaskGroup() as tg:
            async for message in requests:
                tg.create_task(call(message))
        await replies.put(None)

    reader = asyncio.create_task(read())
    while (reply := await replies.get()) is not None:
        yield reply
    await reader


async def _serve(address: str) -> None:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "rtt.Echo", {"Calls": grpc.stream_stream_rpc_method_handler(_echo_calls, _same, _same)}),))
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


async def _aio_unary_idle(address: str, calls: int, idle_s: float) -> list[float]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub, request = health_pb2_grpc.HealthStub(channel), health_pb2.HealthCheckRequest()
        out = []
        for _ in range(calls):
            await asyncio.sleep(idle_s)
            t0 = time.perf_counter()
            await stub.Check(request)
            out.append(time.perf_counter() - t0)
        return out


async def _stream_calls(address: str, calls: int, idle_s: float) -> list[float]:
    """One message per call on an open stream; the reply reaches the caller through a reader task."""
    async with grpc.aio.insecure_channel(address) as channel:
        stream = channel.stream_stream("/rtt.Echo/Calls", _same, _same)()
        replies: asyncio.Queue = asyncio.Queue()

        async def read() -> None:
            while (reply := await stream.read()) is not grpc.aio.EOF:
                await replies.put(reply)

        reader = asyncio.create_task(read())
        out = []
        for i in range(calls + 100):
            await asyncio.sleep(idle_s)
            t0 = time.perf_counter()
            await stream.write(b"x" * 64)
            await replies.get()
            if i >= 100:
                out.append(time.perf_counter() - t0)
        await stream.done_writing()
        await reader
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
    parser.add_argument("--idle-ms", type=float, default=20.0, help="sleep before each call in the idle rows")
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
                    results.setdefault(f"{name}, asyncio, open stream", []).extend(
                        asyncio.run(_stream_calls(address, args.calls, 0.0)))
                    idle_calls, idle_s = max(args.calls // 10, 50), args.idle_ms / 1e3
                    results.setdefault(f"{name}, asyncio client, {args.idle_ms:g} ms idle", []).extend(
                        asyncio.run(_aio_unary_idle(address, idle_calls, idle_s)))
                    results.setdefault(f"{name}, asyncio, open stream, {args.idle_ms:g} ms idle", []).extend(
                        asyncio.run(_stream_calls(address, idle_calls, idle_s)))
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
