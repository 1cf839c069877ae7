"""The SDK against a live mesh (the gateway, orchestrator, worker and the
model simulator, started by tests/integration/tests/mesh/python_sdk.rs)."""

import asyncio
import json
import os
import time
import urllib.request
import uuid

import pytest

import agentmesh
from agentmesh import (
    ApprovalRequested,
    ApprovalResolved,
    AsyncClient,
    Client,
    Completed,
    Delta,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Started,
    status_name,
)

WAIT = 30


def script(turns) -> str:
    """A system prompt the simulator plays as a script of turns."""
    return "You are a test agent.\n[[agentmesh-sim-script]]\n" + json.dumps(turns)


def settled(client, task_id: str, status: str):
    """The task once its record shows ``status``: the orchestrator projects
    events into the record asynchronously, so it can trail the stream."""
    deadline = time.monotonic() + WAIT
    while True:
        task = client.tasks.get(task_id)
        if status_name(task.status) == status:
            return task
        assert time.monotonic() < deadline, f"task {task_id} stayed {status_name(task.status)}"
        time.sleep(0.05)


def agent_yaml(name: str, model: str) -> str:
    return f"""
apiVersion: agentmesh.dev/v1alpha1
kind: Agent
metadata:
  name: {name}
spec:
  model: {model}
  systemPrompt: be brief
  temperature: 0
  maxTokens: 12
"""


def test_apply_creates_a_version_and_an_equal_spec_changes_nothing(client, mesh, name):
    applied = client.agents.apply(agent_yaml(name, mesh.model))
    assert applied.changed and applied.agent.version == 1
    assert applied.agent.tenant == mesh.tenant
    again = client.agents.apply(agent_yaml(name, mesh.model))
    assert not again.changed and again.agent.version == 1
    bumped = client.agents.apply({"model": mesh.model, "maxTokens": 20}, name=name)
    assert bumped.changed and bumped.agent.version == 2
    fetched = client.agents.get(name)
    assert (fetched.spec.model, fetched.spec.max_tokens, fetched.version) == (mesh.model, 20, 2)


def test_run_streams_typed_events_to_the_final_answer(client, mesh, name):
    client.agents.apply(agent_yaml(name, mesh.model))
    run = client.tasks.run(name, "say something", timeout=WAIT)
    assert run.id and run.task.agent == name
    seen = list(run)
    assert isinstance(seen[0], Started), seen
    assert isinstance(seen[-1], Completed), seen
    assert any(isinstance(e, Delta) for e in seen), seen
    seqs = [e.seq for e in seen]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(e.task_id == run.id for e in seen)
    answer = run.answer
    assert answer and answer == seen[-1].output
    # The streamed deltas add up to the answer.
    assert "".join(e.content for e in seen if isinstance(e, Delta)) == answer
    task = settled(client, run.id, "succeeded")
    assert task.output == answer
    # Watching a finished task replays its events and ends.
    replay = list(client.tasks.watch(run.id, timeout=WAIT))
    assert [e.seq for e in replay] == seqs


