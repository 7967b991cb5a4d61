"""Small ONNX graphs built with onnx.helper, for backend and batcher tests and the batcher benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from engines.config import BatchingConfig, ModelConfig, ServingConfig, TensorSpec


def write_matmul_model(folder: Path, *, in_dim: int = 4, out_dim: int = 3, seed: int = 0,
                       batching: BatchingConfig | None = None, name: str = "matmul") -> np.ndarray:
    """Write ``y = x @ W`` (x: [B, in_dim]) with its config into ``folder``; returns W."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((in_dim, out_dim)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", in_dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", out_dim])],
        initializer=[numpy_helper.from_array(weight, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")
    ModelConfig(
        name=name,
        inputs=(TensorSpec(name="x", dtype="float32", dims=(-1, in_dim)),),
        outputs=(TensorSpec(name="y", dtype="float32", dims=(-1, out_dim)),),
        serving={"cpu": ServingConfig(batching=batching or BatchingConfig())},
    ).save(folder)
    return weight
