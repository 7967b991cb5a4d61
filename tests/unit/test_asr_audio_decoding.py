"""ASR input checks (PCM, WAV headers, request config) and the greedy decoding rules, without models."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import soundfile as sf

from engines.models.whisper_spec import GreedyRule
from protos import asr_pb2, common_pb2
from services.asr.audio import StreamResampler, pcm16_to_float, strip_wav_header
from services.asr.config import AsrConfig, settings_from_proto
from services.asr.decoding import SlotState
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
    (_cfg(encoding=99), r"encoding=99 \(not an AudioEncoding\)"),
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


RULE = GreedyRule(sot=5, no_timestamps=6, eot=4, no_speech=7, suppress_ids=(8,), suppress_ids_begin=(1, 4),
                  max_new_tokens=5)


def _pick(best: list[int], position: int):
    """The decoder graph's greedy pick for logits preferring ``best`` in order, after feeding ``position``."""
    torch = pytest.importorskip("torch")
    from engines.models.whisper import WhisperDecoder
    from engines.models.whisper_spec import WhisperDims

    dims = WhisperDims(n_mels=4, n_audio_ctx=3, n_state=2, n_head=1, n_audio_layer=1, n_text_ctx=8, n_vocab=10,
                       n_text_layer=1)
    logits = torch.zeros(1, 10)
    for rank, token in enumerate(best):
        logits[0, token] = 10.0 - rank
    next_token, token, prob, no_speech, log_norm = WhisperDecoder(dims, RULE).pick(logits, torch.tensor([position]))
    # log_norm: the masked logits' log-sum-exp, so the picked token's log-probability is its logit minus it.
    assert float(logits[0, int(token)] - log_norm) == pytest.approx(math.log(float(prob)), abs=1e-5)
    return int(next_token), int(token), float(prob), float(no_speech)


def test_greedy_rules_in_the_graph():
    nxt, _, _, no_speech = _pick([7], 0)        # <|sot|> step: the no-speech probability; next input from the prompt
    assert nxt == 6 and no_speech > 0.9
    nxt, token, _, _ = _pick([4, 1, 8, 2], 1)    # first token: eot, 1 (begin-suppressed) and 8 (suppressed) skipped
    assert nxt == token == 2
    assert _pick([8, 1], 2)[1] == 1              # later: 1 is allowed, 8 never
    assert _pick([4], 3)[1] == 4


def test_slot_state_collects_tokens_after_the_prompt():
    state = SlotState(RULE)
    assert not state.advance(6, 0.5, 0.9)        # position 0: only the no-speech probability counts
    assert state.no_speech_prob == 0.9 and not state.tokens
    assert not state.advance(2, 0.8, 0.0)
    assert not state.advance(1, 0.7, 0.0)
    assert state.advance(RULE.eot, 0.6, 0.0)
    result = state.result()
    assert result.tokens == (2, 1) and result.token_probs == (0.8, 0.7) and result.eot_prob == 0.6


def test_a_tokens_logprob_at_a_step_from_the_hidden_state_and_the_rule():
    # Step i's hidden state times a token's embedding, minus the step's log-normaliser; -inf where the rule
    # excludes the token (8 always; 1 and 4 at the first text step); None past the steps kept.
    state = SlotState(RULE)
    state.advance(6, 0.5, 0.9, 0.0, np.zeros(2, np.float32))  # prompt step: not kept
    state.advance(2, 0.8, 0.0, 1.5, np.array([1.0, 2.0], np.float32))
    state.advance(RULE.eot, 0.6, 0.0, 0.5, np.array([0.5, 0.0], np.float32))
    result = state.result()
    assert result.hidden.shape == (2, 2) and result.log_norm.tolist() == [1.5, 0.5]
    embedding = np.arange(20, dtype=np.float16).reshape(10, 2)  # token t: (2t, 2t + 1)
    assert result.logprob_at(0, 3, embedding, RULE) == pytest.approx(1.0 * 6 + 2.0 * 7 - 1.5)
    assert result.logprob_at(1, 1, embedding, RULE) == pytest.approx(0.5 * 2 - 0.5)
    assert result.logprob_at(0, 1, embedding, RULE) == -math.inf
    assert result.logprob_at(1, 8, embedding, RULE) == -math.inf
    assert result.logprob_at(2, 3, embedding, RULE) is None
    assert SlotState(RULE).result().logprob_at(0, 3, embedding, RULE) is None  # a decoder that gave no states


def test_max_new_tokens_stops():
    state = SlotState(RULE)
    while not state.advance(3, 0.5, 0.0):
        pass
    assert state.result().tokens == (3,) * 5
