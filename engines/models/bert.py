"""A small PyTorch BERT sentence encoder (all-MiniLM-L6-v2 layout): mean pooling and L2 norm inside.

``L2-normalise(mean over real tokens(BERT last hidden state))``, so the output is the sentence embedding
itself. Single-sentence input only: ``token_type_ids`` are always 0, so the token-type embedding row 0 is
folded in as a constant instead of being an input. The build exports it to ONNX for the CPU; the PyTorch
backend serves it on a GPU (padding rows and columns are masked, so padded batches give the same vectors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True, kw_only=True)
class BertShape:
    """The hyper-parameters read from the Hugging Face ``config.json``."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_positions: int
    layer_norm_eps: float

    @classmethod
    def from_hf_config(cls, raw: dict) -> BertShape:
        """Read a BERT ``config.json`` dict (only absolute positions and GELU are supported)."""
        if raw.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type {raw['position_embedding_type']!r} is not supported")
        if raw.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"hidden_act {raw['hidden_act']!r} is not supported")
        return cls(
            vocab_size=int(raw["vocab_size"]),
            hidden_size=int(raw["hidden_size"]),
            num_layers=int(raw["num_hidden_layers"]),
            num_heads=int(raw["num_attention_heads"]),
            intermediate_size=int(raw["intermediate_size"]),
            max_positions=int(raw["max_position_embeddings"]),
            layer_norm_eps=float(raw["layer_norm_eps"]),
        )


class _Layer(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        h = shape.hidden_size
        self.num_heads = shape.num_heads
        self.head_dim = h // shape.num_heads
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)
        self.attn_out = nn.Linear(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=shape.layer_norm_eps)
        self.inter = nn.Linear(h, shape.intermediate_size)
        self.out = nn.Linear(shape.intermediate_size, h)
        self.out_norm = nn.LayerNorm(h, eps=shape.layer_norm_eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + bias
        ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, h)
        x = self.attn_norm(x + self.attn_out(ctx))
        # Exact (erf) GELU, as BERT's "gelu".
        return self.out_norm(x + self.out(nn.functional.gelu(self.inter(x))))


class SentenceEncoder(nn.Module):
    """BERT encoder + masked mean pooling + L2 normalisation: ``(ids, mask) -> [B, hidden]``."""

    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.shape = shape
        h = shape.hidden_size
        self.word = nn.Embedding(shape.vocab_size, h)
        self.position = nn.Embedding(shape.max_positions, h)
        self.type0 = nn.Parameter(torch.zeros(h))
        self.emb_norm = nn.LayerNorm(h, eps=shape.layer_norm_eps)
        self.layers = nn.ModuleList(_Layer(shape) for _ in range(shape.num_layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        positions = torch.arange(t, device=input_ids.device).unsqueeze(0)
        x = self.emb_norm(self.word(input_ids) + self.position(positions) + self.type0)
        mask = attention_mask.to(x.dtype)
        # Padded keys get a large negative bias so they take no attention weight.
        bias = ((1.0 - mask) * -1e4)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, bias)
        m = mask.unsqueeze(-1)
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return pooled / pooled.norm(dim=-1, keepdim=True).clamp(min=1e-12)

    def load_hf_weights(self, tensors: dict[str, np.ndarray]) -> None:
        """Copy Hugging Face ``BertModel`` tensors (``embeddings.*``, ``encoder.layer.N.*``) in, strictly."""
        own: dict[str, torch.Tensor] = {
            "word.weight": tensors["embeddings.word_embeddings.weight"],
            "position.weight": tensors["embeddings.position_embeddings.weight"],
            "type0": tensors["embeddings.token_type_embeddings.weight"][0],
            "emb_norm.weight": tensors["embeddings.LayerNorm.weight"],
            "emb_norm.bias": tensors["embeddings.LayerNorm.bias"],
        }
        names = {
            "query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
            "attn_out": "attention.output.dense", "attn_norm": "attention.output.LayerNorm",
            "inter": "intermediate.dense", "out": "output.dense", "out_norm": "output.LayerNorm",
        }
        for i in range(self.shape.num_layers):
            for ours, theirs in names.items():
                for p in ("weight", "bias"):
                    own[f"layers.{i}.{ours}.{p}"] = tensors[f"encoder.layer.{i}.{theirs}.{p}"]
        state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in own.items()}
        self.load_state_dict(state, strict=True)  # raises on any missing or unexpected tensor
