"""agentmesh: the Python SDK of the agentmesh platform.

``Client`` / ``AsyncClient`` talk to the gateway's public gRPC API (code
generated from proto/agentmesh/v1 into ``agentmesh._generated``); see
``agentmesh.client`` for an example.
"""

from .aio import AsyncClient, AsyncTaskRun
from .client import Client, TaskRun
from .errors import (
    AgentmeshError,
    Conflict,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from .events import (
    ApprovalRequested,
    ApprovalResolved,
    Cancelled,
    Completed,
    Delta,
    Event,
    Failed,
    ModelStep,
    Started,
    ToolCallStarted,
    ToolResult,
)
from ._common import status_name

__all__ = [
    "Client",
    "AsyncClient",
    "TaskRun",
    "AsyncTaskRun",
    "AgentmeshError",
    "Conflict",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "Unauthenticated",
    "Unavailable",
    "Event",
    "Started",
    "Delta",
    "ModelStep",
    "ToolCallStarted",
    "ToolResult",
    "ApprovalRequested",
    "ApprovalResolved",
    "Completed",
    "Failed",
    "Cancelled",
    "status_name",
]
