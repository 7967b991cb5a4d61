"""CUDA graphs per shape bucket: capture a function once on static buffers, then replay it.

A GPU engine pads each batch up to a bucket (batch size, sequence length), so the same few shapes recur;
for each it captures the function's kernels once (``torch.cuda.CUDAGraph``) and afterwards launches them
all with one replay, which is what makes a small model's step cost its compute instead of ~100 kernel
launches from Python. Graphs of one cache share one memory pool; they are captured largest first so the
smaller ones reuse its memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class _Graph:
    graph: Any  # torch.cuda.CUDAGraph
    outputs: tuple[Any, ...]


class GraphCache:
    """Captured graphs of one engine instance, by bucket key; captured on ``stream``, replayed on the current one."""

    def __init__(self, stream: Any, *, name: str) -> None:
        import torch

        self._torch = torch
        self._stream = stream
        self._name = name
        self._pool = torch.cuda.graph_pool_handle()
        self._graphs: dict[Hashable, _Graph] = {}

    def __contains__(self, key: Hashable) -> bool:
        return key in self._graphs

    @property
    def keys(self) -> list[Hashable]:
        return list(self._graphs)

    def capture(self, key: Hashable, fn: Callable[[], Sequence[Any]], *, warmup_runs: int = 2) -> tuple[Any, ...]:
        """Capture ``fn`` (which reads and writes only static tensors) under ``key``; return its outputs,
        computed: the new graph is replayed once, since a capture records kernels without running them.

        ``fn`` runs ``warmup_runs`` times eagerly first (lazy initialisation must not happen inside a
        capture). Errors inside a capture are raised for this thread only (``thread_local``), so other
        instances keep launching work meanwhile.

        The capture stream first waits for the caller's current stream: ``fn``'s static inputs are usually
        allocated and filled there just before (``torch.zeros`` queues its fill), and a warm-up run that
        started earlier would read whatever the allocator's block held before (once, at start-up under MPS,
        token ids out of range: a device-side assert). The caller's stream then waits for the first replay,
        so the outputs it reads are computed.
        """
        torch = self._torch
        caller = torch.cuda.current_stream(self._stream.device)
        self._stream.wait_stream(caller)
        with torch.cuda.stream(self._stream):
            for _ in range(warmup_runs):
                fn()
        self._stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool, stream=self._stream, capture_error_mode="thread_local"):
            outputs = tuple(fn())
        self._graphs[key] = _Graph(graph, outputs)
        with torch.cuda.stream(self._stream):
            graph.replay()
        caller.wait_stream(self._stream)
        return outputs

    def replay(self, key: Hashable) -> tuple[Any, ...]:
        """Launch the graph captured under ``key`` on the current stream (the instance's, at the batch's
        priority); returns its static outputs, which the next replay of any graph of this cache may overwrite."""
        entry = self._graphs[key]
        entry.graph.replay()
        return entry.outputs
