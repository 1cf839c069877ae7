from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListTracesRequest(_message.Message):
    __slots__ = ("agent", "session_id", "user_id", "from_ms", "to_ms", "status", "min_latency_ms", "min_cost", "page_size", "page_token")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_MS_FIELD_NUMBER: _ClassVar[int]
    TO_MS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MIN_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    MIN_COST_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    agent: str
    session_id: str
    user_id: str
    from_ms: int
    to_ms: int
    status: str
    min_latency_ms: int
    min_cost: float
    page_size: int
    page_token: str
    def __init__(self, agent: _Optional[str] = ..., session_id: _Optional[str] = ..., user_id: _Optional[str] = ..., from_ms: _Optional[int] = ..., to_ms: _Optional[int] = ..., status: _Optional[str] = ..., min_latency_ms: _Optional[int] = ..., min_cost: _Optional[float] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class TraceSummary(_message.Message):
    __slots__ = ("trace_id", "name", "agent", "session_id", "user_id", "start_ms", "end_ms", "latency_ms", "observation_count", "error_count", "input_tokens", "output_tokens", "total_tokens", "total_cost_usd")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_COUNT_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_USD_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    name: str
    agent: str
    session_id: str
    user_id: str
    start_ms: int
    end_ms: int
    latency_ms: int
    observation_count: int
    error_count: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    total_cost_usd: float
    def __init__(self, trace_id: _Optional[str] = ..., name: _Optional[str] = ..., agent: _Optional[str] = ..., session_id: _Optional[str] = ..., user_id: _Optional[str] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., latency_ms: _Optional[int] = ..., observation_count: _Optional[int] = ..., error_count: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ..., total_cost_usd: _Optional[float] = ...) -> None: ...

class ListTracesResponse(_message.Message):
    __slots__ = ("traces", "next_page_token")
    TRACES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    traces: _containers.RepeatedCompositeFieldContainer[TraceSummary]
    next_page_token: str
    def __init__(self, traces: _Optional[_Iterable[_Union[TraceSummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetTraceRequest(_message.Message):
    __slots__ = ("trace_id",)
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    def __init__(self, trace_id: _Optional[str] = ...) -> None: ...

class TraceObservation(_message.Message):
    __slots__ = ("span_id", "parent_span_id", "name", "type", "start_ms", "end_ms", "latency_ms", "status_code", "status_message", "level", "model", "input_tokens", "output_tokens", "total_input_tokens", "total_output_tokens", "input_cost_usd", "output_cost_usd", "cost_usd", "total_cost_usd", "attributes_json", "depth_capped", "children", "completion_start_ms", "time_to_first_token_ms", "input_json", "output_json")
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    INPUT_COST_USD_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_COST_USD_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_USD_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_JSON_FIELD_NUMBER: _ClassVar[int]
    DEPTH_CAPPED_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_START_MS_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_MS_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    span_id: str
    parent_span_id: str
    name: str
    type: str
    start_ms: int
    end_ms: int
    latency_ms: int
    status_code: str
    status_message: str
    level: str
    model: str
    input_tokens: int
    output_tokens: int
    total_input_tokens: int
    total_output_tokens: int
    input_cost_usd: float
    output_cost_usd: float
    cost_usd: float
    total_cost_usd: float
    attributes_json: str
    depth_capped: bool
    children: _containers.RepeatedCompositeFieldContainer[TraceObservation]
    completion_start_ms: int
    time_to_first_token_ms: int
    input_json: str
    output_json: str
    def __init__(self, span_id: _Optional[str] = ..., parent_span_id: _Optional[str] = ..., name: _Optional[str] = ..., type: _Optional[str] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., latency_ms: _Optional[int] = ..., status_code: _Optional[str] = ..., status_message: _Optional[str] = ..., level: _Optional[str] = ..., model: _Optional[str] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., total_input_tokens: _Optional[int] = ..., total_output_tokens: _Optional[int] = ..., input_cost_usd: _Optional[float] = ..., output_cost_usd: _Optional[float] = ..., cost_usd: _Optional[float] = ..., total_cost_usd: _Optional[float] = ..., attributes_json: _Optional[str] = ..., depth_capped: _Optional[bool] = ..., children: _Optional[_Iterable[_Union[TraceObservation, _Mapping]]] = ..., completion_start_ms: _Optional[int] = ..., time_to_first_token_ms: _Optional[int] = ..., input_json: _Optional[str] = ..., output_json: _Optional[str] = ...) -> None: ...

class TraceScore(_message.Message):
    __slots__ = ("id", "trace_id", "observation_id", "name", "numeric_value", "string_value", "data_type", "comment", "created_at_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NUMERIC_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    DATA_TYPE_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    id: int
    trace_id: str
    observation_id: str
    name: str
    numeric_value: float
    string_value: str
    data_type: str
    comment: str
    created_at_ms: int
    def __init__(self, id: _Optional[int] = ..., trace_id: _Optional[str] = ..., observation_id: _Optional[str] = ..., name: _Optional[str] = ..., numeric_value: _Optional[float] = ..., string_value: _Optional[str] = ..., data_type: _Optional[str] = ..., comment: _Optional[str] = ..., created_at_ms: _Optional[int] = ...) -> None: ...

class TraceTree(_message.Message):
    __slots__ = ("trace", "observations", "scores")
    TRACE_FIELD_NUMBER: _ClassVar[int]
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    trace: TraceSummary
    observations: _containers.RepeatedCompositeFieldContainer[TraceObservation]
    scores: _containers.RepeatedCompositeFieldContainer[TraceScore]
    def __init__(self, trace: _Optional[_Union[TraceSummary, _Mapping]] = ..., observations: _Optional[_Iterable[_Union[TraceObservation, _Mapping]]] = ..., scores: _Optional[_Iterable[_Union[TraceScore, _Mapping]]] = ...) -> None: ...

class TraceAggregatesRequest(_message.Message):
    __slots__ = ("by", "interval", "from_ms", "to_ms", "agent", "model")
    BY_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    FROM_MS_FIELD_NUMBER: _ClassVar[int]
    TO_MS_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    by: str
    interval: str
    from_ms: int
    to_ms: int
    agent: str
    model: str
    def __init__(self, by: _Optional[str] = ..., interval: _Optional[str] = ..., from_ms: _Optional[int] = ..., to_ms: _Optional[int] = ..., agent: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class TraceLatency(_message.Message):
    __slots__ = ("p50_ms", "p95_ms", "avg_ms", "max_ms")
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P95_MS_FIELD_NUMBER: _ClassVar[int]
    AVG_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_MS_FIELD_NUMBER: _ClassVar[int]
    p50_ms: float
    p95_ms: float
    avg_ms: float
    max_ms: int
    def __init__(self, p50_ms: _Optional[float] = ..., p95_ms: _Optional[float] = ..., avg_ms: _Optional[float] = ..., max_ms: _Optional[int] = ...) -> None: ...

class TraceAggregateBucket(_message.Message):
    __slots__ = ("bucket_start_ms", "agent", "model", "count", "errors", "latency", "input_tokens", "output_tokens", "total_tokens", "cost_usd")
    BUCKET_START_MS_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    bucket_start_ms: int
    agent: str
    model: str
    count: int
    errors: int
    latency: TraceLatency
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost_usd: float
    def __init__(self, bucket_start_ms: _Optional[int] = ..., agent: _Optional[str] = ..., model: _Optional[str] = ..., count: _Optional[int] = ..., errors: _Optional[int] = ..., latency: _Optional[_Union[TraceLatency, _Mapping]] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ..., cost_usd: _Optional[float] = ...) -> None: ...

class TraceAggregatesResponse(_message.Message):
    __slots__ = ("by", "unit", "interval_ms", "from_ms", "to_ms", "buckets")
    BY_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    FROM_MS_FIELD_NUMBER: _ClassVar[int]
    TO_MS_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    by: str
    unit: str
    interval_ms: int
    from_ms: int
    to_ms: int
    buckets: _containers.RepeatedCompositeFieldContainer[TraceAggregateBucket]
    def __init__(self, by: _Optional[str] = ..., unit: _Optional[str] = ..., interval_ms: _Optional[int] = ..., from_ms: _Optional[int] = ..., to_ms: _Optional[int] = ..., buckets: _Optional[_Iterable[_Union[TraceAggregateBucket, _Mapping]]] = ...) -> None: ...
