"""A task's events as typed values.

``WatchTask`` streams ``TaskEventEnvelope`` messages (the stream sequence and
a ``TaskEvent`` whose ``kind`` is a oneof); :func:`from_envelope` turns each
into one of the frozen dataclasses below, which all carry ``seq``,
``task_id``, ``at_ms`` and the generated message as ``raw`` for anything
not lifted into a field. :data:`TERMINAL` lists the types that end a task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional, Tuple

from ._generated import bus_pb2, control_pb2

__all__ = [
    "Event",
    "Started",
    "Delta",
    "ModelStep",
    "ToolCall",
    "ToolCallStarted",
    "ToolResult",
    "ApprovalRequested",
    "ApprovalResolved",
    "Retrying",
    "CancelRequested",
    "Completed",
    "Failed",
    "Cancelled",
    "Unknown",
    "TERMINAL",
    "from_envelope",
]


@dataclass(frozen=True)
class Event:
    seq: int
    task_id: str
    at_ms: int
    raw: bus_pb2.TaskEvent = field(repr=False, compare=False)


@dataclass(frozen=True)
class Started(Event):
    """A worker began a delivery; ``attempt`` > 1 after a retry or a resume."""

    attempt: int = 0
    worker: str = ""


@dataclass(frozen=True)
class Delta(Event):
    """A piece of the answer as the model streams it."""

    content: str = ""
    attempt: int = 0
    index: int = 0


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    #: The arguments as the model wrote them (JSON text, not validated).
    arguments: str

    def args(self) -> Any:
        """The arguments parsed as JSON."""
        return json.loads(self.arguments) if self.arguments else {}


@dataclass(frozen=True)
class ModelStep(Event):
    """One model call of the tool loop, with the tool calls it asked for."""

    step: int = 0
    content: str = ""
    tool_calls: Tuple[ToolCall, ...] = ()
    model: str = ""
    finish_reason: str = ""
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class ToolCallStarted(Event):
    step: int = 0
    call: Optional[ToolCall] = None


@dataclass(frozen=True)
class ToolResult(Event):
    step: int = 0
    call_id: str = ""
    name: str = ""
    output: str = ""
    is_error: bool = False
    duration_ms: int = 0


@dataclass(frozen=True)
class ApprovalRequested(Event):
    """The task paused on a ``human`` tool: approve or reject it."""

    call_id: str = ""
    tool: str = ""
    arguments: str = ""
    prompt: str = ""
    expires_at_ms: int = 0
    on_timeout: str = ""


@dataclass(frozen=True)
class ApprovalResolved(Event):
    call_id: str = ""
    approved: bool = False
    comment: str = ""
    by: str = ""
    timed_out: bool = False


@dataclass(frozen=True)
class Retrying(Event):
    attempt: int = 0
    error: str = ""
    backoff_ms: int = 0


@dataclass(frozen=True)
class CancelRequested(Event):
    pass


@dataclass(frozen=True)
class Completed(Event):
    """The final answer."""

    output: str = ""
    model: str = ""
    finish_reason: str = ""
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class Failed(Event):
    error: str = ""
    reason: str = ""
    attempts: int = 0


@dataclass(frozen=True)
class Cancelled(Event):
    reason: str = ""


@dataclass(frozen=True)
class Unknown(Event):
    """An event kind newer than this SDK; see ``raw``."""

    kind: str = ""


TERMINAL = (Completed, Failed, Cancelled)


def _call(call: Any) -> ToolCall:
    return ToolCall(id=call.id, name=call.name, arguments=call.arguments)


def from_envelope(envelope: control_pb2.TaskEventEnvelope) -> Event:
    """The typed event of one ``WatchTask`` message."""
    ev = envelope.event
    base = dict(seq=envelope.seq, task_id=ev.task_id, at_ms=ev.at_ms, raw=ev)
    kind = ev.WhichOneof("kind")
    if kind == "started":
        return Started(**base, attempt=ev.started.attempt, worker=ev.started.worker)
    if kind == "delta":
        d = ev.delta
        return Delta(**base, content=d.content, attempt=d.attempt, index=d.index)
    if kind == "model_step":
        m = ev.model_step
        return ModelStep(
            **base,
            step=m.step,
            content=m.content,
            tool_calls=tuple(_call(c) for c in m.tool_calls),
            model=m.model,
            finish_reason=m.finish_reason,
            input_tokens=m.usage.input_tokens,
            output_tokens=m.usage.output_tokens,
        )
    if kind == "tool_call":
        return ToolCallStarted(**base, step=ev.tool_call.step, call=_call(ev.tool_call.call))
    if kind == "tool_result":
        r = ev.tool_result
        return ToolResult(
            **base,
            step=r.step,
            call_id=r.call_id,
            name=r.name,
            output=r.output,
            is_error=r.is_error,
            duration_ms=r.duration_ms,
        )
    if kind == "approval_requested":
        a = ev.approval_requested.approval
        return ApprovalRequested(
            **base,
            call_id=a.call_id,
            tool=a.tool,
            arguments=a.arguments,
            prompt=a.prompt,
            expires_at_ms=a.expires_at_ms,
            on_timeout=a.on_timeout,
        )
    if kind == "approval_resolved":
        r = ev.approval_resolved
        return ApprovalResolved(
            **base,
            call_id=r.call_id,
            approved=r.approved,
            comment=r.comment,
            by=r.by,
            timed_out=r.timed_out,
        )
    if kind == "retrying":
        r = ev.retrying
        return Retrying(**base, attempt=r.attempt, error=r.error, backoff_ms=r.backoff_ms)
    if kind == "cancel_requested":
        return CancelRequested(**base)
    if kind == "completed":
        c = ev.completed
        return Completed(
            **base,
            output=c.output,
            model=c.model,
            finish_reason=c.finish_reason,
            input_tokens=c.usage.input_tokens,
            output_tokens=c.usage.output_tokens,
        )
    if kind == "failed":
        f = ev.failed
        return Failed(**base, error=f.error, reason=f.reason, attempts=f.attempts)
    if kind == "cancelled":
        return Cancelled(**base, reason=ev.cancelled.reason)
    return Unknown(**base, kind=kind or "")
