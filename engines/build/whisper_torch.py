"""A small PyTorch Whisper (build time only), loaded from a CTranslate2 ``WhisperSpec`` and exported to ONNX.

Two graphs come out of it, both with a dynamic batch axis 0:

* encoder: ``mel`` f32 [B, 80, 3000] -> ``hidden`` [B, 1500, D], ``cross_key`` [B, L, H, D/H, 1500] and
  ``cross_value`` [B, L, H, 1500, D/H]: every decoder layer's cross-attention K/V, computed once per
  utterance and already split into heads (keys transposed), so a decoder step reads them as they are;
* decoder step: one new token per row with a self-attention KV cache of dynamic length P, and the cross
  K/V as one input per layer (``cross_key_0``, ``cross_value_0``, ...). Taking a layer out of one stacked
  tensor, and splitting it into heads, copied all ~18 MB of cross K/V on every step (~4.7 of 16 ms).
  Rows may sit at different positions (streams batched together): ``positions`` [B] says how many
  cache entries of each row are real, the rest is padding and masked out. It returns the logits of
  the new token and only the new token's K/V ([B, L, 1, D]); the caller keeps the cache.

CTranslate2 stores the self-attention Q/K/V as one fused ``linear_0`` ([3D, D]) and the cross-attention
K/V as one fused ``linear_1`` ([2D, D]); the key bias is stored as zeros. The output projection is
tied to the token embedding (an alias in the file).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from engines.build.ct2 import Ct2Model
from engines.errors import BuildError
from services.asr.decoding import cross_input_names

_NEG = -1e9  # additive mask: exp underflows to exactly 0 in float32


@dataclass(frozen=True, kw_only=True)
class WhisperDims:
    """Shape of a Whisper model, read from the CTranslate2 variables."""

    n_mels: int
    n_audio_ctx: int
    n_state: int
    n_head: int
    n_audio_layer: int
    n_text_ctx: int
    n_vocab: int
    n_text_layer: int

    @property
    def head_dim(self) -> int:
        return self.n_state // self.n_head


def _t(model: Ct2Model, name: str) -> torch.Tensor:
    # fp16 in the file -> fp32 for export and CPU inference.
    return torch.from_numpy(np.asarray(model.get(name), dtype=np.float32).copy())


def _count_layers(model: Ct2Model, prefix: str) -> int:
    n = 0
    while f"{prefix}/layer_{n}/ffn/linear_0/weight" in model.variables:
        n += 1
    return n


def dims_from_ct2(model: Ct2Model) -> WhisperDims:
    """Infer the dimensions; refuse specs we do not map."""
    if model.spec_name != "WhisperSpec":
        raise BuildError(f"expected a WhisperSpec model, got {model.spec_name!r}")
    if model.scalar("decoder/activation") != 3:  # CTranslate2 Activation.GELU (exact erf)
        raise BuildError(f"unexpected decoder activation id {model.scalar('decoder/activation')}")
    for flag, want in (("decoder/pre_norm", 1), ("decoder/scale_embeddings", 0), ("decoder/alibi", 0)):
        if model.scalar(flag) != want:
            raise BuildError(f"unsupported Whisper variant: {flag}={model.scalar(flag)}, expected {want}")
    conv1 = model.get("encoder/conv1/weight")
    emb = model.get("decoder/embeddings/weight")
    n_head = int(model.scalar("encoder/num_heads"))
    if int(model.scalar("decoder/num_heads")) != n_head:
        raise BuildError("encoder and decoder head counts differ")
    return WhisperDims(
        n_mels=conv1.shape[1],
        n_audio_ctx=model.get("encoder/position_encodings/encodings").shape[0],
        n_state=conv1.shape[0],
        n_head=n_head,
        n_audio_layer=_count_layers(model, "encoder"),
        n_text_ctx=model.get("decoder/position_encodings/encodings").shape[0],
        n_vocab=emb.shape[0],
        n_text_layer=_count_layers(model, "decoder"),
    )


class _LayerNorm(nn.LayerNorm):
    def load(self, model: Ct2Model, prefix: str) -> _LayerNorm:
        self.weight.data.copy_(_t(model, f"{prefix}/gamma"))
        self.bias.data.copy_(_t(model, f"{prefix}/beta"))
        return self


def _linear(model: Ct2Model, prefix: str) -> nn.Linear:
    w = _t(model, f"{prefix}/weight")
    lin = nn.Linear(w.shape[1], w.shape[0])
    lin.weight.data.copy_(w)
    lin.bias.data.copy_(_t(model, f"{prefix}/bias"))
    return lin


def _split_linear(model: Ct2Model, prefix: str, parts: int) -> list[nn.Linear]:
    """Split a fused projection ([parts*D, D]) into ``parts`` Linear layers."""
    w = _t(model, f"{prefix}/weight")
    b = _t(model, f"{prefix}/bias")
    d = w.shape[0] // parts
    out = []
    for i in range(parts):
        lin = nn.Linear(w.shape[1], d)
        lin.weight.data.copy_(w[i * d:(i + 1) * d])
        lin.bias.data.copy_(b[i * d:(i + 1) * d])
        out.append(lin)
    return out


def _heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    b, t, d = x.shape
    return x.reshape(b, t, n_head, d // n_head).transpose(1, 2)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_head: int,
            bias: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention on [B, T, D] tensors; ``bias`` is additive [B, 1, T, S] or None."""
    qh, kh, vh = _heads(q, n_head), _heads(k, n_head), _heads(v, n_head)
    scores = torch.matmul(qh, kh.transpose(-1, -2)) * (1.0 / math.sqrt(qh.shape[-1]))
    if bias is not None:
        scores = scores + bias
    out = torch.matmul(torch.softmax(scores, dim=-1), vh)
    b, h, t, dh = out.shape
    return out.transpose(1, 2).reshape(b, t, h * dh)


