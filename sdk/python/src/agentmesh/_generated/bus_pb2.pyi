from . import resources_pb2 as _resources_pb2
from . import inference_pb2 as _inference_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskEnvelope(_message.Message):
    __slots__ = ("task_id", "tenant", "agent", "agent_version", "spec", "input", "submitted_at_ms", "tools", "session_id", "attempt_offset", "resolution", "parent_task_id", "depth")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    PARENT_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    tenant: str
    agent: str
    agent_version: int
    spec: _resources_pb2.AgentSpec
    input: str
    submitted_at_ms: int
    tools: _containers.RepeatedCompositeFieldContainer[_resources_pb2.ResolvedTool]
    session_id: str
    attempt_offset: int
    resolution: ApprovalResolved
    parent_task_id: str
    depth: int
    def __init__(self, task_id: _Optional[str] = ..., tenant: _Optional[str] = ..., agent: _Optional[str] = ..., agent_version: _Optional[int] = ..., spec: _Optional[_Union[_resources_pb2.AgentSpec, _Mapping]] = ..., input: _Optional[str] = ..., submitted_at_ms: _Optional[int] = ..., tools: _Optional[_Iterable[_Union[_resources_pb2.ResolvedTool, _Mapping]]] = ..., session_id: _Optional[str] = ..., attempt_offset: _Optional[int] = ..., resolution: _Optional[_Union[ApprovalResolved, _Mapping]] = ..., parent_task_id: _Optional[str] = ..., depth: _Optional[int] = ...) -> None: ...

class TaskEvent(_message.Message):
    __slots__ = ("task_id", "tenant", "at_ms", "started", "delta", "completed", "failed", "cancel_requested", "cancelled", "retrying", "model_step", "tool_call", "tool_result", "approval_requested", "approval_resolved")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    RETRYING_FIELD_NUMBER: _ClassVar[int]
    MODEL_STEP_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESULT_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_RESOLVED_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    tenant: str
    at_ms: int
    started: TaskStarted
    delta: TaskDelta
    completed: TaskCompleted
    failed: TaskFailed
    cancel_requested: TaskCancelRequested
    cancelled: TaskCancelled
    retrying: TaskRetrying
    model_step: ModelStep
    tool_call: ToolCallStarted
    tool_result: ToolCallResult
    approval_requested: ApprovalRequested
    approval_resolved: ApprovalResolved
    def __init__(self, task_id: _Optional[str] = ..., tenant: _Optional[str] = ..., at_ms: _Optional[int] = ..., started: _Optional[_Union[TaskStarted, _Mapping]] = ..., delta: _Optional[_Union[TaskDelta, _Mapping]] = ..., completed: _Optional[_Union[TaskCompleted, _Mapping]] = ..., failed: _Optional[_Union[TaskFailed, _Mapping]] = ..., cancel_requested: _Optional[_Union[TaskCancelRequested, _Mapping]] = ..., cancelled: _Optional[_Union[TaskCancelled, _Mapping]] = ..., retrying: _Optional[_Union[TaskRetrying, _Mapping]] = ..., model_step: _Optional[_Union[ModelStep, _Mapping]] = ..., tool_call: _Optional[_Union[ToolCallStarted, _Mapping]] = ..., tool_result: _Optional[_Union[ToolCallResult, _Mapping]] = ..., approval_requested: _Optional[_Union[ApprovalRequested, _Mapping]] = ..., approval_resolved: _Optional[_Union[ApprovalResolved, _Mapping]] = ...) -> None: ...

class TaskStarted(_message.Message):
    __slots__ = ("attempt", "worker")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    worker: str
    def __init__(self, attempt: _Optional[int] = ..., worker: _Optional[str] = ...) -> None: ...

class TaskDelta(_message.Message):
    __slots__ = ("attempt", "index", "content")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    index: int
    content: str
    def __init__(self, attempt: _Optional[int] = ..., index: _Optional[int] = ..., content: _Optional[str] = ...) -> None: ...

class TaskCompleted(_message.Message):
    __slots__ = ("output", "usage", "finish_reason", "model")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    output: str
    usage: _resources_pb2.TokenUsage
    finish_reason: str
    model: str
    def __init__(self, output: _Optional[str] = ..., usage: _Optional[_Union[_resources_pb2.TokenUsage, _Mapping]] = ..., finish_reason: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class TaskFailed(_message.Message):
    __slots__ = ("error", "reason", "attempts")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    error: str
    reason: str
    attempts: int
    def __init__(self, error: _Optional[str] = ..., reason: _Optional[str] = ..., attempts: _Optional[int] = ...) -> None: ...

class TaskCancelRequested(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TaskCancelled(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class TaskRetrying(_message.Message):
    __slots__ = ("attempt", "error", "backoff_ms")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_MS_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    error: str
    backoff_ms: int
    def __init__(self, attempt: _Optional[int] = ..., error: _Optional[str] = ..., backoff_ms: _Optional[int] = ...) -> None: ...

class ModelStep(_message.Message):
    __slots__ = ("attempt", "step", "content", "tool_calls", "usage", "model", "finish_reason")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    step: int
    content: str
    tool_calls: _containers.RepeatedCompositeFieldContainer[_inference_pb2.ToolCall]
    usage: _resources_pb2.TokenUsage
    model: str
    finish_reason: str
    def __init__(self, attempt: _Optional[int] = ..., step: _Optional[int] = ..., content: _Optional[str] = ..., tool_calls: _Optional[_Iterable[_Union[_inference_pb2.ToolCall, _Mapping]]] = ..., usage: _Optional[_Union[_resources_pb2.TokenUsage, _Mapping]] = ..., model: _Optional[str] = ..., finish_reason: _Optional[str] = ...) -> None: ...

class ToolCallStarted(_message.Message):
    __slots__ = ("attempt", "step", "call", "idempotency_key")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    step: int
    call: _inference_pb2.ToolCall
    idempotency_key: str
    def __init__(self, attempt: _Optional[int] = ..., step: _Optional[int] = ..., call: _Optional[_Union[_inference_pb2.ToolCall, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class ToolCallResult(_message.Message):
    __slots__ = ("attempt", "step", "call_id", "name", "output", "is_error", "duration_ms")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    IS_ERROR_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    step: int
    call_id: str
    name: str
    output: str
    is_error: bool
    duration_ms: int
    def __init__(self, attempt: _Optional[int] = ..., step: _Optional[int] = ..., call_id: _Optional[str] = ..., name: _Optional[str] = ..., output: _Optional[str] = ..., is_error: _Optional[bool] = ..., duration_ms: _Optional[int] = ...) -> None: ...

class ApprovalRequested(_message.Message):
    __slots__ = ("attempt", "approval")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    approval: _resources_pb2.PendingApproval
    def __init__(self, attempt: _Optional[int] = ..., approval: _Optional[_Union[_resources_pb2.PendingApproval, _Mapping]] = ...) -> None: ...

class ApprovalResolved(_message.Message):
    __slots__ = ("call_id", "approved", "comment", "by", "timed_out")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVED_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    approved: bool
    comment: str
    by: str
    timed_out: bool
    def __init__(self, call_id: _Optional[str] = ..., approved: _Optional[bool] = ..., comment: _Optional[str] = ..., by: _Optional[str] = ..., timed_out: _Optional[bool] = ...) -> None: ...
