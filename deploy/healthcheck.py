"""Container health probe: exit 0 when the stage in this container answers SERVING on ``grpc.health.v1``.

Usage: ``python healthcheck.py [STAGE]``. The stage's port comes from the same settings ``voxpipe serve``
reads (``VOXPIPE_CONFIG``, ``VOXPIPE_<STAGE>__PORT``), so an overridden port is probed where it really is.
Without STAGE (the image's default HEALTHCHECK, where the stage is not known) every stage port is probed
and the container is healthy when one of them is SERVING: one container runs one stage, the other ports
refuse at once. A server that is loading (NOT_SERVING), draining or not listening yet is unhealthy.
Exit codes follow Docker's HEALTHCHECK convention: 0 healthy, 1 unhealthy.
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.settings import STAGE_ORDER, SettingsError, from_env

# A server bound to every interface is reached over loopback from inside its own container.
_WILDCARDS = {"", "0.0.0.0", "::", "[::]"}


def probe(address: str, timeout_s: float) -> str:
    """The overall health status name of the server at ``address`` ("UNREACHABLE" on any RPC error)."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""),
                                                              timeout=timeout_s)
        except grpc.RpcError as e:
            return f"UNREACHABLE ({e.code().name})"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def main(argv: list[str]) -> int:
    """Probe the named stage (or every stage) and print one line per probe; 0 if one is SERVING."""
    timeout_s = float(os.environ.get("VOXPIPE_HEALTHCHECK_TIMEOUT_S", "3"))
    stages = argv[1:] or list(STAGE_ORDER)
    unknown = [s for s in stages if s not in STAGE_ORDER]
    if unknown:
        print(f"healthcheck: unknown stage(s) {unknown}; choose from {', '.join(STAGE_ORDER)}", file=sys.stderr)
        return 1
    try:
        settings = from_env(os.environ)
    except SettingsError as e:
        print(f"healthcheck: configuration error: {e}", file=sys.stderr)
        return 1
    host = "127.0.0.1" if settings.host in _WILDCARDS else settings.host
    healthy = False
    for name in stages:
        address = f"{host}:{settings.stage(name).server.port}"
        status = probe(address, timeout_s)
        if status == "SERVING":
            healthy = True
        if len(stages) == 1 or status != "UNREACHABLE (UNAVAILABLE)":
            print(f"{name} {address} {status}")
    if not healthy and len(stages) > 1:
        print(f"no stage SERVING on {host} (probed {', '.join(stages)})")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
