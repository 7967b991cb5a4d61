"""The built recommender: evaluation recorded, graph = NumPy reference, masks, cache, NLP query retrieval."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from engines.build import BuildContext
from engines.build import recommender as rec_build
from engines.config import ModelConfig
from protos import nlp_pb2, nlp_pb2_grpc, recommender_pb2_grpc
from protos import recommender_pb2 as pb
from services.nlp import create_stage as create_nlp
from services.recommender import create_stage as create_rec
from tests.helpers import running_stage
from tests.stage.nlp_fixtures import nlp_settings
from tests.stage.recommender_fixtures import rec_model_folder_fixture, rec_models_fixture, rec_settings  # noqa: F401
from tests.stage.tts_fixtures import downloads_dir

pytestmark = pytest.mark.models


def test_evaluation_beats_popularity_by_the_target(rec_model_folder):
    ev = ModelConfig.load(rec_model_folder).metadata["evaluation"]
    assert ev["users"] == 943 and ev["k"] == 10
    assert ev["hr@10"] >= rec_build.MIN_HR_RATIO * ev["popularity_hr@10"]
    assert ev["ndcg@10"] > ev["popularity_ndcg@10"]


def test_graph_matches_numpy_and_respects_the_mask(rec_model_folder):
    meta = ModelConfig.load(rec_model_folder).metadata
    n, d = meta["n_items"], meta["query_dim"]
    session = ort.InferenceSession(str(rec_model_folder / "model.onnx"), providers=["CPUExecutionProvider"])
    import onnx
    from onnx import numpy_helper

    items_t = next(numpy_helper.to_array(t) for t in onnx.load(str(rec_model_folder / "model.onnx")).graph.initializer
                   if t.name == "items_t")
    rng = np.random.default_rng(0)
    query = rng.normal(size=(3, d)).astype(np.float32)
    allowed = rng.random((3, n)) < 0.3
    scores, rows = session.run(None, {"query": query, "allowed": allowed})
    ref = np.where(allowed, query @ items_t, -np.inf)
    for b in range(3):
        want = np.argsort(-ref[b])[:rec_build.TOP_K]
        assert np.array_equal(rows[b], want)
        assert np.allclose(scores[b], ref[b, want], rtol=1e-4, atol=1e-4)
        assert allowed[b, rows[b]].all()


def test_build_is_cached(rec_models):
    path = rec_models / rec_build.MODEL_NAME / "model.onnx"
    before = path.stat().st_mtime_ns
    rec_build.build(BuildContext(models_dir=rec_models, downloads_dir=downloads_dir()))
    assert path.stat().st_mtime_ns == before


def test_item_text_format():
    assert rec_build.item_text("Godfather, The", 1972, ["Action", "Crime", "Drama"]) == \
        "The Godfather (1972) — Action, Crime, Drama"


async def test_nlp_query_embedding_retrieves_matching_movies_cold_start(rec_models):
    """The real NLP embedding of a spoken query, fed to the recommender, finds horror films."""
    async with running_stage(create_nlp(nlp_settings(rec_models))) as (_, nlp_channel), \
            running_stage(create_rec(rec_settings(rec_models))) as (_, rec_channel):
        nlp = nlp_pb2_grpc.UnderstanderStub(nlp_channel)
        rec = recommender_pb2_grpc.RecommenderStub(rec_channel)
        understood = await nlp.Understand(nlp_pb2.UnderstandRequest(text="recommend a scary movie"), timeout=10)
        reply = await rec.Recommend(pb.RecommendRequest(k=10, query_embedding=understood.embedding), timeout=10)
    assert reply.strategy == "query"
    horror = sum("Horror" in i.genres for i in reply.items)
    assert horror >= 5, [(i.title, list(i.genres)) for i in reply.items]
