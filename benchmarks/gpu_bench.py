"""Every stage on the GPU, stage by stage, through the engine layer, the batchers and gRPC (issue 14).

Runs on the GPU machine after ``gpu_bundle.py install`` (models, data and wheels under ``--root``):

    PYTHONPATH=/tmp/vx/site:. python3 benchmarks/gpu_bench.py --root /tmp/vx --out $OUT [--sections a,b]

Sections (each isolated: a failure is recorded and the next one runs):

* ``parity`` — every stage against the CPU FP32 reference made on the development machine (gpu_parity);
* ``asr`` — encoder ms per utterance at batch 1/8/64 and the decoder step at 1 and 64 active streams, FP16
  with CUDA graphs vs FP16 eager vs FP32 graphs; log-mel and VAD cost on the CPU; endpoint -> final over a
  real-time stream through the ASR server, and the decode alone;
* ``tts`` — first audio of a two-sentence reply through gRPC, and the aggregate real-time factor of 64
  concurrent replies; decoder graphs vs eager;
* ``nlp`` — Understand server time at batch 1 through gRPC; MiniLM throughput at concurrency 256 through
  the batcher, 1/2/4 instances, FP16 graphs vs eager vs FP32; the whole Understand pipeline at 256;
* ``recommender`` — Recommend server time at batch 1, GPU (PyTorch) vs CPU (ONNX Runtime) on this host;
* ``instances`` — 1/2/4 instances (CUDA streams) of the Whisper encoder and the TTS decoder under load;
* ``cpu`` — the same models' best-batch throughput on this host's CPUs with ONNX Runtime (GPU vs CPU).

Results go to ``--out/gpu_bench.json`` and a summary table is printed last. ``gpu_stack.py`` runs the whole
stack (``voxpipe up --device cuda``) and talks to it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.tts_replies import REPLIES, TWO_SENTENCES  # noqa: E402
from engines.batcher import DynamicBatcher  # noqa: E402
from engines.generation import GenerationScheduler  # noqa: E402
from engines.repository import ModelRepository, create_engines  # noqa: E402
from services.common.settings import StageSettings  # noqa: E402

SECTIONS = ("parity", "asr", "tts", "nlp", "recommender", "instances", "cpu")
QUICK = False  # --quick: a few iterations of everything, to check the script itself


def n(full: int, quick: int = 2) -> int:
    return quick if QUICK else full


def p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def repo(args, **overrides) -> ModelRepository:
    return ModelRepository(args.root / "models", target=args.target, overrides=overrides)


def settings(args, name: str, models: dict | None = None, **options) -> StageSettings:
    return StageSettings(name=name, models_dir=args.root / "models", device=args.target, options=options,
                         models=models or {})


def _free() -> None:
    """Drop what the last configuration held on the GPU (graph pools, caches) before the next one."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def timed(fn: Callable[[], object], runs: int, warmup: int = 3) -> list[float]:
    """Milliseconds of ``fn`` (which synchronises: engines return host data or sync their stream)."""
    for _ in range(n(warmup, 1)):
        fn()
    out = []
    for _ in range(n(runs)):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


async def load(submit: Callable, items: list, concurrency: int, seconds: float) -> dict:
    """Closed-loop load: ``concurrency`` clients submitting ``items`` round robin for ``seconds``."""
    done, latencies = 0, []
    stop = time.perf_counter() + (0.3 if QUICK else seconds)

    async def client(offset: int) -> None:
        nonlocal done
        i = offset
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            await submit(items[i % len(items)])
            latencies.append((time.perf_counter() - t0) * 1e3)
            done += 1
            i += concurrency

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(concurrency)))
    wall = time.perf_counter() - t0
    return {"per_s": done / wall, "p50_ms": p(latencies, 50), "p99_ms": p(latencies, 99), "n": done}


# -- parity ------------------------------------------------------------------------------------------

def section_parity(args) -> dict:
    from benchmarks import gpu_parity

    reference = json.loads((args.root / "data" / "cpu_reference.json").read_text())
    got = gpu_parity.collect(args.root / "models", args.target, args.root / "data",
                             query_embeddings=reference["nlp"]["embeddings"])
    return gpu_parity.compare(reference, got)


# -- ASR ---------------------------------------------------------------------------------------------

