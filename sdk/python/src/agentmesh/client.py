"""The blocking client: ``Client(url, token)`` over the gateway's public gRPC.

    from agentmesh import Client, Completed

    with Client("http://127.0.0.1:7000", token) as mesh:
        mesh.agents.apply(open("agent.yaml").read())
        run = mesh.tasks.run("assistant", "What is NATS?")
        for event in run:
            print(event)
        print(run.answer)

Every failed call raises an :class:`agentmesh.errors.AgentmeshError`
subclass; the generated messages (``agentmesh._generated``) are what the
resource calls return.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Optional, Union

import grpc

from . import _common, events, spec
from ._generated import (
    control_pb2,
    control_pb2_grpc,
    resources_pb2,
    traces_pb2,
    traces_pb2_grpc,
)
from .errors import AgentmeshError, from_rpc_error

__all__ = ["Client", "TaskRun"]


class Client:
    """A connection to the gateway's public gRPC port.

    ``token`` is a JWT or an API key, sent as ``authorization: Bearer``.
    ``timeout`` bounds each unary call, in seconds.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 30.0,
        credentials: Optional[grpc.ChannelCredentials] = None,
    ) -> None:
        address, tls = _common.target(url)
        self._metadata = _common.metadata(token)
        if tls or credentials is not None:
            creds = credentials or grpc.ssl_channel_credentials()
            self._channel = grpc.secure_channel(address, creds)
        else:
            self._channel = grpc.insecure_channel(address)
        self._timeout = timeout
        self.agents = Agents(self)
        self.tasks = Tasks(self)
        self.traces = Traces(self)

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Agents:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = control_pb2_grpc.AgentServiceStub(client._channel)

    def apply(
        self, document: Union[str, bytes, Mapping[str, Any]], *, name: Optional[str] = None
    ) -> control_pb2.ApplyAgentResponse:
        """Applies an Agent resource (YAML text or a dict); ``.changed`` is
        False when the spec equals the current version."""
        agent_name, agent_spec = spec.load_agent(document, name)
        request = control_pb2.ApplyAgentRequest(name=agent_name, spec=agent_spec)
        return self._client._call(self._stub.ApplyAgent, request)

    def get(self, name: str) -> resources_pb2.Agent:
        return self._client._call(self._stub.GetAgent, control_pb2.GetAgentRequest(name=name))


class TaskRun:
    """A submitted task; iterate it for its events, which end with the
    terminal one (:class:`~agentmesh.events.Completed` carries the answer)."""

    def __init__(self, tasks: "Tasks", task: resources_pb2.Task, timeout: Optional[float]) -> None:
        self.task = task
        self.id = task.id
        self.result: Optional[events.Event] = None
        self._tasks = tasks
        self._timeout = timeout

    def __iter__(self) -> Iterator[events.Event]:
        after = 0
        for event in self._tasks.watch(self.id, timeout=self._timeout):
            after = event.seq
            if isinstance(event, events.TERMINAL):
                self.result = event
            yield event
        if self.result is None:
            raise AgentmeshError(
                f"task {self.id}: the event stream ended after seq {after} without a terminal event"
            )

    def wait(self) -> events.Event:
        """Consumes the events; the terminal one."""
        for _ in self:
            pass
        assert self.result is not None
        return self.result

    @property
    def answer(self) -> Optional[str]:
        """The final answer once the task completed; None otherwise."""
        return self.result.output if isinstance(self.result, events.Completed) else None


class Tasks:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = control_pb2_grpc.TaskServiceStub(client._channel)

    def submit(
        self,
        agent: str,
        input: str,
        *,
        session: Optional[str] = None,
        idempotency_key: Optional[str] = None,
    ) -> resources_pb2.Task:
        request = _common.submit_request(agent, input, session, idempotency_key)
        return self._client._call(self._stub.SubmitTask, request).task

    def run(
        self,
        agent: str,
        input: str,
        session: Optional[str] = None,
        *,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> TaskRun:
        """Submits a task; iterate the answer for its events. ``timeout``
        bounds the whole stream (None: until the task ends)."""
        task = self.submit(agent, input, session=session, idempotency_key=idempotency_key)
        return TaskRun(self, task, timeout)

    def watch(
        self, task_id: str, *, after_seq: int = 0, timeout: Optional[float] = None
    ) -> Iterator[events.Event]:
        """A task's events from the start (or after ``after_seq``), then live
        until its terminal event."""
        request = control_pb2.WatchTaskRequest(id=task_id, after_seq=after_seq)
        stream = self._stub.WatchTask(request, metadata=self._client._metadata, timeout=timeout)
        try:
            for envelope in stream:
                yield events.from_envelope(envelope)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        finally:
            stream.cancel()

    def get(self, task_id: str) -> resources_pb2.Task:
        return self._client._call(self._stub.GetTask, control_pb2.GetTaskRequest(id=task_id))

    def list(
        self,
        *,
        agent: Optional[str] = None,
        status: Optional[str] = None,
        page_size: int = 0,
        page_token: Optional[str] = None,
    ) -> control_pb2.ListTasksResponse:
        """A page of tasks, newest first; ``status`` as REST spells it
        (``succeeded``, ``awaiting_approval``, ...)."""
        request = _common.list_request(agent, status, page_size, page_token)
        return self._client._call(self._stub.ListTasks, request)

    def cancel(self, task_id: str) -> resources_pb2.Task:
        return self._client._call(self._stub.CancelTask, control_pb2.CancelTaskRequest(id=task_id))

    def approve(
        self, task_id: str, comment: Optional[str] = None, *, call_id: Optional[str] = None
    ) -> resources_pb2.Task:
        """Approves the tool call the task awaits (a ``human`` tool)."""
        request = _common.decide_request(task_id, True, comment, call_id)
        return self._client._call(self._stub.ResolveApproval, request)

    def reject(
        self, task_id: str, comment: Optional[str] = None, *, call_id: Optional[str] = None
    ) -> resources_pb2.Task:
        request = _common.decide_request(task_id, False, comment, call_id)
        return self._client._call(self._stub.ResolveApproval, request)


class Traces:
    """Traces (``agentmesh.v1.TraceQuery``): the same data, filters and
    cursor as the REST API, for the token's tenant."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = traces_pb2_grpc.TraceQueryStub(client._channel)

    def get(self, trace_id: str) -> traces_pb2.TraceTree:
        """One trace: its summary, the observations as a tree, its scores."""
        request = traces_pb2.GetTraceRequest(trace_id=trace_id)
        return self._client._call(self._stub.GetTrace, request)

    def list(self, **filters: Any) -> traces_pb2.ListTracesResponse:
        """A page of traces, newest first; filters are ``ListTracesRequest``'s
        fields (``agent``, ``session_id``, ``status``, ``min_cost``,
        ``page_size``, ``page_token``, ...)."""
        request = _common.message(traces_pb2.ListTracesRequest, filters)
        return self._client._call(self._stub.ListTraces, request)

    def aggregates(self, **query: Any) -> traces_pb2.TraceAggregatesResponse:
        """Counts, latency, tokens and cost per time bucket (``by``,
        ``interval``, ``from_ms``, ``to_ms``, ``agent``, ``model``)."""
        request = _common.message(traces_pb2.TraceAggregatesRequest, query)
        return self._client._call(self._stub.Aggregates, request)
