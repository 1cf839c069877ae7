"""What the sync and the async client share: addresses and requests."""

from __future__ import annotations

import urllib.parse
from typing import Any, Optional, Tuple

from ._generated import control_pb2, resources_pb2
from .errors import InvalidArgument

_STATUS = {
    "queued": resources_pb2.TASK_STATUS_QUEUED,
    "running": resources_pb2.TASK_STATUS_RUNNING,
    "succeeded": resources_pb2.TASK_STATUS_SUCCEEDED,
    "failed": resources_pb2.TASK_STATUS_FAILED,
    "cancelled": resources_pb2.TASK_STATUS_CANCELLED,
    "awaiting_approval": resources_pb2.TASK_STATUS_AWAITING_APPROVAL,
}


def target(url: str) -> Tuple[str, bool]:
    """``(host:port, tls)`` of ``http://h:p``, ``https://h:p`` or ``h:p``."""
    if "://" not in url:
        return url, False
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InvalidArgument(f"url: {url!r} is not http(s)://host:port", field="url")
    tls = parsed.scheme == "https"
    port = parsed.port or (443 if tls else 80)
    return f"{parsed.hostname}:{port}", tls


def metadata(token: str) -> Tuple[Tuple[str, str], ...]:
    if not token:
        raise InvalidArgument("token: is required (a JWT or an API key)", field="token")
    return (("authorization", f"Bearer {token}"),)


def task_status(status: Optional[str]) -> int:
    if status is None or status == "":
        return resources_pb2.TASK_STATUS_UNSPECIFIED
    try:
        return _STATUS[status]
    except KeyError:
        raise InvalidArgument(
            f"status: expected one of {', '.join(_STATUS)}", field="status"
        ) from None


def status_name(value: int) -> str:
    """``succeeded`` for ``TASK_STATUS_SUCCEEDED`` (as REST spells it)."""
    for name, number in _STATUS.items():
        if number == value:
            return name
    return "unspecified"


def submit_request(
    agent: str, input: str, session: Optional[str], idempotency_key: Optional[str]
) -> control_pb2.SubmitTaskRequest:
    return control_pb2.SubmitTaskRequest(
        agent=agent, input=input, session_id=session or "", idempotency_key=idempotency_key or ""
    )


def list_request(
    agent: Optional[str], status: Optional[str], page_size: int, page_token: Optional[str]
) -> control_pb2.ListTasksRequest:
    return control_pb2.ListTasksRequest(
        agent=agent or "",
        status=task_status(status),
        page_size=page_size,
        page_token=page_token or "",
    )


def decide_request(
    task_id: str, approve: bool, comment: Optional[str], call_id: Optional[str]
) -> control_pb2.ResolveApprovalRequest:
    return control_pb2.ResolveApprovalRequest(
        id=task_id, approve=approve, comment=comment or "", call_id=call_id or ""
    )


def message(cls: Any, fields: dict) -> Any:
    """``cls(**fields)`` with an unknown field refused by name; ``None``
    values are left unset."""
    known = {f.name for f in cls.DESCRIPTOR.fields}
    for name in fields:
        if name not in known:
            raise InvalidArgument(
                f"{name}: unknown; expected one of {', '.join(sorted(known))}", field=name
            )
    return cls(**{k: v for k, v in fields.items() if v is not None})
