from protos import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UnderstandCall(_message.Message):
    __slots__ = ("header", "request")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    header: _common_pb2.CallHeader
    request: UnderstandRequest
    def __init__(self, header: _Optional[_Union[_common_pb2.CallHeader, _Mapping]] = ..., request: _Optional[_Union[UnderstandRequest, _Mapping]] = ...) -> None: ...

class UnderstandCallReply(_message.Message):
    __slots__ = ("status", "response")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.CallStatus
    response: UnderstandResponse
    def __init__(self, status: _Optional[_Union[_common_pb2.CallStatus, _Mapping]] = ..., response: _Optional[_Union[UnderstandResponse, _Mapping]] = ...) -> None: ...

class UnderstandRequest(_message.Message):
    __slots__ = ("text", "session_id")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    text: str
    session_id: str
    def __init__(self, text: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class Entity(_message.Message):
    __slots__ = ("type", "value", "text", "start", "end", "score", "item_id")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    type: str
    value: str
    text: str
    start: int
    end: int
    score: float
    item_id: int
    def __init__(self, type: _Optional[str] = ..., value: _Optional[str] = ..., text: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., score: _Optional[float] = ..., item_id: _Optional[int] = ...) -> None: ...

class UnderstandResponse(_message.Message):
    __slots__ = ("intent", "confidence", "entities", "embedding", "normalized_text")
    INTENT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    NORMALIZED_TEXT_FIELD_NUMBER: _ClassVar[int]
    intent: str
    confidence: float
    entities: _containers.RepeatedCompositeFieldContainer[Entity]
    embedding: _containers.RepeatedScalarFieldContainer[float]
    normalized_text: str
    def __init__(self, intent: _Optional[str] = ..., confidence: _Optional[float] = ..., entities: _Optional[_Iterable[_Union[Entity, _Mapping]]] = ..., embedding: _Optional[_Iterable[float]] = ..., normalized_text: _Optional[str] = ...) -> None: ...