def _attend_heads(q: torch.Tensor, keys_t: torch.Tensor, values: torch.Tensor, n_head: int) -> torch.Tensor:
    """Attention of [B, T, D] queries over keys [B, H, D/H, S] (transposed) and values [B, H, S, D/H]."""
    qh = _heads(q, n_head)
    scores = torch.matmul(qh, keys_t) * (1.0 / math.sqrt(qh.shape[-1]))
    out = torch.matmul(torch.softmax(scores, dim=-1), values)
    b, h, t, dh = out.shape
    return out.transpose(1, 2).reshape(b, t, h * dh)


class _Mlp(nn.Module):
    def __init__(self, model: Ct2Model, prefix: str, n_state: int) -> None:
        super().__init__()
        self.ln = _LayerNorm(n_state).load(model, f"{prefix}/layer_norm")
        self.fc1 = _linear(model, f"{prefix}/linear_0")
        self.fc2 = _linear(model, f"{prefix}/linear_1")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.ln(x))))


class _EncoderLayer(nn.Module):
    def __init__(self, model: Ct2Model, prefix: str, dims: WhisperDims) -> None:
        super().__init__()
        self.n_head = dims.n_head
        self.ln = _LayerNorm(dims.n_state).load(model, f"{prefix}/self_attention/layer_norm")
        self.q, self.k, self.v = _split_linear(model, f"{prefix}/self_attention/linear_0", 3)
        self.out = _linear(model, f"{prefix}/self_attention/linear_1")
        self.mlp = _Mlp(model, f"{prefix}/ffn", dims.n_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln(x)
        x = x + self.out(_attend(self.q(h), self.k(h), self.v(h), self.n_head))
        return x + self.mlp(x)


class WhisperEncoder(nn.Module):
    """mel [B, n_mels, 2*n_audio_ctx] -> hidden [B, n_audio_ctx, D] plus every decoder layer's cross K/V."""

    def __init__(self, model: Ct2Model, dims: WhisperDims) -> None:
        super().__init__()
        self.n_head = dims.n_head
        self.conv1 = nn.Conv1d(dims.n_mels, dims.n_state, 3, padding=1)
        self.conv2 = nn.Conv1d(dims.n_state, dims.n_state, 3, stride=2, padding=1)
        for conv, name in ((self.conv1, "conv1"), (self.conv2, "conv2")):
            conv.weight.data.copy_(_t(model, f"encoder/{name}/weight"))
            conv.bias.data.copy_(_t(model, f"encoder/{name}/bias"))
        self.register_buffer("pos", _t(model, "encoder/position_encodings/encodings"))
        self.layers = nn.ModuleList(_EncoderLayer(model, f"encoder/layer_{i}", dims)
                                    for i in range(dims.n_audio_layer))
        self.ln_post = _LayerNorm(dims.n_state).load(model, "encoder/layer_norm")
        # Cross-attention K/V projections of the decoder, applied once to the encoder output.
        self.cross_kv = nn.ModuleList(
            nn.ModuleList(_split_linear(model, f"decoder/layer_{i}/attention/linear_1", 2))
            for i in range(dims.n_text_layer))

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.pos
        for layer in self.layers:
            x = layer(x)
        hidden = self.ln_post(x)
        b, s, d = hidden.shape
        keys = torch.stack([kv[0](hidden) for kv in self.cross_kv], dim=1)  # [B, L, S, D]
        values = torch.stack([kv[1](hidden) for kv in self.cross_kv], dim=1)
        keys = keys.reshape(b, -1, s, self.n_head, d // self.n_head).permute(0, 1, 3, 4, 2)  # [B, L, H, D/H, S]
        values = values.reshape(b, -1, s, self.n_head, d // self.n_head).permute(0, 1, 3, 2, 4)  # [B, L, H, S, D/H]
        return hidden, keys.contiguous(), values.contiguous()


class _DecoderLayer(nn.Module):
    def __init__(self, model: Ct2Model, prefix: str, dims: WhisperDims) -> None:
        super().__init__()
        self.n_head = dims.n_head
        self.ln_self = _LayerNorm(dims.n_state).load(model, f"{prefix}/self_attention/layer_norm")
        self.q, self.k, self.v = _split_linear(model, f"{prefix}/self_attention/linear_0", 3)
        self.out = _linear(model, f"{prefix}/self_attention/linear_1")
        self.ln_cross = _LayerNorm(dims.n_state).load(model, f"{prefix}/attention/layer_norm")
        self.cross_q = _linear(model, f"{prefix}/attention/linear_0")
        self.cross_out = _linear(model, f"{prefix}/attention/linear_2")
        self.mlp = _Mlp(model, f"{prefix}/ffn", dims.n_state)

    def forward(self, x: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor, self_bias: torch.Tensor,
                cross_k: torch.Tensor, cross_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.ln_self(x)
        new_k, new_v = self.k(h), self.v(h)
        keys = torch.cat([past_k, new_k], dim=1)
        values = torch.cat([past_v, new_v], dim=1)
        x = x + self.out(_attend(self.q(h), keys, values, self.n_head, self_bias))
        x = x + self.cross_out(_attend_heads(self.cross_q(self.ln_cross(x)), cross_k, cross_v, self.n_head))
        return x + self.mlp(x), new_k, new_v


class WhisperDecoderStep(nn.Module):
    """One token per row with a padded self-attention cache; see the module docstring."""

    def __init__(self, model: Ct2Model, dims: WhisperDims) -> None:
        super().__init__()
        self.register_buffer("embedding", _t(model, "decoder/embeddings/weight"))
        # The output projection is tied to the embedding (a CTranslate2 alias); check instead of assuming.
        if model.aliases.get("decoder/projection/weight", "decoder/embeddings/weight") != "decoder/embeddings/weight":
            raise BuildError("decoder/projection/weight is not tied to decoder/embeddings/weight")
        self.register_buffer("pos", _t(model, "decoder/position_encodings/encodings"))
        self.layers = nn.ModuleList(_DecoderLayer(model, f"decoder/layer_{i}", dims)
                                    for i in range(dims.n_text_layer))
        self.ln = _LayerNorm(dims.n_state).load(model, "decoder/layer_norm")

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, past_key: torch.Tensor,
                past_value: torch.Tensor, *cross: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens [B,1] int64, positions [B] int64, past_* [B,L,P,D]; ``cross`` is key, value per layer:
        [B,H,D/H,S] and [B,H,S,D/H]."""
        x = self.embedding[tokens] + self.pos[positions].unsqueeze(1)
        past_len = past_key.shape[2]
        # Cache slots at or beyond a row's position are padding; the new token (last column) is valid.
        slots = torch.arange(past_len, device=tokens.device).unsqueeze(0)
        pad = (slots >= positions.unsqueeze(1)).to(x.dtype) * _NEG
        new = positions.unsqueeze(1).to(x.dtype) * 0.0  # [B, 1] zeros, also when the cache is empty
        bias = torch.cat([pad, new], dim=1)[:, None, None, :]
        new_keys, new_values = [], []
        for i, layer in enumerate(self.layers):
            x, k, v = layer(x, past_key[:, i], past_value[:, i], bias, cross[2 * i], cross[2 * i + 1])
            new_keys.append(k)
            new_values.append(v)
        logits = torch.matmul(self.ln(x)[:, -1], self.embedding.t())
        return logits, torch.stack(new_keys, dim=1), torch.stack(new_values, dim=1)


def export_onnx(model: Ct2Model, out_dir: Path) -> tuple[WhisperDims, Path, Path]:
    """Export ``encoder.onnx`` and ``decoder.onnx`` into ``out_dir``; return dims and the two paths."""
    dims = dims_from_ct2(model)
    encoder = WhisperEncoder(model, dims).eval()
    decoder = WhisperDecoderStep(model, dims).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    enc_path, dec_path = out_dir / "encoder.onnx", out_dir / "decoder.onnx"
    mel = torch.zeros(1, dims.n_mels, 2 * dims.n_audio_ctx)
    with torch.no_grad():
        torch.onnx.export(
            encoder, (mel,), str(enc_path), dynamo=False, opset_version=17,
            input_names=["mel"], output_names=["hidden", "cross_key", "cross_value"],
            dynamic_axes={"mel": {0: "batch"}, "hidden": {0: "batch"},
                          "cross_key": {0: "batch"}, "cross_value": {0: "batch"}},
        )
        b, p, d, L = 2, 3, dims.n_state, dims.n_text_layer
        h, dh, s = dims.n_head, dims.head_dim, dims.n_audio_ctx
        cross_names = cross_input_names(L)
        cross = [torch.zeros(b, h, dh, s) if n.startswith("cross_key") else torch.zeros(b, h, s, dh)
                 for n in cross_names]
        args = (torch.zeros(b, 1, dtype=torch.int64), torch.tensor([3, 1], dtype=torch.int64),
                torch.zeros(b, L, p, d), torch.zeros(b, L, p, d), *cross)
        torch.onnx.export(
            decoder, args, str(dec_path), dynamo=False, opset_version=17,
            input_names=["tokens", "positions", "past_key", "past_value", *cross_names],
            output_names=["logits", "new_key", "new_value"],
            dynamic_axes={"tokens": {0: "batch"}, "positions": {0: "batch"},
                          "past_key": {0: "batch", 2: "past"}, "past_value": {0: "batch", 2: "past"},
                          **{n: {0: "batch"} for n in cross_names},
                          "logits": {0: "batch"}, "new_key": {0: "batch"}, "new_value": {0: "batch"}},
        )
    return dims, enc_path, dec_path
