"""ASR input checks (PCM, WAV headers, request config) and the greedy decoding rules, without models."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from protos import asr_pb2, common_pb2
from services.asr.audio import StreamResampler, pcm16_to_float, strip_wav_header
from services.asr.config import AsrConfig, settings_from_proto
from services.asr.decoding import DecodingSpec, Hypothesis, StepInput, StepOutput, collate_steps
from services.common import InvalidArgumentError


def _wav(channels: int, rate: int = 16_000, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros((160, channels), np.float32), rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def test_pcm16_odd_byte_count_names_the_count():
    with pytest.raises(InvalidArgumentError, match="3 bytes, an odd count"):
        pcm16_to_float(b"\x00\x01\x02")
    np.testing.assert_array_equal(pcm16_to_float(b"\x00\x80\xff\x7f"), [-1.0, 32767 / 32768])


def test_wav_header_checks():
    assert len(strip_wav_header(_wav(1), 16_000)) == 320
    with pytest.raises(InvalidArgumentError, match="channels=2"):
        strip_wav_header(_wav(2), 16_000)
    with pytest.raises(InvalidArgumentError, match="22050 Hz but config.sample_rate_hz=16000"):
        strip_wav_header(_wav(1, 22_050), 16_000)
    with pytest.raises(InvalidArgumentError, match="bits_per_sample=32"):
        strip_wav_header(_wav(1, subtype="FLOAT"), 16_000)
    raw = b"\x01\x00" * 10
    assert strip_wav_header(raw, 16_000) is raw


def test_stream_resampler_keeps_length():
    rs = StreamResampler(48_000)
    out = [rs.process(np.zeros(4800, np.float32)) for _ in range(10)]
    out.append(rs.process(np.zeros(0, np.float32), last=True))
    assert abs(sum(len(o) for o in out) - 16_000) <= 1
    assert StreamResampler(16_000).passthrough


def _cfg(**kw) -> asr_pb2.RecognitionConfig:
    base = {"encoding": common_pb2.LINEAR16, "sample_rate_hz": 16_000}
    return asr_pb2.RecognitionConfig(**{**base, **kw})


@pytest.mark.parametrize(("config", "message"), [
    (_cfg(encoding=common_pb2.AUDIO_ENCODING_UNSPECIFIED), "encoding=AUDIO_ENCODING_UNSPECIFIED"),
    (_cfg(sample_rate_hz=7_999), "sample_rate_hz=7999 is outside 8000..48000"),
    (_cfg(sample_rate_hz=96_000), "sample_rate_hz=96000"),
    (_cfg(language_code="de-DE"), "language_code='de-DE'"),
    (_cfg(endpointing=asr_pb2.EndpointingConfig(silence_ms=20)), "endpointing.silence_ms=20"),
    (_cfg(endpointing=asr_pb2.EndpointingConfig(speech_threshold=1.5)), "speech_threshold=1.5"),
    (_cfg(interim_interval_ms=50), "interim_interval_ms=50"),
])
def test_bad_configs_name_the_value(config, message):
    with pytest.raises(InvalidArgumentError, match=message):
        settings_from_proto(config, AsrConfig())


def test_defaults_fill_zeros():
    s = settings_from_proto(_cfg(language_code="EN-gb"), AsrConfig(silence_ms=400))
    assert (s.silence_ms, s.speech_threshold, s.min_speech_ms, s.interim_interval_ms) == (400, 0.5, 150, 500)
    assert settings_from_proto(_cfg(), AsrConfig()).language_code == "en-US"


SPEC = DecodingSpec(sot=5, eot=4, no_timestamps=6, no_speech=7, vocab_size=10, n_layers=1, n_state=2,
                    suppress_ids=(8,), suppress_ids_begin=(1, 4), max_new_tokens=5)


def _out(best: list[int]) -> StepOutput:
    """Logits preferring ``best`` in order (the first one not suppressed wins)."""
    logits = np.zeros(10, np.float32)
    for rank, token in enumerate(best):
        logits[token] = 10.0 - rank
    return StepOutput(logits, np.ones((1, 1, 2), np.float32), np.ones((1, 1, 2), np.float32))


def test_greedy_rules():
    hyp = Hypothesis(SPEC, np.zeros((1, 3, 2), np.float32), np.zeros((1, 3, 2), np.float32))
    assert hyp.step_input().token == 5 and hyp.step_input().position == 0
    hyp.advance(_out([7]))                 # <|sot|> step: only the no-speech probability is read
    assert hyp.no_speech_prob > 0.9 and not hyp.tokens
    assert hyp.step_input().token == 6     # <|notimestamps|>
    hyp.advance(_out([4, 1, 8, 2]))        # first token: eot, 1 (begin-suppressed) and 8 (suppressed) skipped
    assert hyp.tokens == [2]
    hyp.advance(_out([8, 1]))              # later: 1 is allowed, 8 never
    assert hyp.tokens == [2, 1]
    step = hyp.step_input()
    assert step.token == 1 and step.position == 3 and step.past_key.shape == (1, 3, 2)
    hyp.advance(_out([4]))
    assert hyp.done and hyp.result().tokens == (2, 1)


def test_max_new_tokens_stops():
    hyp = Hypothesis(SPEC, np.zeros((1, 3, 2), np.float32), np.zeros((1, 3, 2), np.float32))
    while not hyp.done:
        hyp.advance(_out([3]))
    assert hyp.result().tokens == (3,) * 5


def test_collate_pads_caches_to_the_longest_row():
    # Cross K/V of one layer, one head of width 2, 3 source frames: keys [L, H, D/H, S], values [L, H, S, D/H].
    a = Hypothesis(SPEC, np.zeros((1, 1, 2, 3), np.float32), np.zeros((1, 1, 3, 2), np.float32))
    b = Hypothesis(SPEC, np.ones((1, 1, 2, 3), np.float32), np.ones((1, 1, 3, 2), np.float32))
    for _ in range(3):
        a.advance(_out([3]))
    feed = collate_steps([a.step_input(), b.step_input()])
    assert feed["past_key"].shape == (2, 1, 3, 2)
    np.testing.assert_array_equal(feed["positions"], [3, 0])
    assert feed["cross_key_0"].shape == (2, 1, 2, 3) and feed["cross_key_0"][1].max() == 1
    assert feed["cross_value_0"].shape == (2, 1, 3, 2)


def test_collate_of_one_row_passes_its_cross_kv_without_a_copy():
    keys, values = np.ones((2, 1, 2, 3), np.float32), np.ones((2, 1, 3, 2), np.float32)
    feed = collate_steps([StepInput(7, 0, np.zeros((2, 0, 2), np.float32), np.zeros((2, 0, 2), np.float32),
                                    keys, values)])
    assert sorted(k for k in feed if k.startswith("cross")) == [
        "cross_key_0", "cross_key_1", "cross_value_0", "cross_value_1"]
    assert np.shares_memory(feed["cross_key_1"], keys) and feed["cross_key_1"].flags.c_contiguous