def _clips(args, n: int | None = None) -> list[tuple[str, np.ndarray]]:
    from benchmarks.gpu_parity import _audio

    refs = json.loads((args.root / "data" / "asr-testset" / "references.json").read_text())[:n]
    return [(r["id"], _audio(args.root / "data" / "asr-testset" / r["file"])) for r in refs]


def section_asr(args) -> dict:
    from services.asr.features import log_mel
    from services.asr.generation import DECODER_MODEL, ENCODER_MODEL
    from services.asr.vad import VadJob, VadState, frames_of, vad_batch_fn

    clips = _clips(args, n(16))
    mels = [log_mel(a) for _, a in clips]
    out: dict = {"log_mel_cpu_ms_p50": p(timed(lambda: log_mel(clips[0][1]), 50), 50),
                 "clip_seconds": len(clips[0][1]) / 16_000}
    (vad,) = create_engines(repo(args).resolve("silero-vad"))[:1]
    vad_fn = vad_batch_fn(vad)
    frames = frames_of(clips[0][1][:16_000])
    out["vad_cpu_ms_per_second_of_audio"] = p(timed(lambda: vad_fn([VadJob(frames, VadState.initial())]), 20), 50)
    variants = {"fp16 graphs": {}, "fp16 eager": {"cuda_graphs": False}, "fp32 graphs": {"precision": "fp32"}}
    for label, extra in variants.items():
        out[label] = _asr_variant(repo(args, **{ENCODER_MODEL: extra, DECODER_MODEL: extra}), mels)
    out["streaming"] = asyncio.run(_asr_streaming(args, clips))
    return out


def _asr_variant(r: ModelRepository, mels: list[np.ndarray]) -> dict:
    """Encoder ms per utterance at batch 1/8/64 and decoder step ms at 1 and 64 active slots."""
    from services.asr.generation import DECODER_MODEL, ENCODER_MODEL, create_generators, encoder_batch_fn

    (encoder,) = create_engines(r.resolve(ENCODER_MODEL))[:1]
    encoder.warmup()
    encode = encoder_batch_fn(encoder)
    row = {}
    for batch in ((1, 2) if QUICK else (1, 8, 64)):
        items = [mels[i % len(mels)] for i in range(batch)]
        row[f"encoder_ms_per_utt_b{batch}"] = p(timed(lambda items=items: encode(items), 10), 50) / batch
    (generator,) = create_generators(r.resolve(DECODER_MODEL))[:1]
    generator.warmup()
    encoded = encode(mels[:1])[0]
    for active in ((1, 4) if QUICK else (1, 64)):
        slots = list(range(active))
        steps = []
        generator.prefill([(slot, encoded) for slot in slots])
        for _ in range(n(300, 25)):
            t0 = time.perf_counter()
            finished = generator.step(slots)
            steps.append((time.perf_counter() - t0) * 1e3)
            for slot in finished:  # as the scheduler does under load: a finished slot takes the next utterance
                generator.release(slot)
            if finished:
                generator.prefill([(slot, encoded) for slot in finished])
        for slot in slots:
            generator.release(slot)
        row[f"decoder_step_ms_b{active}"] = p(steps[n(20, 5):], 50)
    return row