def test_an_approval_pauses_the_task_until_approved(client, mesh, name):
    turns = [
        {"tool_calls": [{"name": "ask_human", "arguments": {"action": "drop the table"}}]},
        {"content": "decision: {{tool_results}}"},
    ]
    client.agents.apply(
        {
            "model": mesh.model,
            "systemPrompt": script(turns),
            "tools": [
                {
                    "name": "ask_human",
                    "spec": {
                        "type": "human",
                        "description": "may I run this action?",
                        "parameters": {
                            "type": "object",
                            "properties": {"action": {"type": "string"}},
                            "required": ["action"],
                        },
                        "config": {"timeout": "1h"},
                    },
                }
            ],
        },
        name=name,
    )
    run = client.tasks.run(name, "clean up", timeout=WAIT)
    requested = resolved = None
    for event in run:
        if isinstance(event, ApprovalRequested):
            requested = event
            paused = settled(client, run.id, "awaiting_approval")
            assert paused.approval.tool == "ask_human"
            client.tasks.approve(run.id, comment="go ahead")
        if isinstance(event, ApprovalResolved):
            resolved = event
    assert requested is not None and requested.tool == "ask_human"
    assert json.loads(requested.arguments) == {"action": "drop the table"}
    assert resolved is not None and resolved.approved and resolved.comment == "go ahead"
    assert isinstance(run.result, Completed), run.result
    assert '"approved":true' in run.answer and '"comment":"go ahead"' in run.answer
    # Deciding again is refused: the call is no longer pending.
    with pytest.raises(agentmesh.AgentmeshError) as again:
        client.tasks.approve(run.id)
    assert not isinstance(again.value, NotFound)

    # Rejected.
    rejected = client.tasks.run(name, "clean up again", timeout=WAIT)
    for event in rejected:
        if isinstance(event, ApprovalRequested):
            settled(client, rejected.id, "awaiting_approval")
            client.tasks.reject(rejected.id, comment="not today")
    assert '"approved":false' in rejected.answer


def test_get_and_list_find_the_tenants_tasks(client, mesh, name):
    client.agents.apply(agent_yaml(name, mesh.model))
    ids = [client.tasks.run(name, f"task {i}", timeout=WAIT) for i in range(3)]
    for run in ids:
        run.wait()
        settled(client, run.id, "succeeded")
    listed = client.tasks.list(agent=name)
    assert {t.id for t in listed.tasks} == {r.id for r in ids}
    assert all(t.agent == name for t in listed.tasks)
    succeeded = client.tasks.list(agent=name, status="succeeded", page_size=2)
    assert len(succeeded.tasks) == 2 and succeeded.next_page_token
    rest = client.tasks.list(agent=name, status="succeeded", page_token=succeeded.next_page_token)
    assert len(rest.tasks) == 1
    assert client.tasks.list(agent=name, status="failed").tasks == []
    with pytest.raises(InvalidArgument) as bad:
        client.tasks.list(status="sleeping")
    assert bad.value.field == "status"


def test_cancel_ends_a_paused_task(client, mesh, name):
    turns = [{"tool_calls": [{"name": "gate", "arguments": {}}]}, {"content": "done"}]
    client.agents.apply(
        {
            "model": mesh.model,
            "systemPrompt": script(turns),
            "tools": [{"name": "gate", "spec": {"type": "human", "config": {"timeout": "1h"}}}],
        },
        name=name,
    )
    run = client.tasks.run(name, "wait for me", timeout=WAIT)
    for event in run:
        if isinstance(event, ApprovalRequested):
            settled(client, run.id, "awaiting_approval")
            client.tasks.cancel(run.id)
    assert isinstance(run.result, agentmesh.Cancelled), run.result
    settled(client, run.id, "cancelled")


