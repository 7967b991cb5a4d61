"""The PyTorch backend (CPU here; CUDA, graphs and FP16 on a GPU machine), our PyTorch models against their
reference forms, and the TensorRT backend (skipped where TensorRT does not import)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from engines import ModelConfig, ModelRepository, ServingConfig, TensorSpec
from engines.config import BatchingConfig
from engines.errors import DeviceUnavailableError
from tests.onnx_models import write_matmul_model

torch = pytest.importorskip("torch")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def write_scorer(folder, *, n_items=40, dim=8, top_k=5, seed=0):
    """An item_scorer model folder (PyTorch weights only); returns the item matrix [N, D]."""
    from engines.build import save_weights

    items = np.random.default_rng(seed).standard_normal((n_items, dim)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    save_weights({"items_t": torch.from_numpy(items.T.copy())}, folder / "model.safetensors")
    cuda = ServingConfig(device="cuda", backend="torch", precision="fp32", batch_buckets=(1, 2, 4, 8),
                         batching=BatchingConfig(max_batch_size=8), cuda_graphs=True)
    ModelConfig(name="scorer", artifacts={"torch": "model.safetensors"},
                inputs=(TensorSpec(name="query", dtype="float32", dims=(-1, dim)),
                        TensorSpec(name="allowed", dtype="bool", dims=(-1, n_items))),
                outputs=(TensorSpec(name="scores", dtype="float32", dims=(-1, top_k)),
                         TensorSpec(name="item_index", dtype="int64", dims=(-1, top_k))),
                serving={"cpu": replace(cuda, device="cpu", cuda_graphs=False), "cuda": cuda},
                metadata={"torch_module": {"kind": "item_scorer",
                                           "args": {"n_items": n_items, "dim": dim, "top_k": top_k,
                                                    "score_quantum": 1e-5}}}).save(folder)
    return items


def _expected(items, query, allowed, k):
    scores = np.where(allowed, query @ items.T, -1e30)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


@pytest.mark.parametrize("target", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_torch_engine_pads_to_buckets_and_cuts_back(tmp_path, target):
    items = write_scorer(tmp_path / "scorer")
    (engine,) = ModelRepository(tmp_path, target=target).load("scorer")
    engine.warmup()  # on CUDA: one graph per batch bucket
    rng = np.random.default_rng(1)
    for rows in (1, 3, 8, 11):  # 3 pads to 4; 11 is past the largest bucket and runs eagerly
        query = rng.standard_normal((rows, 8)).astype(np.float32)
        allowed = rng.random((rows, 40)) > 0.3
        out = engine.run({"query": query, "allowed": allowed})
        want_scores, want_rows = _expected(items, query, allowed, 5)
        assert out["scores"].shape == (rows, 5)
        np.testing.assert_allclose(out["scores"], want_scores, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(out["item_index"], want_rows)


def test_instances_share_one_module(tmp_path):
    write_scorer(tmp_path / "scorer")
    repo = ModelRepository(tmp_path, overrides={"scorer": {"instances": 3}})
    engines = repo.load("scorer")
    assert len(engines) == 3 and len({id(e.module) for e in engines}) == 1


def test_cuda_target_without_a_gpu_fails_naming_the_model(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    write_scorer(tmp_path / "scorer")
    with pytest.raises(DeviceUnavailableError, match="model 'scorer': device 'cuda' requested but"):
        ModelRepository(tmp_path, target="cuda").resolve("scorer")
    # "auto" falls back to the CPU, saying nothing is wrong.
    assert ModelRepository(tmp_path, target="auto").resolve("scorer").serving.device == "cpu"


def _tiny_whisper(seed=0):
    from engines.models.whisper import WhisperDecoder
    from engines.models.whisper_spec import GreedyRule, WhisperDims

    dims = WhisperDims(n_mels=8, n_audio_ctx=6, n_state=16, n_head=2, n_audio_layer=1, n_text_ctx=12,
                       n_vocab=20, n_text_layer=2)
    rule = GreedyRule(sot=1, no_timestamps=2, eot=3, no_speech=4, suppress_ids=(5,), suppress_ids_begin=(3,),
                      max_new_tokens=6)
    torch.manual_seed(seed)
    decoder = WhisperDecoder(dims, rule).eval()
    with torch.no_grad():
        for p in decoder.parameters():
            p.normal_(0, 0.5)
        decoder.embedding.normal_(0, 1)
        decoder.pos.normal_(0, 0.1)
    return dims, rule, decoder


def test_whisper_static_step_matches_the_exported_form():
    """The GPU form (in-place slot caches) and the ONNX form (caller-kept caches) pick the same tokens."""
    dims, rule, decoder = _tiny_whisper()
    rows, d, h = 3, dims.n_state, dims.n_head
    cross_k = [torch.randn(rows, h, d // h, dims.n_audio_ctx) for _ in range(dims.n_text_layer)]
    cross_v = [torch.randn(rows, h, dims.n_audio_ctx, d // h) for _ in range(dims.n_text_layer)]
    self_k = [torch.zeros(rows, rule.capacity, d) for _ in range(dims.n_text_layer)]
    self_v = [torch.zeros(rows, rule.capacity, d) for _ in range(dims.n_text_layer)]
    cross = [t for pair in zip(cross_k, cross_v, strict=True) for t in pair]
    tokens = torch.full((rows,), rule.sot)
    positions = torch.tensor([0, 0, 0])
    past_k = torch.zeros(rows, dims.n_text_layer, 0, d)
    past_v = torch.zeros_like(past_k)
    with torch.inference_mode():
        for _ in range(5):
            static = decoder.step(tokens, positions, self_k, self_v, [k.transpose(-1, -2) for k in cross_k], cross_v)
            exported = decoder(tokens.unsqueeze(1), positions, past_k, past_v, *cross)
            for a, b in zip(static, exported[:6], strict=True):  # the picks, log_norm and the hidden state
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
            past_k = torch.cat([past_k, exported[6]], dim=2)
            past_v = torch.cat([past_v, exported[7]], dim=2)
            tokens, positions = exported[0], positions + 1


def test_tensorrt_engine_matches_onnx(tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed here")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    weight = write_matmul_model(tmp_path / "matmul")
    config = ModelConfig.load(tmp_path / "matmul")
    trt = ServingConfig(device="cuda", backend="tensorrt", precision="fp32")
    replace(config, serving={**config.serving, "cuda": trt}).save(tmp_path / "matmul")
    (engine,) = ModelRepository(tmp_path, target="cuda").load("matmul")
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(engine.run({"x": x})["y"], x @ weight, rtol=1e-3, atol=1e-3)
