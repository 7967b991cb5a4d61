from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AudioEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_ENCODING_UNSPECIFIED: _ClassVar[AudioEncoding]
    LINEAR16: _ClassVar[AudioEncoding]
AUDIO_ENCODING_UNSPECIFIED: AudioEncoding
LINEAR16: AudioEncoding

class CallHeader(_message.Message):
    __slots__ = ("call_id", "timeout_ms", "metadata", "cancel")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    timeout_ms: float
    metadata: _containers.ScalarMap[str, str]
    cancel: bool
    def __init__(self, call_id: _Optional[int] = ..., timeout_ms: _Optional[float] = ..., metadata: _Optional[_Mapping[str, str]] = ..., cancel: _Optional[bool] = ...) -> None: ...

class CallIdOnly(_message.Message):
    __slots__ = ("header",)
    class Header(_message.Message):
        __slots__ = ("call_id",)
        CALL_ID_FIELD_NUMBER: _ClassVar[int]
        call_id: int
        def __init__(self, call_id: _Optional[int] = ...) -> None: ...
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: CallIdOnly.Header
    def __init__(self, header: _Optional[_Union[CallIdOnly.Header, _Mapping]] = ...) -> None: ...

class CallStatus(_message.Message):
    __slots__ = ("call_id", "code", "message", "done", "server_ms")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    SERVER_MS_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    code: int
    message: str
    done: bool
    server_ms: float
    def __init__(self, call_id: _Optional[int] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., done: _Optional[bool] = ..., server_ms: _Optional[float] = ...) -> None: ...
