"""Stage outputs on one target device, on each stage's own metric, to compare a GPU stack with the CPU one.

``collect(models_dir, target, data_dir)`` runs every stage's real models through the engine layer the way
the services run them and returns plain JSON: ASR tokens and transcripts of the ASR test set, NLP
embeddings and intent decisions of the held-out utterances, recommender top-10s for text and similar-item
queries, and a TTS round trip (each reply spoken by the voice with the noise off, transcribed by our ASR on
the same target). ``compare(cpu, gpu)`` turns two of them into the issue's parity figures. The CPU result
is made on the development machine (``gpu_bundle.py prepare``) and carried to the GPU machine.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.asr_wer import normalise, wer  # noqa: E402
from benchmarks.tts_replies import REPLIES  # noqa: E402
from engines.repository import ModelRepository, create_engines  # noqa: E402

TTS_REPLIES = REPLIES[:16]
SIMILAR_QUERIES = 300  # similar-item queries (every 5th catalogue row), besides one text query per utterance


def _audio(path: Path) -> np.ndarray:
    import soundfile as sf

    audio, rate = sf.read(path, dtype="float32")
    if rate != 16_000:
        raise ValueError(f"{path}: {rate} Hz, expected 16 kHz")
    return audio


def asr(repo: ModelRepository, clips: list[tuple[str, np.ndarray]]) -> dict:
    """Greedy tokens and text per clip (the generation engine, slot 0: what a final decode runs)."""
    from services.asr.generation import DECODER_MODEL, ENCODER_MODEL, create_generators, transcribe
    from services.asr.tokenizer import WhisperTokenizer

    decoder = repo.resolve(DECODER_MODEL)
    (encoder,) = create_engines(repo.resolve(ENCODER_MODEL))[:1]
    (generator,) = create_generators(decoder)[:1]
    encoder.warmup()
    generator.warmup()
    tokenizer = WhisperTokenizer(decoder.folder / decoder.config.metadata.get("tokenizer", "tokenizer.json"))
    out = {}
    for name, audio in clips:
        result = transcribe(encoder, generator, audio)
        out[name] = {"tokens": list(result.tokens), "text": tokenizer.decode(result.tokens)}
    return out


async def _nlp(settings, texts: list[str]) -> dict:
    from services.nlp.stage import NlpStage

    stage = NlpStage(settings)
    await stage.start()
    try:
        results = [await stage.batcher.submit(t) for t in texts]
    finally:
        await stage.stop()
    return {"intents": [r.intent.intent for r in results],
            "embeddings": [np.round(r.embedding.astype(float), 6).tolist() for r in results]}


def nlp(settings, texts: list[str]) -> dict:
    """Intent and embedding of each utterance through the NLP stage's own pipeline (batcher included)."""
    return asyncio.run(_nlp(settings, texts))


