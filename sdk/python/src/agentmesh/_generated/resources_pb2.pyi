from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConcurrencyPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONCURRENCY_POLICY_ENQUEUE: _ClassVar[ConcurrencyPolicy]
    CONCURRENCY_POLICY_REJECT: _ClassVar[ConcurrencyPolicy]
    CONCURRENCY_POLICY_INTERRUPT: _ClassVar[ConcurrencyPolicy]

class TaskStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATUS_UNSPECIFIED: _ClassVar[TaskStatus]
    TASK_STATUS_QUEUED: _ClassVar[TaskStatus]
    TASK_STATUS_RUNNING: _ClassVar[TaskStatus]
    TASK_STATUS_SUCCEEDED: _ClassVar[TaskStatus]
    TASK_STATUS_FAILED: _ClassVar[TaskStatus]
    TASK_STATUS_CANCELLED: _ClassVar[TaskStatus]
    TASK_STATUS_AWAITING_APPROVAL: _ClassVar[TaskStatus]
CONCURRENCY_POLICY_ENQUEUE: ConcurrencyPolicy
CONCURRENCY_POLICY_REJECT: ConcurrencyPolicy
CONCURRENCY_POLICY_INTERRUPT: ConcurrencyPolicy
TASK_STATUS_UNSPECIFIED: TaskStatus
TASK_STATUS_QUEUED: TaskStatus
TASK_STATUS_RUNNING: TaskStatus
TASK_STATUS_SUCCEEDED: TaskStatus
TASK_STATUS_FAILED: TaskStatus
TASK_STATUS_CANCELLED: TaskStatus
TASK_STATUS_AWAITING_APPROVAL: TaskStatus

class AgentSpec(_message.Message):
    __slots__ = ("model", "system_prompt", "temperature", "max_tokens", "scaling", "provider", "fallback_models", "tools", "memory", "max_steps", "concurrency", "resources", "record_content")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SCALING_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_MODELS_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    RECORD_CONTENT_FIELD_NUMBER: _ClassVar[int]
    model: str
    system_prompt: str
    temperature: float
    max_tokens: int
    scaling: AgentScaling
    provider: str
    fallback_models: _containers.RepeatedScalarFieldContainer[str]
    tools: _containers.RepeatedCompositeFieldContainer[AgentTool]
    memory: AgentMemory
    max_steps: int
    concurrency: ConcurrencyPolicy
    resources: AgentResources
    record_content: bool
    def __init__(self, model: _Optional[str] = ..., system_prompt: _Optional[str] = ..., temperature: _Optional[float] = ..., max_tokens: _Optional[int] = ..., scaling: _Optional[_Union[AgentScaling, _Mapping]] = ..., provider: _Optional[str] = ..., fallback_models: _Optional[_Iterable[str]] = ..., tools: _Optional[_Iterable[_Union[AgentTool, _Mapping]]] = ..., memory: _Optional[_Union[AgentMemory, _Mapping]] = ..., max_steps: _Optional[int] = ..., concurrency: _Optional[_Union[ConcurrencyPolicy, str]] = ..., resources: _Optional[_Union[AgentResources, _Mapping]] = ..., record_content: _Optional[bool] = ...) -> None: ...

class AgentMemory(_message.Message):
    __slots__ = ("type", "ttl_seconds", "max_history")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_HISTORY_FIELD_NUMBER: _ClassVar[int]
    type: str
    ttl_seconds: int
    max_history: int
    def __init__(self, type: _Optional[str] = ..., ttl_seconds: _Optional[int] = ..., max_history: _Optional[int] = ...) -> None: ...

class AgentResources(_message.Message):
    __slots__ = ("cpu_request", "cpu_limit", "memory_request", "memory_limit")
    CPU_REQUEST_FIELD_NUMBER: _ClassVar[int]
    CPU_LIMIT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MEMORY_LIMIT_FIELD_NUMBER: _ClassVar[int]
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    def __init__(self, cpu_request: _Optional[str] = ..., cpu_limit: _Optional[str] = ..., memory_request: _Optional[str] = ..., memory_limit: _Optional[str] = ...) -> None: ...

class AgentTool(_message.Message):
    __slots__ = ("ref", "name", "inline")
    REF_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    INLINE_FIELD_NUMBER: _ClassVar[int]
    ref: str
    name: str
    inline: ToolSpec
    def __init__(self, ref: _Optional[str] = ..., name: _Optional[str] = ..., inline: _Optional[_Union[ToolSpec, _Mapping]] = ...) -> None: ...

class ToolSpec(_message.Message):
    __slots__ = ("type", "description", "parameters_json", "config_json", "timeout_ms", "retries", "authentication")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_JSON_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATION_FIELD_NUMBER: _ClassVar[int]
    type: str
    description: str
    parameters_json: str
    config_json: str
    timeout_ms: int
    retries: int
    authentication: ToolAuthentication
    def __init__(self, type: _Optional[str] = ..., description: _Optional[str] = ..., parameters_json: _Optional[str] = ..., config_json: _Optional[str] = ..., timeout_ms: _Optional[int] = ..., retries: _Optional[int] = ..., authentication: _Optional[_Union[ToolAuthentication, _Mapping]] = ...) -> None: ...

