"""Whisper from a CTranslate2 ``WhisperSpec`` into our PyTorch modules (build time only), and their ONNX export.

CTranslate2 stores the self-attention Q/K/V as one fused ``linear_0`` ([3D, D]) and the cross-attention
K/V as one fused ``linear_1`` ([2D, D]); the key bias is stored as zeros. The output projection is tied to
the token embedding (an alias in the file). The weights are fp16 in the file: the PyTorch state dicts keep
them fp16 (lossless), the ONNX graphs are exported in fp32 for the CPU.

Three ONNX graphs come out, each with a dynamic batch axis 0 and a dynamic window (the encoder's frames F
and the cross-attention length S = F/2: 3000 and 1500 for Whisper's 30 s, fewer for a shorter window):

* encoder: ``mel`` f32 [B, 80, F] -> ``cross_key`` [B, L, H, D/H, S] and ``cross_value``
  [B, L, H, S, D/H]: every decoder layer's cross-attention K/V, computed once per utterance and already
  split into heads (keys transposed), so a decoder step reads them as they are;
* scorer (:meth:`WhisperDecoder.score`, the decoder's weights): candidate transcripts [B, C, T] of one
  utterance per row scored in one pass, ``logprob`` [B, C, T - s] out (phrase boosting's forced decode);
* decoder step (:meth:`WhisperDecoder.forward`): one token per row with a self-attention cache of dynamic
  length P and the cross K/V as one input per layer (``cross_key_0``, ``cross_value_0``, ...); it returns
  the greedy choice (``next_token``, ``token``, ``prob``, ``no_speech_prob``), the step's ``log_norm`` [B]
  and ``hidden`` [B, D] (any token's log-probability on the host) and only the new token's K/V
  ([B, L, 1, D]); the caller keeps the cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engines.build.ct2 import Ct2Model
from engines.errors import BuildError
from engines.models.whisper import WhisperDecoder, WhisperEncoder, WhisperScorer
from engines.models.whisper_spec import GreedyRule, WhisperDims, cross_input_names

DECODER_OUTPUTS = ("next_token", "token", "prob", "no_speech_prob", "log_norm", "hidden", "new_key", "new_value")
SCORER_INPUTS = ("tokens", "score_at")


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
    if model.aliases.get("decoder/projection/weight", "decoder/embeddings/weight") != "decoder/embeddings/weight":
        raise BuildError("decoder/projection/weight is not tied to decoder/embeddings/weight")
    conv1 = model.get("encoder/conv1/weight")
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
        n_vocab=model.get("decoder/embeddings/weight").shape[0],
        n_text_layer=_count_layers(model, "decoder"),
    )


class _Weights:
    """CTranslate2 variables as a state dict under construction."""

    def __init__(self, model: Ct2Model) -> None:
        self.model = model
        self.state: dict[str, torch.Tensor] = {}

    def get(self, name: str) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.model.get(name), dtype=np.float16).copy())

    def put(self, key: str, name: str) -> None:
        self.state[key] = self.get(name)

    def norm(self, key: str, prefix: str) -> None:
        self.put(f"{key}.weight", f"{prefix}/gamma")
        self.put(f"{key}.bias", f"{prefix}/beta")

    def linear(self, key: str, prefix: str) -> None:
        self.put(f"{key}.weight", f"{prefix}/weight")
        self.put(f"{key}.bias", f"{prefix}/bias")

    def split(self, keys: list[str], prefix: str) -> None:
        """A fused projection ([parts*D, D]) into ``len(keys)`` Linear layers."""
        w, b = self.get(f"{prefix}/weight"), self.get(f"{prefix}/bias")
        d = w.shape[0] // len(keys)
        for i, key in enumerate(keys):
            self.state[f"{key}.weight"] = w[i * d:(i + 1) * d].clone()
            self.state[f"{key}.bias"] = b[i * d:(i + 1) * d].clone()

    def mlp(self, key: str, prefix: str) -> None:
        self.norm(f"{key}.ln", f"{prefix}/layer_norm")
        self.linear(f"{key}.fc1", f"{prefix}/linear_0")
        self.linear(f"{key}.fc2", f"{prefix}/linear_1")


def encoder_state(model: Ct2Model, dims: WhisperDims) -> dict[str, torch.Tensor]:
    """The :class:`WhisperEncoder` state dict (fp16) from the CTranslate2 variables."""
    w = _Weights(model)
    for conv in ("conv1", "conv2"):
        w.linear(conv, f"encoder/{conv}")
    w.put("pos", "encoder/position_encodings/encodings")
    for i in range(dims.n_audio_layer):
        p, k = f"encoder/layer_{i}", f"layers.{i}"
        w.norm(f"{k}.ln", f"{p}/self_attention/layer_norm")
        w.split([f"{k}.q", f"{k}.k", f"{k}.v"], f"{p}/self_attention/linear_0")
        w.linear(f"{k}.out", f"{p}/self_attention/linear_1")
        w.mlp(f"{k}.mlp", f"{p}/ffn")
    w.norm("ln_post", "encoder/layer_norm")
    for i in range(dims.n_text_layer):
        w.split([f"cross_k.{i}", f"cross_v.{i}"], f"decoder/layer_{i}/attention/linear_1")
    return w.state


def decoder_state(model: Ct2Model, dims: WhisperDims) -> dict[str, torch.Tensor]:
    """The :class:`WhisperDecoder` state dict (fp16) from the CTranslate2 variables."""
    w = _Weights(model)
    w.put("embedding", "decoder/embeddings/weight")
    w.put("pos", "decoder/position_encodings/encodings")
    for i in range(dims.n_text_layer):
        p, k = f"decoder/layer_{i}", f"layers.{i}"
        w.norm(f"{k}.ln_self", f"{p}/self_attention/layer_norm")
        w.split([f"{k}.q", f"{k}.k", f"{k}.v"], f"{p}/self_attention/linear_0")
        w.linear(f"{k}.out", f"{p}/self_attention/linear_1")
        w.norm(f"{k}.ln_cross", f"{p}/attention/layer_norm")
        w.linear(f"{k}.cross_q", f"{p}/attention/linear_0")
        w.linear(f"{k}.cross_out", f"{p}/attention/linear_2")
        w.mlp(f"{k}.mlp", f"{p}/ffn")
    w.norm("ln", "decoder/layer_norm")
    return w.state


def load_modules(model: Ct2Model, rule: GreedyRule) -> tuple[WhisperDims, WhisperEncoder, WhisperDecoder]:
    """The encoder and decoder in fp32 eval mode with the checkpoint's weights (strictly loaded)."""
    dims = dims_from_ct2(model)
    encoder, decoder = WhisperEncoder(dims), WhisperDecoder(dims, rule)
    encoder.load_state_dict({k: v.float() for k, v in encoder_state(model, dims).items()}, strict=True)
    decoder.load_state_dict({k: v.float() for k, v in decoder_state(model, dims).items()}, strict=True)
    return dims, encoder.eval(), decoder.eval()


