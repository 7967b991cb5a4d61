"""The TTS stage: Piper VITS voices, streamed sentence by sentence (``voxpipe.v1.Synthesizer``)."""

from services.common import StageSettings
from services.tts.config import TtsConfig
from services.tts.servicer import SynthesizerServicer
from services.tts.stage import TtsStage
from services.tts.synthesis import SentenceAudio, SpeechSynthesizer, SynthesisRequest


def create_stage(settings: StageSettings) -> TtsStage:
    """The TTS stage for ``settings`` (its ``options`` are the ``[tts]`` TOML section)."""
    return TtsStage(settings)


__all__ = ["SentenceAudio", "SpeechSynthesizer", "SynthesisRequest", "SynthesizerServicer", "TtsConfig",
           "TtsStage", "create_stage"]
