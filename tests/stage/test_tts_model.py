"""The built Piper voice: configs, the added length outputs, the encoder/decoder split, parity with
piper-tts, and batch trimming."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engines.build import BuildContext
from engines.build import tts as tts_build
from engines.config import ModelConfig
from engines.repository import ModelRepository
from services.common.sentences import split_sentences
from services.tts.batching import SentenceItem, decode_group, encode_group, make_encoder_fn, run_group
from services.tts.synthesis import plan_windows
from services.tts.text import normalize
from services.tts.voice import load_voice
from tests.stage.tts_fixtures import (  # noqa: F401
    downloads_dir,
    piper_voice_fixture,
    tts_model_folder_fixture,
    tts_models_fixture,
)

pytestmark = pytest.mark.models

PARITY_TEXTS = [
    "Can you recommend a comedy from the nineties?",
    "Here are three films you might enjoy: Clueless, Groundhog Day and Toy Story.",
    "I think you will like Heat. It is a crime drama with great actors! Enjoy the movie.",
]
NO_NOISE = (0.0, 1.0, 0.0)
HOP = 256


@pytest.fixture(scope="module")
def engine(tts_models):
    [engine] = ModelRepository(tts_models).load(tts_build.MODEL_NAME)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def split(tts_models):
    repo = ModelRepository(tts_models)
    [encoder] = repo.load(tts_build.ENCODER_NAME)
    [decoder] = repo.load(tts_build.DECODER_NAME)
    return encoder, decoder


def _windowed(split, ids, first_frames: int) -> np.ndarray:
    """Our serving path for one sentence: encoder, then the decoder window by window with context."""
    encoder, decoder = split
    [z] = encode_group(encoder, [ids], NO_NOISE, HOP)
    frames, context, pieces = z.shape[-1], tts_build.DECODER_CONTEXT_FRAMES, []
    for start, end in plan_windows(frames, first_frames):
        lo, hi = max(0, start - context), min(frames, end + context)
        [audio] = decode_group(decoder, [z[:, lo:hi]], HOP)
        pieces.append(audio[(start - lo) * HOP : (end - lo) * HOP])
    return np.concatenate(pieces)


@pytest.fixture(scope="module")
def voice(tts_model_folder):
    return load_voice(tts_model_folder)


def _ids(voice, text: str) -> list[list[int]]:
    return [voice.id_map.to_ids(voice.phonemizer.phonemize(normalize(s.text))).ids for s in split_sentences(text)]


def test_config_declares_io_and_records_checksums(tts_model_folder):
    config = ModelConfig.load(tts_model_folder)
    assert [(t.name, t.dtype, t.dims) for t in config.inputs] == [
        ("input", "int64", (-1, -1)), ("input_lengths", "int64", (-1,)), ("scales", "float32", (3,))]
    assert [t.name for t in config.outputs] == ["output", "durations", "output_lengths"]
    meta = config.metadata
    assert len(meta["source_sha256"]) == 64 and len(meta["artifact_sha256"]) == 64
    assert meta["sample_rate_hz"] == 22050 and meta["hop_length"] == HOP
    voice_json = json.loads((tts_model_folder / tts_build.VOICE_FILE).read_text())
    assert voice_json["audio"]["sample_rate"] == 22050


def test_split_configs_and_golden_check(tts_models):
    encoder = ModelConfig.load(tts_models / tts_build.ENCODER_NAME)
    decoder = ModelConfig.load(tts_models / tts_build.DECODER_NAME)
    assert [t.name for t in encoder.outputs] == ["z", "durations", "output_lengths"]
    assert [(t.name, t.dims) for t in decoder.inputs] == [("z", (-1, 192, -1))]
    for meta in (encoder.metadata, decoder.metadata):
        assert meta["golden_split_max_abs_diff"] <= 1e-4
        assert meta["golden_windowed_max_abs_diff"] <= 1e-4
        assert meta["decoder_context_frames"] == tts_build.DECODER_CONTEXT_FRAMES


def test_build_is_cached_by_source_checksum(tts_models):
    names = (tts_build.MODEL_NAME, tts_build.ENCODER_NAME, tts_build.DECODER_NAME)
    before = [(tts_models / n / "model.onnx").stat().st_mtime_ns for n in names]
    tts_build.build(BuildContext(models_dir=tts_models, downloads_dir=downloads_dir()))
    assert [(tts_models / n / "model.onnx").stat().st_mtime_ns for n in names] == before


def test_output_lengths_are_durations_times_hop(engine, voice):
    ids = _ids(voice, "Hello there, how are you?")[0]
    out = engine.run({"input": np.array([ids]), "input_lengths": np.array([len(ids)]),
                      "scales": np.array(NO_NOISE, dtype=np.float32)})
    frames = out["durations"].sum()
    assert out["output_lengths"][0] == max(1, int(frames)) * 256 == out["output"].shape[-1]


@pytest.mark.parametrize("text", PARITY_TEXTS)
def test_parity_with_piper_voice(engine, split, voice, piper_voice, text):
    """Noise off: our front end + engine layer give piper-tts's own audio, sentence by sentence —
    through the whole graph, through encoder -> decoder, and decoded in windows as the service does."""
    from piper.config import SynthesisConfig

    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, length_scale=1.0, normalize_audio=False)
    reference = [chunk.audio_float_array for chunk in piper_voice.synthesize(text, config)]
    sentences = _ids(voice, text)
    assert len(sentences) == len(reference)
    for ids, theirs in zip(sentences, reference, strict=True):
        for mine in (run_group(engine, [ids], NO_NOISE)[0], _windowed(split, ids, 0), _windowed(split, ids, 32),
                     _windowed(split, ids, 8)):
            assert mine.shape == theirs.shape
            assert np.abs(np.clip(mine, -1, 1) - theirs).max() <= 1e-4


def test_windows_grow_and_cover_the_sentence():
    assert plan_windows(50, 32) == [(0, 50)]
    assert plan_windows(240, 32) == [(0, 32), (32, 96), (96, 240)]
    assert plan_windows(240, 0) == [(0, 240)]
    for frames in range(65, 3000, 37):
        windows = plan_windows(frames, 32)
        assert windows[0] == (0, 32) and windows[-1][1] == frames and len(windows) <= 8
        assert all(a[1] == b[0] for a, b in zip(windows, windows[1:], strict=False))


def test_padded_batch_is_trimmed_to_each_items_own_audio(engine, split, voice):
    texts = ["Sure.", "Can you recommend a comedy from the nineties?",
             "Here are three films you might enjoy: Clueless, Groundhog Day and Toy Story."]
    ids = [_ids(voice, t)[0] for t in texts]
    alone = [run_group(engine, [x], NO_NOISE)[0] for x in ids]
    encoder, decoder = split
    latents = make_encoder_fn(encoder, HOP)([SentenceItem(x, NO_NOISE) for x in ids])
    for whole in (run_group(engine, ids, NO_NOISE), decode_group(decoder, latents, HOP)):
        for a, b in zip(alone, whole, strict=True):
            assert a.shape == b.shape  # no item carries a neighbour's padding
            # Same maths on a different batch shape: float32 accumulation differs slightly.
            assert np.abs(a - b).max() <= 1e-3


def test_items_with_different_scales_are_run_apart(split, voice):
    encoder, _ = split
    [ids] = _ids(voice, "Enjoy the movie.")
    slow, normal = make_encoder_fn(encoder, HOP)([SentenceItem(ids, (0.0, 1.5, 0.0)), SentenceItem(ids, NO_NOISE)])
    assert slow.shape[-1] > normal.shape[-1] * 1.3
    assert np.array_equal(normal, encode_group(encoder, [ids], NO_NOISE, HOP)[0])


def test_pytorch_voice_padded_to_buckets_matches_the_onnx_voice(tts_models):
    """The GPU path's shapes on the CPU: the PyTorch voice with its sentences padded to batch and phoneme-id
    buckets (the encoder in two phases, frames padded to a power of two) gives the ONNX voice's latents,
    durations and audio (noise off)."""
    pytest.importorskip("torch")
    from services.tts.batching import voice_encoder
    from services.tts.encoder_torch import TorchVoiceEncoder

    torch_repo = ModelRepository(tts_models, overrides={name: {
        "backend": "torch", "batch_buckets": "1,2,4", "length_buckets": "32,64,128", "max_batch_size": 4}
        for name in (tts_build.ENCODER_NAME, tts_build.DECODER_NAME)})
    encoder = voice_encoder(torch_repo.load(tts_build.ENCODER_NAME)[0])
    assert isinstance(encoder, TorchVoiceEncoder)
    [decoder] = torch_repo.load(tts_build.DECODER_NAME)
    onnx_encoder, onnx_decoder = ModelRepository(tts_models).load(tts_build.ENCODER_NAME)[0], \
        ModelRepository(tts_models).load(tts_build.DECODER_NAME)[0]
    voice = load_voice(tts_models / tts_build.MODEL_NAME)
    ids = [voice.id_map.to_ids(voice.phonemizer.phonemize(normalize(t))).ids for t in PARITY_TEXTS]
    got = encode_group(encoder, ids, NO_NOISE, HOP)  # 3 sentences: a batch bucket of 4
    want = encode_group(onnx_encoder, ids, NO_NOISE, HOP)
    for z, ref in zip(got, want, strict=True):
        assert tuple(z.shape) == ref.shape
        np.testing.assert_allclose(z.numpy(), ref, rtol=1e-3, atol=1e-3)
    audio = decode_group(decoder, got, HOP)  # windows of different lengths, padded to a frame bucket
    reference = decode_group(onnx_decoder, want, HOP)
    for a, ref in zip(audio, reference, strict=True):
        assert a.shape == ref.shape
        assert np.abs(a - ref).max() < 2e-3
    for engine in (encoder, decoder):  # what the scaffold does on stop: the two-phase runner closes too
        engine.close()