def cross_axes(names: list[str]) -> dict[str, dict[int, str]]:
    """Dynamic axes of the per-layer cross K/V inputs: the batch, and the window (keys [B, H, D/H, S],
    values [B, H, S, D/H])."""
    return {n: {0: "batch", 3 if n.startswith("cross_key") else 2: "window"} for n in names}


def export_onnx(encoder: WhisperEncoder, decoder: WhisperDecoder, out_dir: Path) -> tuple[Path, Path]:
    """Export ``encoder.onnx`` and ``decoder.onnx`` (fp32) into ``out_dir``; return the two paths."""
    dims = encoder.dims
    out_dir.mkdir(parents=True, exist_ok=True)
    enc_path, dec_path = out_dir / "encoder.onnx", out_dir / "decoder.onnx"
    mel = torch.zeros(1, dims.n_mels, 2 * dims.n_audio_ctx)
    with torch.no_grad():
        torch.onnx.export(
            encoder, (mel,), str(enc_path), dynamo=False, opset_version=17,
            input_names=["mel"], output_names=["cross_key", "cross_value"],
            dynamic_axes={"mel": {0: "batch", 2: "frames"}, "cross_key": {0: "batch", 4: "window"},
                          "cross_value": {0: "batch", 3: "window"}},
        )
        b, p, d, n_layers = 2, 3, dims.n_state, dims.n_text_layer
        h, dh, s = dims.n_head, dims.head_dim, dims.n_audio_ctx
        cross_names = cross_input_names(n_layers)
        cross = [torch.zeros(b, h, dh, s) if n.startswith("cross_key") else torch.zeros(b, h, s, dh)
                 for n in cross_names]
        args = (torch.zeros(b, 1, dtype=torch.int64), torch.tensor([3, 1], dtype=torch.int64),
                torch.zeros(b, n_layers, p, d), torch.zeros(b, n_layers, p, d), *cross)
        torch.onnx.export(
            decoder, args, str(dec_path), dynamo=False, opset_version=17,
            input_names=["tokens", "positions", "past_key", "past_value", *cross_names],
            output_names=list(DECODER_OUTPUTS),
            dynamic_axes={"tokens": {0: "batch"}, "positions": {0: "batch"},
                          "past_key": {0: "batch", 2: "past"}, "past_value": {0: "batch", 2: "past"},
                          **cross_axes(cross_names),
                          **{n: {0: "batch"} for n in DECODER_OUTPUTS}},
        )
    return enc_path, dec_path


def export_scorer_onnx(decoder: WhisperDecoder, path: Path) -> Path:
    """Export the decoder's weights as :class:`WhisperScorer` (fp32) to ``path``."""
    dims = decoder.dims
    scorer = WhisperScorer(dims, decoder.rule)
    scorer.load_state_dict(decoder.state_dict(), strict=True)
    cross_names = cross_input_names(dims.n_text_layer)
    b, c, t, h, dh, s = 1, 3, 6, dims.n_head, dims.head_dim, dims.n_audio_ctx
    cross = [torch.zeros(b, h, dh, s) if n.startswith("cross_key") else torch.zeros(b, h, s, dh) for n in cross_names]
    args = (torch.zeros(b, c, t, dtype=torch.int64), torch.tensor([[3, 4, 9]], dtype=torch.int64), *cross)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            scorer.eval(), args, str(path), dynamo=False, opset_version=17,
            input_names=[*SCORER_INPUTS, *cross_names], output_names=["logprob"],
            dynamic_axes={"tokens": {0: "batch", 1: "candidates", 2: "length"}, "score_at": {0: "batch", 1: "scored"},
                          **cross_axes(cross_names),
                          "logprob": {0: "batch", 1: "scored"}},
        )
    return path
