"""The ASR stage: streaming Whisper tiny.en with Silero VAD endpointing (``voxpipe.v1.Recognizer``)."""

from services.asr.config import AsrConfig, StreamSettings
from services.asr.recognizer import SpeechRecognizer, Transcript
from services.asr.servicer import RecognizerServicer
from services.asr.stage import AsrStage
from services.common import StageSettings


def create_stage(settings: StageSettings) -> AsrStage:
    """The ASR stage for ``settings`` (its ``options`` are the ``[asr]`` TOML section)."""
    return AsrStage(settings)


__all__ = ["AsrConfig", "AsrStage", "RecognizerServicer", "SpeechRecognizer", "StreamSettings", "Transcript",
           "create_stage"]
