"""The default TOML documents every option of every stage, with the dataclass default (no drift)."""

from __future__ import annotations

import tomllib
from dataclasses import MISSING, fields

import pytest

from orchestrator.stage import OrchestratorConfig
from services.asr.config import AsrConfig
from services.common.settings import DEFAULT_CONFIG, SERVER_KEYS
from services.nlp.config import NlpConfig
from services.recommender.config import RecommenderConfig
from services.tts.config import TtsConfig

CONFIGS = {"asr": AsrConfig, "nlp": NlpConfig, "recommender": RecommenderConfig, "tts": TtsConfig,
           "orchestrator": OrchestratorConfig}


@pytest.mark.parametrize("section", sorted(CONFIGS))
def test_every_option_is_in_the_default_toml_with_its_default(section):
    toml = tomllib.loads(DEFAULT_CONFIG.read_text())[section]
    cls = CONFIGS[section]
    defaults = {f.name: f.default for f in fields(cls) if f.default is not MISSING}
    assert set(toml) - set(SERVER_KEYS) == set(defaults), "options missing from or unknown to voxpipe.toml"
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in toml.items() if k in defaults} == defaults