def recommender(repo: ModelRepository, embeddings: list[list[float]]) -> dict:
    """Top-10 item rows for a text query per embedding and for similar-item queries."""
    from services.recommender import ranking
    from services.recommender.catalog import Catalog

    model = repo.resolve("recommender")
    (engine,) = create_engines(model)[:1]
    engine.warmup()
    meta = model.config.metadata
    blocks, blend, catalog = ranking.Blocks.from_metadata(meta), dict(meta["blend"]), Catalog(model.folder)
    queries = [ranking.text_query(blocks, blend, np.asarray(e, np.float32)) for e in embeddings]
    queries += [ranking.similar_query(blocks, blend, catalog, row)
                for row in range(0, len(catalog), max(1, len(catalog) // SIMILAR_QUERIES))]
    top = []
    for i in range(0, len(queries), 32):
        for scores, rows in ranking.score_batch(engine, [(q, catalog.servable) for q in queries[i:i + 32]]):
            top.append([r for r, _ in ranking.top_allowed(scores, rows, 10)])
    return {"top10": top}


def tts(repo: ModelRepository, asr_repo: ModelRepository, replies: list[str]) -> dict:
    """Each reply spoken whole (noise off), resampled to 16 kHz and transcribed by our ASR."""
    import soxr

    from services.tts.batching import decode_group, encode_group, voice_encoder
    from services.tts.voice import load_voice

    voice = load_voice(repo.folder("tts-en_US-joe-medium"))
    encoder = voice_encoder(create_engines(repo.resolve("tts-en_US-joe-medium-encoder"))[0])
    decoder = create_engines(repo.resolve("tts-en_US-joe-medium-decoder"))[0]
    encoder.warmup()
    decoder.warmup()
    hop = int(decoder.config.metadata["hop_length"])
    clips = []
    for i, text in enumerate(replies):
        ids = voice.id_map.to_ids(voice.phonemizer.phonemize(text)).ids
        [z] = encode_group(encoder, [ids], (0.0, voice.scales.length, 0.0), hop)
        [audio] = decode_group(decoder, [z], hop)
        clips.append((f"r{i:02d}", soxr.resample(audio, voice.sample_rate_hz, 16_000).astype(np.float32)))
    heard = asr(asr_repo, clips)
    texts = [heard[name]["text"] for name, _ in clips]
    return {"texts": texts, "wer": wer(replies, texts),
            "samples": [int(len(a)) for _, a in clips]}


def collect(models_dir: Path, target: str, data_dir: Path, *, models_overrides: dict | None = None,
            query_embeddings: list[list[float]] | None = None) -> dict:
    """Every stage's outputs on ``target`` for the carried data (see the module docstring).

    ``query_embeddings``: the recommender's text queries (default: this run's NLP embeddings). Give a GPU run
    the CPU run's, so the recommender is compared on its own inputs, not on the NLP stage's rounding.
    """
    from services.common.settings import StageSettings

    repo = ModelRepository(models_dir, target=target, overrides=models_overrides)
    refs = json.loads((data_dir / "asr-testset" / "references.json").read_text())
    clips = [(r["id"], _audio(data_dir / "asr-testset" / r["file"])) for r in refs]
    texts = [json.loads(line)["text"] for line in (data_dir / "nlp_heldout.jsonl").read_text().splitlines()]
    settings = StageSettings(name="nlp", models_dir=models_dir, device=target, models=models_overrides or {})
    out = {"target": target, "asr": asr(repo, clips), "nlp": nlp(settings, texts)}
    out["recommender"] = recommender(repo, query_embeddings or out["nlp"]["embeddings"])
    out["tts"] = tts(repo, repo, TTS_REPLIES)
    out["asr_references"] = {r["id"]: r["text"] for r in refs}
    return out


def compare(cpu: dict, gpu: dict) -> dict:
    """The parity figures of the GPU run against the CPU FP32 run, each with its target and verdict."""
    names = sorted(cpu["asr"])
    refs = cpu["asr_references"]
    cpu_wer = wer([refs[n] for n in names], [cpu["asr"][n]["text"] for n in names])
    gpu_wer = wer([refs[n] for n in names], [gpu["asr"][n]["text"] for n in names])
    same_tokens = sum(cpu["asr"][n]["tokens"] == gpu["asr"][n]["tokens"] for n in names) / len(names)
    a, b = np.asarray(cpu["nlp"]["embeddings"]), np.asarray(gpu["nlp"]["embeddings"])
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    intents = sum(x == y for x, y in zip(cpu["nlp"]["intents"], gpu["nlp"]["intents"], strict=True))
    top = sum(x == y for x, y in zip(cpu["recommender"]["top10"], gpu["recommender"]["top10"], strict=True))
    n_top = len(cpu["recommender"]["top10"])
    tts_cpu, tts_gpu = cpu["tts"]["wer"], gpu["tts"]["wer"]
    same_words = sum(normalise(x) == normalise(y) for x, y in zip(cpu["tts"]["texts"], gpu["tts"]["texts"], strict=True))
    return {
        "asr_wer": {"cpu": cpu_wer, "gpu": gpu_wer, "diff": gpu_wer - cpu_wer, "identical_tokens": same_tokens,
                    "clips": len(names), "target": "diff <= +0.005", "met": gpu_wer - cpu_wer <= 0.005},
        "nlp": {"intents_identical": intents, "utterances": len(cos), "min_cosine": float(cos.min()),
                "target": "intents identical, cosine >= 0.999",
                "met": intents == len(cos) and float(cos.min()) >= 0.999},
        "recommender": {"top10_identical": top / n_top, "queries": n_top, "target": ">= 0.99",
                        "met": top / n_top >= 0.99},
        "tts_round_trip_wer": {"cpu": tts_cpu, "gpu": tts_gpu, "diff_points": 100 * (tts_gpu - tts_cpu),
                               "same_transcript": same_words, "replies": len(cpu["tts"]["texts"]),
                               "target": "within 1 point", "met": abs(tts_gpu - tts_cpu) <= 0.01},
    }
