"""A client-side fix for grpcio's asyncio streams: a write that races the server ending the RPC must not hide
the server's status.

When a server ends a client-streaming or bidirectional RPC (an OUT_OF_RANGE for too much audio, a
RESOURCE_EXHAUSTED for a full queue) while the client is still writing, the write fails in Core and
``grpc.aio``'s ``_StreamRequestMixin._write`` sets the call's status to ``INTERNAL: Internal error from Core``
unconditionally, overwriting the status the server had sent (grpc/grpc#36066; a fix is proposed in
grpc/grpc#43486). The orchestrator writes audio to ASR and clients write audio to the orchestrator all the time,
so a flood turned every such status into INTERNAL.

:func:`apply` replaces that one method with the same code, except that a failed write first waits briefly for
the status Core is delivering and keeps it; only if none comes does it fall back to INTERNAL (the hang that
the unconditional status was added for in grpc/grpc#34148). It is applied once, on import of
``services.common`` (every stage and the orchestrator) and by the Python client, and only for the grpcio
versions it was checked against (``pyproject.toml`` pins one); on any other version it leaves grpc alone.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

log = logging.getLogger(__name__)

CHECKED_VERSIONS = ("1.85.1",)
STATUS_GRACE_S = 1.0  # how long a failed write waits for the peer's status before it reports INTERNAL
_applied = False


def apply() -> bool:
    """Install the fix (idempotent). Returns whether it is installed."""
    global _applied
    if _applied:
        return True
    if grpc.__version__ not in CHECKED_VERSIONS:
        log.debug("grpcio %s: stream write fix not applied (checked against %s)", grpc.__version__, CHECKED_VERSIONS)
        return False
    from grpc._cython import cygrpc
    from grpc.aio import _call

    async def _write(self, request) -> None:
        if self.done():
            raise asyncio.InvalidStateError(_call._RPC_ALREADY_FINISHED_DETAILS)
        if self._done_writing_flag:
            raise asyncio.InvalidStateError(_call._RPC_HALF_CLOSED_DETAILS)
        if not self._metadata_sent.is_set():
            await self._metadata_sent.wait()
            if self.done():
                await self._raise_for_status()
        serialized = _call._common.serialize(request, self._request_serializer)
        try:
            await self._cython_call.send_serialized_message(serialized)
        except cygrpc.InternalError as err:
            if not self._cython_call.done():
                try:  # the peer's status is usually on its way: keep it rather than inventing INTERNAL
                    await asyncio.wait_for(self._cython_call.status(), STATUS_GRACE_S)
                except TimeoutError:
                    self._cython_call.set_internal_error(str(err))
            await self._raise_for_status()
        except asyncio.CancelledError:
            if not self.cancelled():
                self.cancel()
            raise

    _call._StreamRequestMixin._write = _write
    _applied = True
    return True
