"""The PyTorch backend on a TorchScript model (CPU here; CUDA on a GPU machine) and the TensorRT backend."""

from __future__ import annotations

import numpy as np
import pytest

from engines import ModelConfig, ModelRepository, TensorSpec
from tests.onnx_models import write_matmul_model

torch = pytest.importorskip("torch")


def write_torchscript_linear(folder, device="cpu"):
    torch.manual_seed(0)
    module = torch.nn.Linear(4, 3, bias=False)
    folder.mkdir(parents=True, exist_ok=True)
    torch.jit.trace(module, torch.zeros(1, 4)).save(str(folder / "model.pt"))
    ModelConfig(name="linear", backend="torch", artifact="model.pt",
                inputs=(TensorSpec(name="x", dtype="float32", dims=(-1, 4)),),
                outputs=(TensorSpec(name="y", dtype="float32", dims=(-1, 3)),)).save(folder)
    return module.weight.detach().numpy()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
def test_torch_engine_matches_the_module(tmp_path, device):
    weight = write_torchscript_linear(tmp_path / "linear")
    (engine,) = ModelRepository(tmp_path).load("linear", device=device)
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(engine.run({"x": x})["y"], x @ weight.T, rtol=1e-5, atol=1e-5)


def test_tensorrt_engine_matches_onnx(tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed here")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    weight = write_matmul_model(tmp_path / "matmul")
    config = ModelConfig.load(tmp_path / "matmul")
    from dataclasses import replace

    replace(config, backend="tensorrt").save(tmp_path / "matmul")
    (engine,) = ModelRepository(tmp_path).load("matmul")
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(engine.run({"x": x})["y"], x @ weight, rtol=1e-3, atol=1e-3)
