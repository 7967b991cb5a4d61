from protos import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecommendCall(_message.Message):
    __slots__ = ("header", "request")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    header: _common_pb2.CallHeader
    request: RecommendRequest
    def __init__(self, header: _Optional[_Union[_common_pb2.CallHeader, _Mapping]] = ..., request: _Optional[_Union[RecommendRequest, _Mapping]] = ...) -> None: ...

class RecommendCallReply(_message.Message):
    __slots__ = ("status", "response")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.CallStatus
    response: RecommendResponse
    def __init__(self, status: _Optional[_Union[_common_pb2.CallStatus, _Mapping]] = ..., response: _Optional[_Union[RecommendResponse, _Mapping]] = ...) -> None: ...

class Filters(_message.Message):
    __slots__ = ("genres", "year_min", "year_max", "exclude_seen", "exclude_item_ids")
    GENRES_FIELD_NUMBER: _ClassVar[int]
    YEAR_MIN_FIELD_NUMBER: _ClassVar[int]
    YEAR_MAX_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_SEEN_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    genres: _containers.RepeatedScalarFieldContainer[str]
    year_min: int
    year_max: int
    exclude_seen: bool
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, genres: _Optional[_Iterable[str]] = ..., year_min: _Optional[int] = ..., year_max: _Optional[int] = ..., exclude_seen: _Optional[bool] = ..., exclude_item_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class RecommendRequest(_message.Message):
    __slots__ = ("session_id", "query_embedding", "filters", "k", "similar_to_item_id", "popularity_only", "preview")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    SIMILAR_TO_ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    POPULARITY_ONLY_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    query_embedding: _containers.RepeatedScalarFieldContainer[float]
    filters: Filters
    k: int
    similar_to_item_id: int
    popularity_only: bool
    preview: bool
    def __init__(self, session_id: _Optional[str] = ..., query_embedding: _Optional[_Iterable[float]] = ..., filters: _Optional[_Union[Filters, _Mapping]] = ..., k: _Optional[int] = ..., similar_to_item_id: _Optional[int] = ..., popularity_only: _Optional[bool] = ..., preview: _Optional[bool] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("item_id", "title", "year", "genres", "score", "reason")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    YEAR_FIELD_NUMBER: _ClassVar[int]
    GENRES_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    item_id: int
    title: str
    year: int
    genres: _containers.RepeatedScalarFieldContainer[str]
    score: float
    reason: str
    def __init__(self, item_id: _Optional[int] = ..., title: _Optional[str] = ..., year: _Optional[int] = ..., genres: _Optional[_Iterable[str]] = ..., score: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("items", "strategy", "empty_reason")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    EMPTY_REASON_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    strategy: str
    empty_reason: str
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., strategy: _Optional[str] = ..., empty_reason: _Optional[str] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("session_id", "item_id", "rating")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    item_id: int
    rating: float
    def __init__(self, session_id: _Optional[str] = ..., item_id: _Optional[int] = ..., rating: _Optional[float] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("ratings_in_session",)
    RATINGS_IN_SESSION_FIELD_NUMBER: _ClassVar[int]
    ratings_in_session: int
    def __init__(self, ratings_in_session: _Optional[int] = ...) -> None: ...

class GetItemsRequest(_message.Message):
    __slots__ = ("item_ids",)
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, item_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class GetItemsResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ...) -> None: ...

class MarkShownRequest(_message.Message):
    __slots__ = ("session_id", "item_ids")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, session_id: _Optional[str] = ..., item_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class MarkShownResponse(_message.Message):
    __slots__ = ("shown_in_session",)
    SHOWN_IN_SESSION_FIELD_NUMBER: _ClassVar[int]
    shown_in_session: int
    def __init__(self, shown_in_session: _Optional[int] = ...) -> None: ...
