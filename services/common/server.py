"""The server scaffold shared by every service: health, reflection, metrics, interceptor, drain.

``create_server`` builds a ``grpc.aio`` server bound to an address (port 0 picks a free port);
``StageServer`` runs it through its lifecycle:

    NOT_SERVING --(engines loaded and warmed)--> SERVING --(SIGTERM/SIGINT or stop())--> NOT_SERVING
    --(in-flight RPCs drain within grace_s; new RPCs refused)--> stopped
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Gauge, start_http_server
from threadpoolctl import threadpool_limits

from services.common.interceptor import ServiceInterceptor
from services.common.parent import follow_parent
from services.common.settings import ServerSettings
from services.common.stage import Stage

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class ServeError(RuntimeError):
    """A stage could not start serving (a port in use, models missing...); the message says what to do."""

_OVERALL = ""  # the health service's name for the server as a whole


@dataclass
class ServerHandle:
    """A built (not yet started) server with its health servicer and bound port."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    stage: Stage
    interceptor: ServiceInterceptor

    async def set_serving(self, serving: bool) -> None:
        """Flip every service of the stage (and the overall entry) between SERVING and NOT_SERVING.

        While NOT_SERVING the stage's own RPCs are refused with UNAVAILABLE.
        """
        self.interceptor.ready = serving
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in (_OVERALL, *self.stage.service_names):
            await self.health.set(name, status)


def create_server(stage: Stage, address: str) -> tuple[grpc.aio.Server, int]:
    """Build the stage's server bound to ``address``; returns the server and the port it got."""
    handle = build_server(stage, address)
    return handle.server, handle.port


def build_server(stage: Stage, address: str) -> ServerHandle:
    """Like :func:`create_server`, but returns the health servicer too."""
    interceptor = ServiceInterceptor(stage.name, gated_services=stage.service_names)
    server = grpc.aio.server(
        interceptors=[interceptor],
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.so_reuseport", 0),
                 # No BDP probing: the receive window stays at 64 KiB per stream instead of growing to megabytes,
                 # so a stream that is not read (ASR holding a client to real time) holds back its sender
                 # after ~2 s of audio rather than buffering minutes of it here.
                 ("grpc.http2.bdp_probe", 0),
                 # The orchestrator's channels ping every 30 s (keepalive); the default minimum here (5 min)
                 # counted those as strikes and answered GOAWAY "too_many_pings".
                 ("grpc.http2.min_recv_ping_interval_without_data_ms", 20_000)],
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    stage.register(server)
    names = (*stage.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as e:
        port = 0
        cause: Exception | None = e
    else:
        cause = None
    if port == 0:
        raise ServeError(f"{stage.name}: cannot listen on {address} (in use, or not an address of this host); "
                         f"set [{stage.name}] port or VOXPIPE_{stage.name.upper()}__PORT") from cause
    return ServerHandle(server=server, port=port, health=health_servicer, stage=stage, interceptor=interceptor)


DRAIN_NOTICE_S = 0.5  # on SIGTERM: NOT_SERVING for this long, still answering, before new RPCs are refused

LOOP_TASKS = Gauge("voxpipe_event_loop_tasks",
                   "Tasks alive on the process's event loop; a count that keeps growing while load does not is a leak.")


class StageServer:
    """Runs one stage: start, warm, serve until stopped, drain. Usable as an async context manager."""

    def __init__(self, stage: Stage, settings: ServerSettings) -> None:
        self.stage = stage
        self.settings = settings
        self._handle: ServerHandle | None = None
        self._stopped = asyncio.Event()

    @property
    def port(self) -> int:
        assert self._handle is not None, "server not started"
        return self._handle.port

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    async def start(self) -> None:
        """Bind and start (health NOT_SERVING), load and warm the stage, then report SERVING.

        Raises:
            ServeError: a port is in use, or the stage could not load (e.g. models not built).
        """
        if self.settings.metrics_port:
            try:
                start_http_server(self.settings.metrics_port, addr=self.settings.host)
            except OSError as e:
                name = self.stage.name
                raise ServeError(f"{name}: metrics port {self.settings.host}:{self.settings.metrics_port} is not "
                                 f"available ({e.strerror}); set [{name}] metrics_port or "
                                 f"VOXPIPE_{name.upper()}__METRICS_PORT (0 turns the endpoint off)") from e
        # numpy's BLAS stays on the calling thread: the engines own the cores (instances x intra_op_threads),
        # and an OpenBLAS worker spinning after each batched matmul cost the NLP stage ~2 ms of CPU a request.
        threadpool_limits(limits=1, user_api="blas")
        loop = asyncio.get_running_loop()
        LOOP_TASKS.set_function(lambda: len(asyncio.all_tasks(loop)))
        self._handle = build_server(self.stage, self.settings.address)
        await self._handle.set_serving(False)
        await self._handle.server.start()
        try:
            await self.stage.start()
        except BaseException:
            await self._handle.server.stop(0)
            raise
        await self._handle.set_serving(True)
        log.info("%s serving on %s", self.stage.name, self.address)

    async def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING first, then let in-flight RPCs finish within the grace, then stop the stage."""
        if self._handle is None or self._stopped.is_set():
            return
        grace = self.settings.grace_s if grace_s is None else grace_s
        await self._handle.set_serving(False)
        self.stage.drain()
        log.info("%s draining (grace %.1f s)", self.stage.name, grace)
        # Health pollers (load balancers, `voxpipe health`) get a moment to see NOT_SERVING: once the server
        # stops, it answers no new RPC at all, health checks included.
        notice_s = min(DRAIN_NOTICE_S, grace / 4)
        await asyncio.sleep(notice_s)
        await self._handle.server.stop(grace - notice_s)
        await self.stage.stop()
        self._stopped.set()
        log.info("%s stopped", self.stage.name)

    async def serve_until_signal(self, on_ready: Callable[[StageServer], None] | None = None,
                                 parent: int | None = None) -> None:
        """Serve until SIGTERM or SIGINT (or the death of the process ``parent``: :mod:`services.common.parent`),
        then drain and return (the process exits 0).

        Args:
            on_ready: called once the stage is SERVING (e.g. to print the port a test bound with port 0).
            parent: the pid of the process that started this one (``voxpipe up``, a benchmark), if it asked.
        """
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if parent is not None:  # started by `voxpipe up` or a benchmark: drain and exit when it dies
            follow_parent(parent)
        await self.start()
        if on_ready is not None:
            on_ready(self)
        await stop.wait()
        await self.stop()

    async def __aenter__(self) -> StageServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop(grace_s=0)