class ToolAuthentication(_message.Message):
    __slots__ = ("bearer_env", "bearer_file")
    BEARER_ENV_FIELD_NUMBER: _ClassVar[int]
    BEARER_FILE_FIELD_NUMBER: _ClassVar[int]
    bearer_env: str
    bearer_file: str
    def __init__(self, bearer_env: _Optional[str] = ..., bearer_file: _Optional[str] = ...) -> None: ...

class Tool(_message.Message):
    __slots__ = ("tenant", "name", "spec", "version", "created_at_ms", "updated_at_ms")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    spec: ToolSpec
    version: int
    created_at_ms: int
    updated_at_ms: int
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ..., spec: _Optional[_Union[ToolSpec, _Mapping]] = ..., version: _Optional[int] = ..., created_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ...) -> None: ...

class ResolvedTool(_message.Message):
    __slots__ = ("name", "spec", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    spec: ToolSpec
    version: int
    def __init__(self, name: _Optional[str] = ..., spec: _Optional[_Union[ToolSpec, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class AgentScaling(_message.Message):
    __slots__ = ("min_replicas", "max_replicas", "target_queue_lag_per_replica", "activation_queue_lag", "polling_interval_seconds", "cooldown_seconds", "scale_down_stabilization_seconds")
    MIN_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    MAX_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    TARGET_QUEUE_LAG_PER_REPLICA_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_QUEUE_LAG_FIELD_NUMBER: _ClassVar[int]
    POLLING_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SCALE_DOWN_STABILIZATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    min_replicas: int
    max_replicas: int
    target_queue_lag_per_replica: int
    activation_queue_lag: int
    polling_interval_seconds: int
    cooldown_seconds: int
    scale_down_stabilization_seconds: int
    def __init__(self, min_replicas: _Optional[int] = ..., max_replicas: _Optional[int] = ..., target_queue_lag_per_replica: _Optional[int] = ..., activation_queue_lag: _Optional[int] = ..., polling_interval_seconds: _Optional[int] = ..., cooldown_seconds: _Optional[int] = ..., scale_down_stabilization_seconds: _Optional[int] = ...) -> None: ...

class Agent(_message.Message):
    __slots__ = ("tenant", "name", "spec", "version", "created_at_ms", "updated_at_ms")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    spec: AgentSpec
    version: int
    created_at_ms: int
    updated_at_ms: int
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ..., spec: _Optional[_Union[AgentSpec, _Mapping]] = ..., version: _Optional[int] = ..., created_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ...) -> None: ...

class PendingApproval(_message.Message):
    __slots__ = ("call_id", "tool", "arguments", "prompt", "expires_at_ms", "on_timeout", "step")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ON_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    tool: str
    arguments: str
    prompt: str
    expires_at_ms: int
    on_timeout: str
    step: int
    def __init__(self, call_id: _Optional[str] = ..., tool: _Optional[str] = ..., arguments: _Optional[str] = ..., prompt: _Optional[str] = ..., expires_at_ms: _Optional[int] = ..., on_timeout: _Optional[str] = ..., step: _Optional[int] = ...) -> None: ...

class TokenUsage(_message.Message):
    __slots__ = ("input_tokens", "output_tokens")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("id", "tenant", "agent", "agent_version", "input", "status", "output", "error", "usage", "attempts", "cancel_requested", "created_at_ms", "updated_at_ms", "started_at_ms", "finished_at_ms", "session_id", "steps", "approval", "parent_task_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_FIELD_NUMBER: _ClassVar[int]
    PARENT_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant: str
    agent: str
    agent_version: int
    input: str
    status: TaskStatus
    output: str
    error: str
    usage: TokenUsage
    attempts: int
    cancel_requested: bool
    created_at_ms: int
    updated_at_ms: int
    started_at_ms: int
    finished_at_ms: int
    session_id: str
    steps: int
    approval: PendingApproval
    parent_task_id: str
    def __init__(self, id: _Optional[str] = ..., tenant: _Optional[str] = ..., agent: _Optional[str] = ..., agent_version: _Optional[int] = ..., input: _Optional[str] = ..., status: _Optional[_Union[TaskStatus, str]] = ..., output: _Optional[str] = ..., error: _Optional[str] = ..., usage: _Optional[_Union[TokenUsage, _Mapping]] = ..., attempts: _Optional[int] = ..., cancel_requested: _Optional[bool] = ..., created_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ..., started_at_ms: _Optional[int] = ..., finished_at_ms: _Optional[int] = ..., session_id: _Optional[str] = ..., steps: _Optional[int] = ..., approval: _Optional[_Union[PendingApproval, _Mapping]] = ..., parent_task_id: _Optional[str] = ...) -> None: ...
