from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QuotaValues(_message.Message):
    __slots__ = ("max_running_tasks", "tasks_per_minute", "weight")
    MAX_RUNNING_TASKS_FIELD_NUMBER: _ClassVar[int]
    TASKS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    max_running_tasks: int
    tasks_per_minute: int
    weight: int
    def __init__(self, max_running_tasks: _Optional[int] = ..., tasks_per_minute: _Optional[int] = ..., weight: _Optional[int] = ...) -> None: ...

class TenantQuota(_message.Message):
    __slots__ = ("tenant", "effective", "overrides", "defaults", "running_tasks", "queued_tasks", "submitted_last_minute", "updated_at_ms", "updated_by")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_TASKS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_TASKS_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_LAST_MINUTE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BY_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    effective: QuotaValues
    overrides: QuotaValues
    defaults: QuotaValues
    running_tasks: int
    queued_tasks: int
    submitted_last_minute: int
    updated_at_ms: int
    updated_by: str
    def __init__(self, tenant: _Optional[str] = ..., effective: _Optional[_Union[QuotaValues, _Mapping]] = ..., overrides: _Optional[_Union[QuotaValues, _Mapping]] = ..., defaults: _Optional[_Union[QuotaValues, _Mapping]] = ..., running_tasks: _Optional[int] = ..., queued_tasks: _Optional[int] = ..., submitted_last_minute: _Optional[int] = ..., updated_at_ms: _Optional[int] = ..., updated_by: _Optional[str] = ...) -> None: ...

class GetQuotaRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PutQuotaRequest(_message.Message):
    __slots__ = ("overrides",)
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    overrides: QuotaValues
    def __init__(self, overrides: _Optional[_Union[QuotaValues, _Mapping]] = ...) -> None: ...