async def _asr_streaming(args, clips) -> dict:
    """Endpoint -> final over a real-time stream (server-measured), and the decode alone (in process)."""
    from protos import asr_pb2, asr_pb2_grpc, common_pb2
    from services.asr.stage import AsrStage
    from tests.helpers import running_stage

    stage = AsrStage(settings(args, "asr"))
    decode_only = []
    async with running_stage(stage) as (_, channel):
        stub = asr_pb2_grpc.RecognizerStub(channel)
        for _, audio in clips:
            t0 = time.perf_counter()
            await stage.recognizer.transcribe(audio, deadline_s=None)
            decode_only.append((time.perf_counter() - t0) * 1e3)
        pcm = [(np.clip(np.concatenate([a, np.zeros(12_800, np.float32)]), -1, 1) * 32767).astype("<i2").tobytes()
               for _, a in clips]

        async def requests(data: bytes, boosting: bool):
            yield asr_pb2.StreamingRecognizeRequest(config=asr_pb2.RecognitionConfig(
                encoding=common_pb2.LINEAR16, sample_rate_hz=16_000, interim_results=False,
                disable_default_phrases=not boosting))
            chunk = 3_200  # 100 ms
            start = time.perf_counter()
            for i in range(0, len(data), chunk):
                yield asr_pb2.StreamingRecognizeRequest(audio=data[i:i + chunk])
                await asyncio.sleep(max(0.0, start + (i + chunk) / 32_000 - time.perf_counter()))

        # Boosting (the catalogue's titles) on, then off, then on again: the first pass shows what the first
        # finals of a fresh server wait for, the last one a warm server.
        passes = {}
        for label, boosting in (("boosting on, first pass", True), ("boosting off", False),
                                ("boosting on", True)):
            latencies, outcomes = [], _boost_outcomes()
            for data in pcm:
                async for response in stub.StreamingRecognize(requests(data, boosting)):
                    if response.result.is_final and response.result.text:
                        latencies.append(response.result.latency_ms)
            passes[label] = {"endpoint_to_final_ms_p50": p(latencies, 50),
                             "endpoint_to_final_ms_p95": p(latencies, 95), "finals": len(latencies),
                             "endpoint_to_final_ms": [round(x, 2) for x in latencies],
                             "boost_outcomes": {k: v - outcomes[k] for k, v in _boost_outcomes().items()}}
    return {**passes.pop("boosting on"), "clips": len(clips), "decode_only_ms_p50": p(decode_only, 50), **passes}


def _boost_outcomes() -> dict[str, float]:
    """The ASR stage's phrase-boosting outcome counters so far (``voxpipe_asr_phrase_boosts_total``)."""
    from services.asr.boosting import BOOSTS

    return {o: BOOSTS.labels(outcome=o)._value.get() for o in ("applied", "kept", "no_candidates", "failed")}


# -- TTS ---------------------------------------------------------------------------------------------

def section_tts(args) -> dict:
    decoder, encoder = "tts-en_US-joe-medium-decoder", "tts-en_US-joe-medium-encoder"
    return {"default": asyncio.run(_tts(args, {})),
            "decoder eager": asyncio.run(_tts(args, {decoder: {"cuda_graphs": False}}, rtf=False)),
            "decoder fp32": asyncio.run(_tts(args, {decoder: {"precision": "fp32"}}, rtf=False)),
            "encoder eager": asyncio.run(_tts(args, {encoder: {"cuda_graphs": False, "batch_buckets": "",
                                                               "length_buckets": ""}}, rtf=False))}


async def _tts(args, models: dict, rtf: bool = True) -> dict:
    import grpc

    from protos import tts_pb2, tts_pb2_grpc
    from services.common.sentences import split_sentences
    from services.tts.batching import SentenceItem
    from services.tts.stage import TtsStage
    from services.tts.synthesis import _prepare
    from tests.helpers import running_stage

    stage = TtsStage(settings(args, "tts", models))
    rate = 22_050
    out = {}
    async with running_stage(stage) as (_, channel):
        stub = tts_pb2_grpc.SynthesizerStub(channel)
        runtime = next(iter(stage.synthesizer.voices.values()))
        first = split_sentences(TWO_SENTENCES, max_sentence_chars=400)[0].text
        parts: dict[str, list[float]] = {"phonemize": [], "encoder": [], "first_window": []}
        for i in range(n(33, 3)):
            t0 = time.perf_counter()
            ids, _ = await asyncio.to_thread(_prepare, runtime.voice, first)
            t1 = time.perf_counter()
            z = await runtime.encoder.submit(SentenceItem(ids, (0.667, 1.0, 0.8)))
            t2 = time.perf_counter()
            await runtime.decoder.submit(z[:, :stage.config.first_audio_frames + runtime.context_frames])
            t3 = time.perf_counter()
            if i >= n(3, 1):
                for key, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                    parts[key].append(value * 1e3)
        out["first_audio_parts_ms_p50"] = {k: p(v, 50) for k, v in parts.items()}
        firsts = []
        for i in range(n(33, 4)):
            t0 = time.perf_counter()
            call = stub.Synthesize(tts_pb2.SynthesizeRequest(text=TWO_SENTENCES))
            await call.read()
            if i >= n(3, 1):
                firsts.append((time.perf_counter() - t0) * 1e3)
            while await call.read() is not grpc.aio.EOF:
                pass
        out["first_audio_ms_p50"], out["first_audio_ms_p95"] = p(firsts, 50), p(firsts, 95)
        if rtf:
            samples = 0

            async def reply(text: str) -> None:
                nonlocal samples
                async for r in stub.Synthesize(tts_pb2.SynthesizeRequest(text=text)):
                    samples += len(r.audio) // 2

            conc = n(64)
            await asyncio.gather(*(reply(REPLIES[i % len(REPLIES)]) for i in range(conc)))  # warm the buckets
            samples = 0
            t0 = time.perf_counter()
            await asyncio.gather(*(reply(REPLIES[i % len(REPLIES)]) for i in range(conc * n(4, 1))))
            wall = time.perf_counter() - t0
            out["concurrent_replies"] = conc
            out["aggregate_rtf"] = wall / (samples / rate)
            out["audio_s"] = samples / rate
    return out


