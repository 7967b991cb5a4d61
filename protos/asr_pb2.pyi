from protos import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EndpointReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENDPOINT_REASON_UNSPECIFIED: _ClassVar[EndpointReason]
    VAD_SILENCE: _ClassVar[EndpointReason]
    CLIENT_END_OF_UTTERANCE: _ClassVar[EndpointReason]
    END_OF_STREAM: _ClassVar[EndpointReason]
    MAX_UTTERANCE_LENGTH: _ClassVar[EndpointReason]
ENDPOINT_REASON_UNSPECIFIED: EndpointReason
VAD_SILENCE: EndpointReason
CLIENT_END_OF_UTTERANCE: EndpointReason
END_OF_STREAM: EndpointReason
MAX_UTTERANCE_LENGTH: EndpointReason

class EndpointingConfig(_message.Message):
    __slots__ = ("silence_ms", "speech_threshold", "min_speech_ms")
    SILENCE_MS_FIELD_NUMBER: _ClassVar[int]
    SPEECH_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MIN_SPEECH_MS_FIELD_NUMBER: _ClassVar[int]
    silence_ms: int
    speech_threshold: float
    min_speech_ms: int
    def __init__(self, silence_ms: _Optional[int] = ..., speech_threshold: _Optional[float] = ..., min_speech_ms: _Optional[int] = ...) -> None: ...

class SpeechPhrase(_message.Message):
    __slots__ = ("phrase", "boost")
    PHRASE_FIELD_NUMBER: _ClassVar[int]
    BOOST_FIELD_NUMBER: _ClassVar[int]
    phrase: str
    boost: float
    def __init__(self, phrase: _Optional[str] = ..., boost: _Optional[float] = ...) -> None: ...

class RecognitionConfig(_message.Message):
    __slots__ = ("encoding", "sample_rate_hz", "language_code", "interim_results", "endpointing", "interim_interval_ms", "phrases", "disable_default_phrases", "speculative_results")
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_CODE_FIELD_NUMBER: _ClassVar[int]
    INTERIM_RESULTS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTING_FIELD_NUMBER: _ClassVar[int]
    INTERIM_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    PHRASES_FIELD_NUMBER: _ClassVar[int]
    DISABLE_DEFAULT_PHRASES_FIELD_NUMBER: _ClassVar[int]
    SPECULATIVE_RESULTS_FIELD_NUMBER: _ClassVar[int]
    encoding: _common_pb2.AudioEncoding
    sample_rate_hz: int
    language_code: str
    interim_results: bool
    endpointing: EndpointingConfig
    interim_interval_ms: int
    phrases: _containers.RepeatedCompositeFieldContainer[SpeechPhrase]
    disable_default_phrases: bool
    speculative_results: bool
    def __init__(self, encoding: _Optional[_Union[_common_pb2.AudioEncoding, str]] = ..., sample_rate_hz: _Optional[int] = ..., language_code: _Optional[str] = ..., interim_results: _Optional[bool] = ..., endpointing: _Optional[_Union[EndpointingConfig, _Mapping]] = ..., interim_interval_ms: _Optional[int] = ..., phrases: _Optional[_Iterable[_Union[SpeechPhrase, _Mapping]]] = ..., disable_default_phrases: _Optional[bool] = ..., speculative_results: _Optional[bool] = ...) -> None: ...

class RecognizerControl(_message.Message):
    __slots__ = ("action", "silence_ms", "utterance_index")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[RecognizerControl.Action]
        END_OF_UTTERANCE: _ClassVar[RecognizerControl.Action]
        SET_UTTERANCE_SILENCE: _ClassVar[RecognizerControl.Action]
    ACTION_UNSPECIFIED: RecognizerControl.Action
    END_OF_UTTERANCE: RecognizerControl.Action
    SET_UTTERANCE_SILENCE: RecognizerControl.Action
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SILENCE_MS_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_INDEX_FIELD_NUMBER: _ClassVar[int]
    action: RecognizerControl.Action
    silence_ms: int
    utterance_index: int
    def __init__(self, action: _Optional[_Union[RecognizerControl.Action, str]] = ..., silence_ms: _Optional[int] = ..., utterance_index: _Optional[int] = ...) -> None: ...

class StreamingRecognizeRequest(_message.Message):
    __slots__ = ("config", "audio", "control")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    config: RecognitionConfig
    audio: bytes
    control: RecognizerControl
    def __init__(self, config: _Optional[_Union[RecognitionConfig, _Mapping]] = ..., audio: _Optional[bytes] = ..., control: _Optional[_Union[RecognizerControl, _Mapping]] = ...) -> None: ...

class SpeechResult(_message.Message):
    __slots__ = ("text", "is_final", "stability", "confidence", "start_s", "end_s", "endpoint_reason", "utterance_index", "latency_ms", "sent_unix_ns", "boosted_phrases", "speculative", "withdrawn")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IS_FINAL_FIELD_NUMBER: _ClassVar[int]
    STABILITY_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_REASON_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_INDEX_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    SENT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    BOOSTED_PHRASES_FIELD_NUMBER: _ClassVar[int]
    SPECULATIVE_FIELD_NUMBER: _ClassVar[int]
    WITHDRAWN_FIELD_NUMBER: _ClassVar[int]
    text: str
    is_final: bool
    stability: float
    confidence: float
    start_s: float
    end_s: float
    endpoint_reason: EndpointReason
    utterance_index: int
    latency_ms: float
    sent_unix_ns: int
    boosted_phrases: _containers.RepeatedScalarFieldContainer[str]
    speculative: bool
    withdrawn: bool
    def __init__(self, text: _Optional[str] = ..., is_final: _Optional[bool] = ..., stability: _Optional[float] = ..., confidence: _Optional[float] = ..., start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., endpoint_reason: _Optional[_Union[EndpointReason, str]] = ..., utterance_index: _Optional[int] = ..., latency_ms: _Optional[float] = ..., sent_unix_ns: _Optional[int] = ..., boosted_phrases: _Optional[_Iterable[str]] = ..., speculative: _Optional[bool] = ..., withdrawn: _Optional[bool] = ...) -> None: ...

class StreamingRecognizeResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: SpeechResult
    def __init__(self, result: _Optional[_Union[SpeechResult, _Mapping]] = ...) -> None: ...

class RecognizeRequest(_message.Message):
    __slots__ = ("config", "audio")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    config: RecognitionConfig
    audio: bytes
    def __init__(self, config: _Optional[_Union[RecognitionConfig, _Mapping]] = ..., audio: _Optional[bytes] = ...) -> None: ...

class RecognizeResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SpeechResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SpeechResult, _Mapping]]] = ...) -> None: ...