def _export_trace(mesh, trace_id: str) -> None:
    now = time.time_ns()
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "sdk-test"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "agentmesh"},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": "b7ad6b7169203331",
                                "parentSpanId": "",
                                "name": "invoke_agent support",
                                "kind": 1,
                                "startTimeUnixNano": str(now - 5_000_000),
                                "endTimeUnixNano": str(now),
                                "attributes": [
                                    {"key": "gen_ai.operation.name", "value": {"stringValue": "invoke_agent"}}
                                ],
                                "status": {},
                            }
                        ],
                    }
                ],
            }
        ]
    }
    headers = {"content-type": "application/json", "agentmesh-tenant": mesh.tenant}
    if mesh.service_token:
        # The collector's receiver is internal: services prove who they are.
        headers["agentmesh-service-token"] = mesh.service_token
    request = urllib.request.Request(
        mesh.otlp_url.rstrip("/") + "/v1/traces", data=json.dumps(body).encode(), headers=headers
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_traces_get_returns_the_tenants_trace(client, mesh):
    trace_id = uuid.uuid4().hex
    _export_trace(mesh, trace_id)
    deadline = time.monotonic() + WAIT
    while True:
        try:
            tree = client.traces.get(trace_id)
            break
        except NotFound:
            # Stored asynchronously (through the TRACES stream).
            assert time.monotonic() < deadline, "the trace was never stored"
            time.sleep(0.1)
    assert tree.trace.trace_id == trace_id
    assert tree.trace.observation_count == 1 and tree.trace.latency_ms >= 4
    root = tree.observations[0]
    assert (root.type, root.name, root.parent_span_id) == ("agent", "invoke_agent support", "")
    page = client.traces.list(page_size=50)
    assert trace_id in {t.trace_id for t in page.traces}
    assert client.traces.list(status="error").traces == []
    with pytest.raises(InvalidArgument) as bad:
        client.traces.get("not-hex")
    assert bad.value.field == "trace_id", bad.value
    with pytest.raises(InvalidArgument) as unknown:
        client.traces.list(agnet="x")
    assert unknown.value.field == "agnet"
    # Another tenant's token does not find it.
    with Client(mesh.grpc_url, mesh.other_tenant_token) as other:
        with pytest.raises(NotFound):
            other.traces.get(trace_id)


def test_errors_name_the_field_and_the_missing_resource(client, mesh, name):
    with pytest.raises(InvalidArgument) as bad:
        client.agents.apply({"model": mesh.model, "temperature": 5}, name=name)
    assert bad.value.field == "spec.temperature", bad.value
    with pytest.raises(InvalidArgument) as local:
        client.agents.apply({"model": mesh.model, "temprature": 0.5}, name=name)
    assert local.value.field == "spec.temprature"
    with pytest.raises(NotFound):
        client.tasks.get(str(uuid.uuid4()))
    with pytest.raises(NotFound):
        client.agents.get(name)
    with pytest.raises(NotFound):
        client.tasks.run(f"{name}-missing", "hello")
    with Client(mesh.grpc_url, mesh.viewer_token) as viewer:
        with pytest.raises(PermissionDenied):
            viewer.agents.apply(agent_yaml(name, mesh.model))
    with Client(mesh.grpc_url, "not-a-token") as stranger:
        with pytest.raises(agentmesh.Unauthenticated):
            stranger.tasks.list()


def test_the_async_client_does_the_same(mesh, name):
    async def scenario():
        async with AsyncClient(mesh.grpc_url, mesh.token) as mesh_client:
            applied = await mesh_client.agents.apply(agent_yaml(name, mesh.model))
            assert applied.changed
            run = await mesh_client.tasks.run(name, "hello async", timeout=WAIT)
            seen = [event async for event in run]
            assert isinstance(seen[0], Started) and isinstance(seen[-1], Completed), seen
            assert run.answer == seen[-1].output and run.answer
            deadline = time.monotonic() + WAIT
            while status_name((await mesh_client.tasks.get(run.id)).status) != "succeeded":
                assert time.monotonic() < deadline, "the task record never caught up"
                await asyncio.sleep(0.05)
            listed = await mesh_client.tasks.list(agent=name)
            assert [t.id for t in listed.tasks] == [run.id]
            with pytest.raises(NotFound):
                await mesh_client.tasks.get(str(uuid.uuid4()))
            with pytest.raises(InvalidArgument) as bad:
                await mesh_client.agents.apply({"model": mesh.model, "temperature": 5}, name=name)
            assert bad.value.field == "spec.temperature"
            # Concurrent runs on one channel.
            runs = await asyncio.gather(
                *(mesh_client.tasks.run(name, f"parallel {i}", timeout=WAIT) for i in range(3))
            )
            finals = await asyncio.gather(*(r.wait() for r in runs))
            assert all(isinstance(f, Completed) for f in finals), finals
            with pytest.raises(NotFound):
                await mesh_client.traces.get(uuid.uuid4().hex)

    asyncio.run(scenario())