# -- NLP ---------------------------------------------------------------------------------------------

def section_nlp(args) -> dict:
    return asyncio.run(_nlp(args))


async def _nlp(args) -> dict:
    from protos import nlp_pb2, nlp_pb2_grpc
    from services.common.context import SERVER_TIME_HEADER
    from services.nlp.encoder import embed_ids, load_tokenizer, tokenize
    from services.nlp.stage import NlpStage
    from tests.helpers import running_stage

    texts = [json.loads(line)["text"] for line in (args.root / "data" / "nlp_heldout.jsonl").read_text().splitlines()]
    out: dict = {}
    stage = NlpStage(settings(args, "nlp"))
    async with running_stage(stage) as (_, channel):
        stub = nlp_pb2_grpc.UnderstanderStub(channel)
        server, client = [], []
        for i in range(n(330, 12)):
            t0 = time.perf_counter()
            call = stub.Understand(nlp_pb2.UnderstandRequest(text=texts[i % len(texts)], session_id="bench"))
            await call
            if i >= n(30, 2):
                client.append((time.perf_counter() - t0) * 1e3)
                meta = dict(await call.trailing_metadata())
                server.append(float(meta[SERVER_TIME_HEADER]))
        out["understand_batch1"] = {"server_ms_p50": p(server, 50), "client_ms_p50": p(client, 50)}
        out["understand_c256"] = await load(stage.batcher.submit, texts, 256, 3.0)
    model = repo(args).resolve("minilm")
    tokenizer = load_tokenizer(model.folder, 256)
    ids = tokenize(tokenizer, texts)
    variants = [("fp16 graphs", 1, {}), ("fp16 graphs", 2, {}), ("fp16 graphs", 4, {}),
                ("fp16 eager", 1, {"cuda_graphs": False}), ("fp32 graphs", 1, {"precision": "fp32"})]
    minilm = {}
    for label, instances, extra in variants:
        engines = create_engines(repo(args, minilm={"instances": instances, **extra}).resolve("minilm"))
        for e in engines:
            e.warmup()
        batcher = DynamicBatcher("minilm", [partial(embed_ids, e) for e in engines], engines[0].serving.batching)
        await batcher.start()
        await load(batcher.submit, ids, 256, 0.5)
        minilm[f"{label}, {instances} instance(s)"] = await load(batcher.submit, ids, 256, 3.0)
        minilm[f"{label}, {instances} instance(s), batch 1"] = await load(batcher.submit, ids, 1, 1.0)
        await batcher.close()
        del engines, batcher
        _free()
    out["minilm_through_batcher"] = minilm
    return out


# -- recommender --------------------------------------------------------------------------------------

def section_recommender(args) -> dict:
    return {"gpu (torch)": asyncio.run(_recommender(args, {})),
            "cpu (onnx) on this host": asyncio.run(_recommender(args, {"recommender": {
                "device": "cpu", "backend": "onnx", "precision": "fp32", "cuda_graphs": False,
                "batch_buckets": ""}}))}


