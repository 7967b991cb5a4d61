"""Our PyTorch models, free of serving policy: the build exports them to ONNX, the PyTorch backend serves them.

A model folder served by the PyTorch backend names its module in ``config.json`` metadata
(``"torch_module": {"kind": ..., "args": {...}}``) and holds its weights as ``model.safetensors``;
:func:`build_module` turns that into an ``nn.Module`` with random weights for the loader to fill.
Weights are kept as state dicts rather than TorchScript or ``torch.export`` programs: they load on any
PyTorch version (the GPU machine's differs from the build machine's), and the module code stays the
readable source of truth.
"""

from __future__ import annotations

from typing import Any

from engines.errors import ModelConfigError

KINDS = ("whisper_encoder", "whisper_decoder", "whisper_scorer", "sentence_encoder", "item_scorer", "vits_encoder", "vits_decoder")


def build_module(spec: dict[str, Any]):
    """An ``nn.Module`` of the kind and arguments in ``spec`` (weights not loaded)."""
    kind, args = spec.get("kind"), spec.get("args", {})
    if kind in ("whisper_encoder", "whisper_decoder", "whisper_scorer"):
        from engines.models.whisper import WhisperDecoder, WhisperEncoder, WhisperScorer
        from engines.models.whisper_spec import GreedyRule, WhisperDims

        dims = WhisperDims(**args["dims"])
        if kind == "whisper_encoder":
            return WhisperEncoder(dims)
        decoder = WhisperScorer if kind == "whisper_scorer" else WhisperDecoder
        return decoder(dims, GreedyRule.from_dict(args["rule"]))
    if kind == "sentence_encoder":
        from engines.models.bert import BertShape, SentenceEncoder

        return SentenceEncoder(BertShape(**args["shape"]))
    if kind == "item_scorer":
        from engines.models.scorer import ItemScorer

        return ItemScorer(**args)
    if kind in ("vits_encoder", "vits_decoder"):
        from engines.models.vits import VitsDecoder, VitsEncoder, VitsHyper

        hyper = VitsHyper.from_dict(args["hyper"])
        return VitsEncoder(hyper) if kind == "vits_encoder" else VitsDecoder(hyper)
    raise ModelConfigError(f"unknown torch_module kind {kind!r}; known: {', '.join(KINDS)}")
