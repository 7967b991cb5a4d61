"""The ONNX Runtime backend and the model repository, on a MatMul graph built by the test."""

from __future__ import annotations

import asyncio
from functools import partial

import numpy as np
import pytest

from engines import (
    DynamicBatcher,
    InferenceError,
    ModelConfig,
    ModelConfigError,
    ModelNotFoundError,
    ModelRepository,
)
from tests.onnx_models import write_matmul_model


@pytest.fixture
def repo(tmp_path):
    weight = write_matmul_model(tmp_path / "matmul")
    return ModelRepository(tmp_path), weight


def test_unbatched_and_batched_results_match_numpy(repo):
    repository, weight = repo
    (engine,) = repository.load("matmul")
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    batched = engine.run({"x": x})["y"]
    np.testing.assert_allclose(batched, x @ weight, rtol=1e-5, atol=1e-6)
    for i in range(5):
        single = engine.run({"x": x[i : i + 1]})["y"]
        np.testing.assert_allclose(single[0], batched[i], rtol=1e-5, atol=1e-6)


def test_inputs_are_checked_by_name_dtype_and_shape(repo):
    (engine,) = repo[0].load("matmul")
    with pytest.raises(InferenceError, match="missing inputs"):
        engine.run({})
    with pytest.raises(InferenceError, match="dtype float64"):
        engine.run({"x": np.zeros((1, 4))})
    with pytest.raises(InferenceError, match="shape"):
        engine.run({"x": np.zeros((1, 5), dtype=np.float32)})


def test_repository_lists_loads_instances_and_reports_missing(repo, tmp_path):
    repository, _ = repo
    assert repository.names() == ["matmul"]
    engines = ModelRepository(tmp_path, overrides={"matmul": {"instances": 3}}).load("matmul")
    assert len(engines) == 3 and len({id(e._session) for e in engines}) == 1, "instances share one session"
    with pytest.raises(ModelNotFoundError, match="voxpipe build"):
        repository.load("nope")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(ModelConfigError, match="not valid JSON"):
        repository.config("broken")


def test_config_round_trip_and_unknown_keys(repo, tmp_path):
    config = repo[0].config("matmul")
    assert ModelConfig.from_dict(__import__("json").loads(config.to_json())) == config
    with pytest.raises(ModelConfigError, match="unknown keys"):
        ModelConfig.from_dict({"name": "x", "max_batch": 3})


def test_serving_settings_resolve_from_config_and_overrides(tmp_path):
    write_matmul_model(tmp_path / "whisper-like-model")
    # Environment overrides arrive as strings, with '_' for '-' in the model name; they are typed by the field.
    repo = ModelRepository(tmp_path, overrides={"whisper_like_model": {
        "instances": "2", "max_batch_size": "16", "max_queue_delay_us": 0, "intra_op_threads": 1}})
    serving = repo.resolve("whisper-like-model").serving
    assert (serving.instances, serving.batching.max_batch_size, serving.batching.max_queue_delay_us) == (2, 16, 0)
    with pytest.raises(ModelConfigError, match=r"\[models.whisper-like-model\]: unknown keys \['batch'\]"):
        ModelRepository(tmp_path, overrides={"whisper-like-model": {"batch": 2}}).resolve("whisper-like-model")
    with pytest.raises(ModelConfigError, match="instances='two' is not a valid int"):
        ModelRepository(tmp_path, overrides={"whisper-like-model": {"instances": "two"}}).resolve("whisper-like-model")
    with pytest.raises(ModelConfigError, match="no serving entry for 'cuda'"):
        ModelRepository(tmp_path, target="cuda").resolve("whisper-like-model")


def test_a_model_built_by_an_older_voxpipe_asks_for_a_rebuild(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text('{"name": "old", "backend": "onnx", "artifact": "model.onnx"}')
    with pytest.raises(ModelConfigError, match="built by an older voxpipe.*voxpipe build"):
        ModelRepository(tmp_path).resolve("old")


async def test_engine_behind_the_batcher(repo):
    repository, weight = repo
    engines = ModelRepository(repository.root, overrides={"matmul": {"instances": 2}}).load("matmul")

    def run(engine, rows: list[np.ndarray]) -> list[np.ndarray]:
        return list(engine.run({"x": np.stack(rows)})["y"])

    batcher = DynamicBatcher("matmul", [partial(run, e) for e in engines], engines[0].serving.batching)
    await batcher.start()
    rows = np.random.default_rng(2).standard_normal((16, 4)).astype(np.float32)
    outs = await asyncio.gather(*(batcher.submit(r) for r in rows))
    np.testing.assert_allclose(np.stack(outs), rows @ weight, rtol=1e-5, atol=1e-6)
    await batcher.close()
