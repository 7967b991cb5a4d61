from protos import asr_pb2 as _asr_pb2
from protos import nlp_pb2 as _nlp_pb2
from protos import recommender_pb2 as _recommender_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConverseConfig(_message.Message):
    __slots__ = ("audio", "session_id", "voice", "output_sample_rate_hz", "budget_ms", "barge_in_on_speech")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    BARGE_IN_ON_SPEECH_FIELD_NUMBER: _ClassVar[int]
    audio: _asr_pb2.RecognitionConfig
    session_id: str
    voice: str
    output_sample_rate_hz: int
    budget_ms: int
    barge_in_on_speech: bool
    def __init__(self, audio: _Optional[_Union[_asr_pb2.RecognitionConfig, _Mapping]] = ..., session_id: _Optional[str] = ..., voice: _Optional[str] = ..., output_sample_rate_hz: _Optional[int] = ..., budget_ms: _Optional[int] = ..., barge_in_on_speech: _Optional[bool] = ...) -> None: ...

class ConverseControl(_message.Message):
    __slots__ = ("action",)
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[ConverseControl.Action]
        END_OF_UTTERANCE: _ClassVar[ConverseControl.Action]
        CANCEL_TURN: _ClassVar[ConverseControl.Action]
    ACTION_UNSPECIFIED: ConverseControl.Action
    END_OF_UTTERANCE: ConverseControl.Action
    CANCEL_TURN: ConverseControl.Action
    ACTION_FIELD_NUMBER: _ClassVar[int]
    action: ConverseControl.Action
    def __init__(self, action: _Optional[_Union[ConverseControl.Action, str]] = ...) -> None: ...

class ConverseRequest(_message.Message):
    __slots__ = ("config", "audio", "control")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    config: ConverseConfig
    audio: bytes
    control: ConverseControl
    def __init__(self, config: _Optional[_Union[ConverseConfig, _Mapping]] = ..., audio: _Optional[bytes] = ..., control: _Optional[_Union[ConverseControl, _Mapping]] = ...) -> None: ...

class Recommendations(_message.Message):
    __slots__ = ("items", "strategy", "empty_reason")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    EMPTY_REASON_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_recommender_pb2.Item]
    strategy: str
    empty_reason: str
    def __init__(self, items: _Optional[_Iterable[_Union[_recommender_pb2.Item, _Mapping]]] = ..., strategy: _Optional[str] = ..., empty_reason: _Optional[str] = ...) -> None: ...

class ReplyText(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class ReplyAudio(_message.Message):
    __slots__ = ("audio", "sample_rate_hz", "text_start", "text_end", "last")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    TEXT_START_FIELD_NUMBER: _ClassVar[int]
    TEXT_END_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    sample_rate_hz: int
    text_start: int
    text_end: int
    last: bool
    def __init__(self, audio: _Optional[bytes] = ..., sample_rate_hz: _Optional[int] = ..., text_start: _Optional[int] = ..., text_end: _Optional[int] = ..., last: _Optional[bool] = ...) -> None: ...

class StageReport(_message.Message):
    __slots__ = ("stage", "ms", "budget_ms", "missed", "degraded", "note", "server_ms")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    MS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    MISSED_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    SERVER_MS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    ms: float
    budget_ms: float
    missed: bool
    degraded: bool
    note: str
    server_ms: float
    def __init__(self, stage: _Optional[str] = ..., ms: _Optional[float] = ..., budget_ms: _Optional[float] = ..., missed: _Optional[bool] = ..., degraded: _Optional[bool] = ..., note: _Optional[str] = ..., server_ms: _Optional[float] = ...) -> None: ...

class TurnReport(_message.Message):
    __slots__ = ("stages", "voice_to_voice_ms", "endpoint_wait_ms", "budget_ms", "total_ms", "missed", "cancelled", "trace_id", "session_id", "orchestration_ms", "overhead_ms", "speculative", "hidden_ms")
    STAGES_FIELD_NUMBER: _ClassVar[int]
    VOICE_TO_VOICE_MS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    MISSED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ORCHESTRATION_MS_FIELD_NUMBER: _ClassVar[int]
    OVERHEAD_MS_FIELD_NUMBER: _ClassVar[int]
    SPECULATIVE_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_MS_FIELD_NUMBER: _ClassVar[int]
    stages: _containers.RepeatedCompositeFieldContainer[StageReport]
    voice_to_voice_ms: float
    endpoint_wait_ms: float
    budget_ms: float
    total_ms: float
    missed: bool
    cancelled: bool
    trace_id: str
    session_id: str
    orchestration_ms: float
    overhead_ms: float
    speculative: bool
    hidden_ms: float
    def __init__(self, stages: _Optional[_Iterable[_Union[StageReport, _Mapping]]] = ..., voice_to_voice_ms: _Optional[float] = ..., endpoint_wait_ms: _Optional[float] = ..., budget_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., missed: _Optional[bool] = ..., cancelled: _Optional[bool] = ..., trace_id: _Optional[str] = ..., session_id: _Optional[str] = ..., orchestration_ms: _Optional[float] = ..., overhead_ms: _Optional[float] = ..., speculative: _Optional[bool] = ..., hidden_ms: _Optional[float] = ...) -> None: ...

class TurnError(_message.Message):
    __slots__ = ("code", "message", "stage")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    stage: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., stage: _Optional[str] = ...) -> None: ...

class ConverseSession(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class ConverseResponse(_message.Message):
    __slots__ = ("turn_index", "transcript", "understanding", "recommendations", "reply", "audio", "report", "error", "session")
    TURN_INDEX_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    UNDERSTANDING_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATIONS_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    turn_index: int
    transcript: _asr_pb2.SpeechResult
    understanding: _nlp_pb2.UnderstandResponse
    recommendations: Recommendations
    reply: ReplyText
    audio: ReplyAudio
    report: TurnReport
    error: TurnError
    session: ConverseSession
    def __init__(self, turn_index: _Optional[int] = ..., transcript: _Optional[_Union[_asr_pb2.SpeechResult, _Mapping]] = ..., understanding: _Optional[_Union[_nlp_pb2.UnderstandResponse, _Mapping]] = ..., recommendations: _Optional[_Union[Recommendations, _Mapping]] = ..., reply: _Optional[_Union[ReplyText, _Mapping]] = ..., audio: _Optional[_Union[ReplyAudio, _Mapping]] = ..., report: _Optional[_Union[TurnReport, _Mapping]] = ..., error: _Optional[_Union[TurnError, _Mapping]] = ..., session: _Optional[_Union[ConverseSession, _Mapping]] = ...) -> None: ...
