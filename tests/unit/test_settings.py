"""Stack settings: TOML defaults, VOXPIPE_* overrides, typed stage options."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from services.common import settings
from services.common.settings import SettingsError, options_to


@dataclass(frozen=True, kw_only=True)
class Options:
    silence_ms: int = 300
    threshold: float = 0.5
    enabled: bool = True
    voice: str = "joe"


def test_env_overrides_are_typed_by_the_toml_default():
    stack = settings.load(env={"VOXPIPE_ASR__PORT": "6000", "VOXPIPE_MODELS_DIR": "/m", "VOXPIPE_DEVICE": "cuda"})
    asr = stack.stage("asr")
    assert asr.server.port == 6000 and str(asr.models_dir) == "/m" and asr.device == "cuda"
    assert stack.stage("orchestrator").peers["asr"] == "127.0.0.1:6000"


def test_bad_env_values_and_sections_are_named():
    with pytest.raises(SettingsError, match="VOXPIPE_ASR__PORT='x'"):
        settings.load(env={"VOXPIPE_ASR__PORT": "x"})
    with pytest.raises(SettingsError, match=r"no section \[nope\]"):
        settings.load(env={"VOXPIPE_NOPE__PORT": "1"})


def test_stage_options_absent_from_the_toml_are_typed_by_the_dataclass():
    opts = options_to(Options, {"silence_ms": "400", "threshold": "0.7", "enabled": "false", "voice": "amy"}, "asr")
    assert opts == Options(silence_ms=400, threshold=0.7, enabled=False, voice="amy")
    with pytest.raises(SettingsError, match="VOXPIPE_ASR__SILENCE_MS='soon'"):
        options_to(Options, {"silence_ms": "soon"}, "asr")
    with pytest.raises(SettingsError, match=r"unknown keys \['silence'\]"):
        options_to(Options, {"silence": 1}, "asr")


def test_first_error_prefers_client_facing_errors_in_nested_groups():
    from services.common.errors import InvalidArgumentError, first_error

    bad = InvalidArgumentError("sample_rate_hz=1")
    group = BaseExceptionGroup("g", [RuntimeError("x"), BaseExceptionGroup("inner", [bad])])
    assert first_error(group) is bad
    plain = RuntimeError("only")
    assert first_error(BaseExceptionGroup("g", [plain])) is plain


def test_model_serving_overrides_from_the_environment_reach_every_stage():
    stack = settings.load(env={"VOXPIPE_MODELS__WHISPER_TINY_EN_DECODER__MAX_BATCH_SIZE": "32",
                               "VOXPIPE_MODELS__MINILM__INSTANCES": "2", "VOXPIPE_DEVICE": "auto"})
    assert stack.device == "auto"
    for stage in ("asr", "nlp"):
        models = stack.stage(stage).models
        assert models["whisper_tiny_en_decoder"] == {"max_batch_size": "32"}  # typed by the model's config
        assert models["minilm"] == {"instances": "2"}
    with pytest.raises(SettingsError, match="VOXPIPE_MODELS__<MODEL>__<KEY>"):
        settings.load(env={"VOXPIPE_MODELS__MINILM": "2"})


def test_asr_encoder_windows_from_toml_or_environment_and_by_device():
    from services.asr.config import AsrConfig

    assert options_to(AsrConfig, {"encoder_windows_s": "10,30"}, "asr").encoder_windows_s == (10.0, 30.0)
    assert options_to(AsrConfig, {"encoder_windows_s": [15, 30]}, "asr").encoder_windows_s == (15.0, 30.0)
    assert AsrConfig().windows_s(gpu=False) == (10.0, 20.0, 30.0)
    assert AsrConfig().windows_s(gpu=True) == (30.0,)
    for bad in ("30,10", "10,20", "2,30", "10,10,30"):
        with pytest.raises(SettingsError, match=r"encoder_windows_s=\["):
            options_to(AsrConfig, {"encoder_windows_s": bad}, "asr")
    with pytest.raises(SettingsError, match="VOXPIPE_ASR__ENCODER_WINDOWS_S='ten'"):
        options_to(AsrConfig, {"encoder_windows_s": "ten"}, "asr")
    with pytest.raises(ValueError, match="a GPU encodes the 30 s window only"):
        AsrConfig(encoder_windows_s=(10.0, 30.0)).windows_s(gpu=True)
