"""The recommender's serving graph in PyTorch: ``query · item`` over the catalogue, a mask, top-k.

The same computation as the ONNX graph the build writes (MatMul, Where, TopK): disallowed items score
``-1e30``, and the top ``k`` of each row come back sorted, with their row indexes.
"""

from __future__ import annotations

import torch
from torch import nn

NEG = -1e30


class ItemScorer(nn.Module):
    """(query [B, D], allowed [B, N] bool) -> (scores [B, k], item_index [B, k])."""

    def __init__(self, n_items: int, dim: int, top_k: int) -> None:
        super().__init__()
        self.top_k = top_k
        self.register_buffer("items_t", torch.zeros(dim, n_items))

    def forward(self, query: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = torch.matmul(query.float(), self.items_t.float())  # scores in float32 at any precision
        masked = torch.where(allowed, scores, torch.full_like(scores, NEG))
        top = torch.topk(masked, self.top_k, dim=-1, largest=True, sorted=True)
        return top.values, top.indices