async def _recommender(args, models: dict) -> dict:
    from protos import recommender_pb2, recommender_pb2_grpc
    from services.common.context import SERVER_TIME_HEADER
    from services.recommender import ranking
    from services.recommender.stage import RecommenderStage
    from tests.helpers import running_stage

    stage = RecommenderStage(settings(args, "recommender", models))
    rng = np.random.default_rng(0)
    queries = [q / np.linalg.norm(q) for q in rng.standard_normal((64, 384)).astype(np.float32)]
    server = []
    async with running_stage(stage) as (_, channel):
        stub = recommender_pb2_grpc.RecommenderStub(channel)
        for i in range(n(330, 12)):
            call = stub.Recommend(recommender_pb2.RecommendRequest(query_embedding=queries[i % 64].tolist(), k=10))
            await call
            if i >= n(30, 2):
                server.append(float(dict(await call.trailing_metadata())[SERVER_TIME_HEADER]))
        items = [(ranking.text_query(stage.blocks, stage.blend, q), stage.catalog.servable) for q in queries]
        throughput = await load(stage.batcher.submit, items, 64, 2.0)
    return {"server_ms_p50": p(server, 50), "server_ms_p99": p(server, 99), "scoring_c64": throughput}


# -- instances ---------------------------------------------------------------------------------------

def section_instances(args) -> dict:
    return asyncio.run(_instances(args))


async def _instances(args) -> dict:
    """Throughput of 1, 2 and 4 instances (each its own CUDA stream) of each model under load."""
    from benchmarks.tts_replies import REPLIES
    from services.asr.features import log_mel
    from services.asr.generation import DECODER_MODEL, ENCODER_MODEL, create_generators, encoder_batch_fn
    from services.recommender import ranking
    from services.tts.batching import SentenceItem, make_decoder_fn, make_encoder_fn, voice_encoder
    from services.tts.voice import load_voice

    mels = [log_mel(a) for _, a in _clips(args, 8)]
    rng = np.random.default_rng(0)
    windows = [rng.standard_normal((192, 256)).astype(np.float32) for _ in range(8)]
    voice = load_voice(args.root / "models" / "tts-en_US-joe-medium")
    sentences = [SentenceItem(voice.id_map.to_ids(voice.phonemizer.phonemize(t)).ids, (0.667, 1.0, 0.8))
                 for t in REPLIES[:16]]
    rec = repo(args).resolve("recommender")
    blocks = ranking.Blocks.from_metadata(rec.config.metadata)
    queries = [(ranking.text_query(blocks, dict(rec.config.metadata["blend"]), q / np.linalg.norm(q)),
                np.ones(int(rec.config.metadata["n_items"]), bool))
               for q in rng.standard_normal((16, 384)).astype(np.float32)]
    conc = n(128, 4)
    out: dict = {}
    # (model, what runs an engine (its warmup captures the graphs the batch function replays), batch fn, items)
    plain = ((ENCODER_MODEL, lambda e: e, encoder_batch_fn, mels),
             ("recommender", lambda e: e, lambda e: partial(ranking.score_batch, e), queries),
             ("tts-en_US-joe-medium-encoder", voice_encoder, lambda r: make_encoder_fn(r, 256), sentences),
             ("tts-en_US-joe-medium-decoder", lambda e: e, lambda e: make_decoder_fn(e, 256), windows))
    for name, runner_of, make_fn, items in plain:
        for instances in (1, 2, 4):
            label = f"{name}, {instances} instance(s), c={conc}"
            try:
                engines = create_engines(repo(args, **{name: {"instances": instances}}).resolve(name))
                runners = [runner_of(e) for e in engines]
                for r in runners:
                    r.warmup()
                fns = [make_fn(r) for r in runners]
                batcher = DynamicBatcher(name, fns, engines[0].serving.batching)
                await batcher.start()
                await load(batcher.submit, items, conc, 0.5)
                out[label] = await load(batcher.submit, items, conc, 3.0)
                await batcher.close()
                del engines, runners, batcher, fns
            except Exception as e:  # one configuration's failure must not cost the others
                out[label] = {"error": f"{type(e).__name__}: {e}"}
            _free()
    # The decoder's generation engine: whole transcripts (prefill + steps to the end) per second.
    (encoder,) = create_engines(repo(args).resolve(ENCODER_MODEL))[:1]
    encoded = encoder_batch_fn(encoder)(mels)
    for instances in (1, 2, 4):
        label = f"{DECODER_MODEL}, {instances} instance(s), c={conc} transcripts"
        try:
            generators = create_generators(repo(args, **{DECODER_MODEL: {"instances": instances}}).resolve(DECODER_MODEL))
            for g in generators:
                g.warmup()
            scheduler = GenerationScheduler(DECODER_MODEL, generators, generators[0].engine.serving.batching)
            await scheduler.start()
            await load(scheduler.generate, encoded, conc, 0.5)
            out[label] = await load(scheduler.generate, encoded, conc, 3.0)
            await scheduler.close()
            del generators, scheduler
        except Exception as e:
            out[label] = {"error": f"{type(e).__name__}: {e}"}
        _free()
    return out


