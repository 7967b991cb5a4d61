"""Build-time helpers for the MiniLM sentence encoder (``engines.models.bert``): loading the Hugging Face
weights, and a NumPy reference.

``reference_embed`` is an independent, loop-per-layer NumPy implementation of the same maths, read
straight from the safetensors tensors; the build checks the Torch module and the ONNX graph against it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from engines.models.bert import BertShape, SentenceEncoder

__all__ = ["BertShape", "SentenceEncoder", "load_encoder", "reference_embed"]


def load_encoder(weights: Path, shape: BertShape) -> SentenceEncoder:
    """A ``SentenceEncoder`` in eval mode with the safetensors weights loaded."""
    from safetensors.numpy import load_file  # build-time only; the module itself needs just torch

    model = SentenceEncoder(shape)
    model.load_hf_weights(load_file(str(weights)))
    return model.eval()


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _gelu(x: np.ndarray) -> np.ndarray:
    from math import erf

    return 0.5 * x * (1.0 + np.vectorize(erf)(x / math.sqrt(2.0)))


def reference_embed(tensors: dict[str, np.ndarray], shape: BertShape, ids: list[int]) -> np.ndarray:
    """Plain float64 NumPy forward pass for ONE unpadded sentence; returns its normalised embedding."""
    t = {k: v.astype(np.float64) for k, v in tensors.items() if v.dtype != np.int64}
    n, hd = len(ids), shape.hidden_size // shape.num_heads
    eps = shape.layer_norm_eps
    x = (t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][:n]
         + t["embeddings.token_type_embeddings.weight"][0])
    x = _layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"], eps)
    for i in range(shape.num_layers):
        p = f"encoder.layer.{i}."

        def lin(y: np.ndarray, name: str, p: str = p) -> np.ndarray:
            return y @ t[p + name + ".weight"].T + t[p + name + ".bias"]

        q, k, v = (lin(x, f"attention.self.{s}") for s in ("query", "key", "value"))
        ctx = np.zeros_like(x)
        for h in range(shape.num_heads):
            sl = slice(h * hd, (h + 1) * hd)
            s = q[:, sl] @ k[:, sl].T / math.sqrt(hd)
            s = np.exp(s - s.max(-1, keepdims=True))
            ctx[:, sl] = (s / s.sum(-1, keepdims=True)) @ v[:, sl]
        x = _layer_norm(x + lin(ctx, "attention.output.dense"),
                        t[p + "attention.output.LayerNorm.weight"], t[p + "attention.output.LayerNorm.bias"], eps)
        y = lin(_gelu(lin(x, "intermediate.dense")), "output.dense")
        x = _layer_norm(x + y, t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"], eps)
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)
