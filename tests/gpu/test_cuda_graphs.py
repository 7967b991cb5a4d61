"""CUDA graph capture against the streams it crosses (skips cleanly without CUDA)."""

from __future__ import annotations

import pytest

from engines.device import cuda_problem

pytestmark = pytest.mark.skipif(cuda_problem() is not None, reason=f"no usable CUDA GPU: {cuda_problem()}")


def test_a_capture_reads_static_inputs_only_after_the_callers_stream_filled_them():
    """The warm-up runs on the capture stream must not start before the zero-fill the caller queued: here the
    caller's stream is held up by a sleep kernel, and the input's block last held 7s."""
    import torch

    from engines.cuda_graphs import GraphCache

    seen = torch.zeros((), device="cuda")
    junk = torch.full((4096,), 7.0, device="cuda")
    torch.cuda.synchronize()
    del junk  # its block goes back to the allocator, for the next tensor of this size on this stream
    torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU time queued on the caller's stream
    static = torch.zeros(4096, device="cuda")  # the fill waits behind the sleep

    def fn():
        seen.add_(static.sum())
        return (seen,)

    cache = GraphCache(torch.cuda.Stream(), name="race")
    (out,) = cache.capture("key", fn)
    assert out.item() == 0.0, f"the warm-up read the input before its fill: {out.item()}"


def test_the_callers_stream_reads_the_outputs_of_the_first_replay():
    """``capture`` returns outputs the caller reads on its own stream: the graph's first replay, held up here
    by a sleep kernel, must be complete by then (two warm-up runs count 2, the replay 3)."""
    import torch

    from engines.cuda_graphs import GraphCache

    count = torch.zeros((), device="cuda")

    def fn():
        torch.cuda._sleep(200_000_000)
        count.add_(1)
        return (count,)

    cache = GraphCache(torch.cuda.Stream(), name="outputs")
    (out,) = cache.capture("key", fn)
    copied = out.clone()  # on the caller's stream, with no synchronisation of its own
    assert copied.item() == 3.0, f"read before the first replay finished: {copied.item()}"