# -- the same models on this host's CPUs --------------------------------------------------------------

def section_cpu(args) -> dict:
    """ONNX Runtime on every core of this host, at its best batch, for the models whose ONNX graphs are
    here or exported here from the carried weights (MiniLM, Whisper); items per second."""
    import tempfile

    import onnxruntime as ort
    import torch
    from safetensors.torch import load_file

    from engines.build.whisper_torch import export_onnx
    from engines.models import build_module

    def session(path: Path) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = os.cpu_count() or 1
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

    def module(name: str):
        config = json.loads((args.root / "models" / name / "config.json").read_text())
        m = build_module(config["metadata"]["torch_module"]).eval()
        m.load_state_dict({k: v.float() for k, v in load_file(str(args.root / "models" / name / "model.safetensors")).items()})
        return m

    out: dict = {"cores": os.cpu_count()}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        enc_path, _ = export_onnx(module("whisper-tiny-en-encoder"), module("whisper-tiny-en-decoder"), tmp)
        enc = session(enc_path)
        mel = rng.standard_normal((8, 80, 3000)).astype(np.float32)
        out["whisper encoder, batch 8, utterances/s"] = 8e3 / p(timed(lambda: enc.run(None, {"mel": mel}), 3, 1), 50)
        bert = module("minilm")
        ids = torch.ones(64, 24, dtype=torch.int64)
        with torch.no_grad():
            torch.onnx.export(bert, (ids, ids), str(tmp / "minilm.onnx"), dynamo=False, opset_version=17,
                              input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                              dynamic_axes={"input_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 1: "t"}})
        mini = session(tmp / "minilm.onnx")
        feed = {"input_ids": np.ones((64, 24), np.int64), "attention_mask": np.ones((64, 24), np.int64)}
        out["minilm, batch 64 x 24 tokens, sentences/s"] = 64e3 / p(timed(lambda: mini.run(None, feed), 10), 50)
    dec = session(args.root / "models" / "tts-en_US-joe-medium-decoder" / "model.onnx")
    z = rng.standard_normal((8, 192, 256)).astype(np.float32)
    ms = p(timed(lambda: dec.run(None, {"z": z}), 3, 1), 50)
    out["tts decoder, batch 8 x 256 frames, audio s per s"] = 8 * 256 * 256 / 22_050 / (ms / 1e3)
    rec = session(args.root / "models" / "recommender" / "model.onnx")
    dim = rec.get_inputs()[0].shape[1]
    q = rng.standard_normal((32, dim)).astype(np.float32)
    allowed = np.ones((32, rec.get_inputs()[1].shape[1]), bool)
    out["recommender, batch 32, queries/s"] = 32e3 / p(timed(lambda: rec.run(None, {"query": q, "allowed": allowed}), 50), 50)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/vx"), help="where gpu_bundle.py installed")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    parser.add_argument("--target", default="cuda", help="cuda (cpu: a dry run of the script itself)")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="a few iterations of everything (dry runs)")
    args = parser.parse_args()
    global QUICK
    QUICK = args.quick
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gpu_bench.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results["env"] = environment()
    for name in args.sections.split(","):
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            results[name] = globals()[f"section_{name}"](args)
        except Exception as e:  # one section's failure must not cost the others their device time
            results[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            print(results[name]["traceback"], flush=True)
        results[name]["seconds"] = round(time.perf_counter() - started, 1)
        path.write_text(json.dumps(results, indent=1, default=float))
        print(json.dumps(results[name], indent=1, default=float)[:3000], flush=True)
    return 0


def environment() -> dict:
    import platform
    import subprocess

    import torch

    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                              "--format=csv,noheader"], capture_output=True, text=True, check=False).stdout.strip()
    except FileNotFoundError:
        smi = "no nvidia-smi"
    return {"gpu": smi, "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


if __name__ == "__main__":
    sys.exit(main())
