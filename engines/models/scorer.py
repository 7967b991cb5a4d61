"""The recommender's serving graph in PyTorch: ``query · item`` over the catalogue, a mask, top-k.

The same computation as the ONNX graph the build writes: disallowed items score ``-1e30``, and the top
``k`` of each row come back sorted, with their row indexes, ranked by ``round(score / score_quantum)`` in
float32 with ties broken by the lower row (ONNX TopK's rule; ``torch.topk`` promises no order among equal
values, so the row goes into a float64 key), so near-equal scores order the same on any device.
"""

from __future__ import annotations

import torch
from torch import nn

NEG = -1e30


class ItemScorer(nn.Module):
    """(query [B, D], allowed [B, N] bool) -> (scores [B, k], item_index [B, k])."""

    def __init__(self, n_items: int, dim: int, top_k: int, score_quantum: float) -> None:
        super().__init__()
        self.top_k = top_k
        # A tensor, so the division is a true float32 division (a scalar divisor becomes a multiplication by
        # its reciprocal on CUDA, which rounds differently) and stays on the device (graph capture).
        self.register_buffer("quantum", torch.tensor(score_quantum, dtype=torch.float32), persistent=False)
        self.register_buffer("items_t", torch.zeros(dim, n_items))

    def forward(self, query: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = torch.matmul(query.float(), self.items_t.float())  # scores in float32 at any precision
        masked = torch.where(allowed, scores, torch.full_like(scores, NEG))
        steps = torch.round(masked / self.quantum.float())
        rows = torch.arange(masked.shape[-1], device=masked.device, dtype=torch.float64)
        key = steps.double() - rows / masked.shape[-1]  # whole steps apart; within a step, lower rows first
        index = torch.topk(key, self.top_k, dim=-1, largest=True, sorted=True).indices
        return masked.gather(-1, index), index
