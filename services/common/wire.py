"""Requests that arrive but cannot be decoded (a string field that is not UTF-8, truncated bytes).

gRPC decodes each request message before a handler sees it; left alone, a message that fails to decode ends
the RPC with INTERNAL, and on a multiplexed ``<Method>Calls`` stream it ends the stream, failing every call
open on it. :func:`tolerant` wraps a method's deserializer so that such a message arrives as a
:class:`BadMessage` (the servicer edge answers INVALID_ARGUMENT), and on a multiplexed stream as a
:class:`BadCall` naming its call id, so only that call fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from protos import common_pb2
from services.common.errors import InvalidArgumentError


@dataclass(frozen=True)
class BadMessage:
    """A request message that could not be decoded."""

    problem: str

    def error(self) -> InvalidArgumentError:
        hint = " (string fields must be valid UTF-8)" if "UTF-8" in self.problem else ""
        return InvalidArgumentError(f"the request message could not be decoded: {self.problem}{hint}")


@dataclass(frozen=True)
class BadCall(BadMessage):
    """A multiplexed call message that could not be decoded, but whose call id could."""

    call_id: int = 0


def tolerant(deserializer: Callable[[bytes], Any] | None, *, calls: bool) -> Callable[[bytes], Any] | None:
    """``deserializer``, returning a :class:`BadMessage` (or, for ``calls``, a :class:`BadCall`) instead of
    raising on bytes that do not decode."""
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as e:
            problem = str(e)
            if calls:
                try:
                    return BadCall(problem, common_pb2.CallIdOnly.FromString(data).header.call_id)
                except DecodeError:
                    pass
            return BadMessage(problem)

    return parse
