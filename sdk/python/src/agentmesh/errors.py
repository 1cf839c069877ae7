"""The SDK's exceptions: one class per kind of failure a caller handles.

The gateway answers the same failure the same way on gRPC and REST: a
status code and a message of the form ``field: why`` for bad input, with a
``retry-after`` (seconds) on rate limits. :func:`from_rpc_error` turns a
failed gRPC call into one of the classes below.
"""

from __future__ import annotations

from typing import Optional

import grpc

__all__ = [
    "AgentmeshError",
    "InvalidArgument",
    "Unauthenticated",
    "PermissionDenied",
    "NotFound",
    "Conflict",
    "RateLimited",
    "Unavailable",
    "from_rpc_error",
]


class AgentmeshError(Exception):
    """Any failure the gateway (or the SDK, before a call) reports."""

    def __init__(self, message: str, *, code: str = "unknown") -> None:
        super().__init__(message)
        self.message = message
        #: The gateway's error code (``invalid_argument``, ``not_found``, ...).
        self.code = code


class InvalidArgument(AgentmeshError):
    """Bad input; :attr:`field` names it (``spec.model``, ``input``, ...)."""

    def __init__(self, message: str, *, field: Optional[str] = None) -> None:
        super().__init__(message, code="invalid_argument")
        self.field = field if field is not None else field_of(message)


class Unauthenticated(AgentmeshError):
    """No token, or one the gateway does not accept."""


class PermissionDenied(AgentmeshError):
    """The token's roles do not allow the operation."""


class NotFound(AgentmeshError):
    """No such resource for the token's tenant (another tenant's included)."""


class Conflict(AgentmeshError):
    """The resource's state forbids the operation (a task already decided)."""


class RateLimited(AgentmeshError):
    """The tenant's limit was hit; retry after :attr:`retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: Optional[float] = None) -> None:
        super().__init__(message, code="rate_limited")
        self.retry_after = retry_after


class Unavailable(AgentmeshError):
    """The gateway or a service behind it cannot answer now; retryable."""


def field_of(message: str) -> Optional[str]:
    """The field of a ``field: why`` message, as the gateway writes them."""
    head, sep, _ = message.partition(": ")
    if sep and head and " " not in head:
        return head
    return None


_BY_GRPC = {
    grpc.StatusCode.UNAUTHENTICATED: (Unauthenticated, "unauthenticated"),
    grpc.StatusCode.PERMISSION_DENIED: (PermissionDenied, "permission_denied"),
    grpc.StatusCode.NOT_FOUND: (NotFound, "not_found"),
    grpc.StatusCode.FAILED_PRECONDITION: (Conflict, "failed_precondition"),
    grpc.StatusCode.ALREADY_EXISTS: (Conflict, "already_exists"),
    grpc.StatusCode.ABORTED: (Conflict, "aborted"),
    grpc.StatusCode.UNAVAILABLE: (Unavailable, "unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (Unavailable, "deadline_exceeded"),
}


def _retry_after(value: Optional[str]) -> Optional[float]:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def from_rpc_error(error: grpc.RpcError) -> AgentmeshError:
    """The exception for a failed gRPC call (sync or ``grpc.aio``)."""
    code = error.code()
    message = error.details() or str(code)
    if code == grpc.StatusCode.INVALID_ARGUMENT or code == grpc.StatusCode.OUT_OF_RANGE:
        return InvalidArgument(message)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        metadata = error.trailing_metadata() or ()
        after = next((v for k, v in metadata if k == "retry-after"), None)
        return RateLimited(message, retry_after=_retry_after(after))
    cls, name = _BY_GRPC.get(code, (AgentmeshError, code.name.lower()))
    return cls(message, code=name)
