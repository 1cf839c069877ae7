"""The asyncio client: :class:`AsyncClient` over ``grpc.aio``, with the same
methods as :class:`agentmesh.Client`, awaited.

    async with AsyncClient(url, token) as mesh:
        run = await mesh.tasks.run("assistant", "hello")
        async for event in run:
            ...
        print(run.answer)
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Mapping, Optional, Union

import grpc
import grpc.aio

from . import _common, events, spec
from ._generated import control_pb2, control_pb2_grpc, resources_pb2, traces_pb2, traces_pb2_grpc
from .errors import AgentmeshError, from_rpc_error

__all__ = ["AsyncClient", "AsyncTaskRun"]


class AsyncClient:
    """See :class:`agentmesh.Client`; create it inside a running event loop."""

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
            self._channel = grpc.aio.secure_channel(address, creds)
        else:
            self._channel = grpc.aio.insecure_channel(address)
        self._timeout = timeout
        self.agents = AsyncAgents(self)
        self.tasks = AsyncTasks(self)
        self.traces = AsyncTraces(self)

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncAgents:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._stub = control_pb2_grpc.AgentServiceStub(client._channel)

    async def apply(
        self, document: Union[str, bytes, Mapping[str, Any]], *, name: Optional[str] = None
    ) -> control_pb2.ApplyAgentResponse:
        agent_name, agent_spec = spec.load_agent(document, name)
        request = control_pb2.ApplyAgentRequest(name=agent_name, spec=agent_spec)
        return await self._client._call(self._stub.ApplyAgent, request)

    async def get(self, name: str) -> resources_pb2.Agent:
        return await self._client._call(self._stub.GetAgent, control_pb2.GetAgentRequest(name=name))


class AsyncTaskRun:
    """A submitted task; ``async for`` its events up to the terminal one."""

    def __init__(
        self, tasks: "AsyncTasks", task: resources_pb2.Task, timeout: Optional[float]
    ) -> None:
        self.task = task
        self.id = task.id
        self.result: Optional[events.Event] = None
        self._tasks = tasks
        self._timeout = timeout

    async def __aiter__(self) -> AsyncIterator[events.Event]:
        after = 0
        async for event in self._tasks.watch(self.id, timeout=self._timeout):
            after = event.seq
            if isinstance(event, events.TERMINAL):
                self.result = event
            yield event
        if self.result is None:
            raise AgentmeshError(
                f"task {self.id}: the event stream ended after seq {after} without a terminal event"
            )

    async def wait(self) -> events.Event:
        async for _ in self:
            pass
        assert self.result is not None
        return self.result

    @property
    def answer(self) -> Optional[str]:
        return self.result.output if isinstance(self.result, events.Completed) else None


class AsyncTasks:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._stub = control_pb2_grpc.TaskServiceStub(client._channel)

    async def submit(
        self,
        agent: str,
        input: str,
        *,
        session: Optional[str] = None,
        idempotency_key: Optional[str] = None,
    ) -> resources_pb2.Task:
        request = _common.submit_request(agent, input, session, idempotency_key)
        return (await self._client._call(self._stub.SubmitTask, request)).task

    async def run(
        self,
        agent: str,
        input: str,
        session: Optional[str] = None,
        *,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> AsyncTaskRun:
        task = await self.submit(agent, input, session=session, idempotency_key=idempotency_key)
        return AsyncTaskRun(self, task, timeout)

    async def watch(
        self, task_id: str, *, after_seq: int = 0, timeout: Optional[float] = None
    ) -> AsyncIterator[events.Event]:
        request = control_pb2.WatchTaskRequest(id=task_id, after_seq=after_seq)
        stream = self._stub.WatchTask(request, metadata=self._client._metadata, timeout=timeout)
        try:
            async for envelope in stream:
                yield events.from_envelope(envelope)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        finally:
            stream.cancel()

    async def get(self, task_id: str) -> resources_pb2.Task:
        return await self._client._call(self._stub.GetTask, control_pb2.GetTaskRequest(id=task_id))

    async def list(
        self,
        *,
        agent: Optional[str] = None,
        status: Optional[str] = None,
        page_size: int = 0,
        page_token: Optional[str] = None,
    ) -> control_pb2.ListTasksResponse:
        request = _common.list_request(agent, status, page_size, page_token)
        return await self._client._call(self._stub.ListTasks, request)

    async def cancel(self, task_id: str) -> resources_pb2.Task:
        request = control_pb2.CancelTaskRequest(id=task_id)
        return await self._client._call(self._stub.CancelTask, request)

    async def approve(
        self, task_id: str, comment: Optional[str] = None, *, call_id: Optional[str] = None
    ) -> resources_pb2.Task:
        request = _common.decide_request(task_id, True, comment, call_id)
        return await self._client._call(self._stub.ResolveApproval, request)

    async def reject(
        self, task_id: str, comment: Optional[str] = None, *, call_id: Optional[str] = None
    ) -> resources_pb2.Task:
        request = _common.decide_request(task_id, False, comment, call_id)
        return await self._client._call(self._stub.ResolveApproval, request)


class AsyncTraces:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._stub = traces_pb2_grpc.TraceQueryStub(client._channel)

    async def get(self, trace_id: str) -> traces_pb2.TraceTree:
        request = traces_pb2.GetTraceRequest(trace_id=trace_id)
        return await self._client._call(self._stub.GetTrace, request)

    async def list(self, **filters: Any) -> traces_pb2.ListTracesResponse:
        request = _common.message(traces_pb2.ListTracesRequest, filters)
        return await self._client._call(self._stub.ListTraces, request)

    async def aggregates(self, **query: Any) -> traces_pb2.TraceAggregatesResponse:
        request = _common.message(traces_pb2.TraceAggregatesRequest, query)
        return await self._client._call(self._stub.Aggregates, request)
