"""What needs no mesh: the spec document's mapping, error mapping, events."""

import grpc
import pytest

from agentmesh import InvalidArgument, NotFound, RateLimited, events, errors
from agentmesh._generated import bus_pb2, control_pb2, resources_pb2
from agentmesh.spec import load_agent, parse_duration_ms

AGENT = """
apiVersion: agentmesh.dev/v1alpha1
kind: Agent
metadata:
  name: helper
spec:
  model: {name: sim-model, provider: local, temperature: 0.5, fallbacks: [backup]}
  systemPrompt: be brief
  maxSteps: 4
  concurrency: reject
  memory: {type: redis, ttl: 2h, maxHistory: 6}
  resources: {requests: {cpu: 100m}, limits: {memory: 1Gi}}
  tools:
    - ref: weather
    - name: ask
      spec: {type: human, description: "may I?", config: {timeout: 1h}, timeout: 500ms}
"""


def test_a_full_agent_document_maps_to_the_proto_spec():
    name, spec = load_agent(AGENT)
    assert name == "helper"
    assert (spec.model, spec.provider, list(spec.fallback_models)) == ("sim-model", "local", ["backup"])
    assert spec.temperature == 0.5 and not spec.HasField("max_tokens")
    assert spec.max_steps == 4
    assert spec.concurrency == resources_pb2.CONCURRENCY_POLICY_REJECT
    assert (spec.memory.type, spec.memory.ttl_seconds, spec.memory.max_history) == ("redis", 7200, 6)
    assert (spec.resources.cpu_request, spec.resources.memory_limit) == ("100m", "1Gi")
    assert spec.tools[0].ref == "weather" and not spec.tools[0].HasField("inline")
    inline = spec.tools[1].inline
    assert (spec.tools[1].name, inline.type, inline.timeout_ms) == ("ask", "human", 500)
    assert inline.config_json == '{"timeout":"1h"}'
    assert inline.parameters_json == '{"properties":{},"type":"object"}'


def test_a_bare_spec_takes_its_name_from_the_caller():
    name, spec = load_agent({"model": "m", "maxTokens": 8}, name="bare")
    assert (name, spec.model, spec.max_tokens) == ("bare", "m", 8)
    with pytest.raises(InvalidArgument) as missing:
        load_agent({"model": "m"})
    assert missing.value.field == "metadata.name"


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"model": "m", "maxTokenz": 1}, "spec.maxTokenz"),
        ({"systemPrompt": "x"}, "spec.model"),
        ({"model": "m", "maxTokens": -1}, "spec.maxTokens"),
        ({"model": {"name": "m", "temperature": 1}, "temperature": 1}, "spec.temperature"),
        ({"model": "m", "memory": {"type": "redis", "ttl": "soon", "maxHistory": 2}}, "spec.memory.ttl"),
        ({"model": "m", "concurrency": "sometimes"}, "spec.concurrency"),
        ({"model": "m", "tools": [{"name": "t", "spec": {"description": "no type"}}]}, "spec.tools[0].spec.type"),
        ({"model": "m", "scaling": {"maxReplica": 2}}, "spec.scaling.maxReplica"),
    ],
)
def test_a_bad_document_names_the_field(spec, field):
    with pytest.raises(InvalidArgument) as error:
        load_agent({"kind": "Agent", "metadata": {"name": "x"}, "spec": spec})
    assert error.value.field == field
    assert str(error.value).startswith(field + ":")


def test_yaml_errors_and_other_kinds_are_refused():
    with pytest.raises(InvalidArgument) as bad:
        load_agent("model: [unclosed")
    assert bad.value.field == "document"
    with pytest.raises(InvalidArgument) as kind:
        load_agent("kind: Tool\nmetadata: {name: t}\nspec: {type: api}")
    assert kind.value.field == "kind"


def test_durations_parse_as_the_gateway_does():
    assert [parse_duration_ms(t) for t in ["500ms", "30s", "5m", "2h", "1d", "7"]] == [
        500, 30_000, 300_000, 7_200_000, 86_400_000, 7_000,
    ]
    assert parse_duration_ms("1w") is None and parse_duration_ms("s") is None


class _Error(grpc.RpcError):
    def __init__(self, code, details, trailing=()):
        self._code, self._details, self._trailing = code, details, trailing

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._trailing


def test_grpc_statuses_map_to_the_exception_classes():
    bad = errors.from_rpc_error(_Error(grpc.StatusCode.INVALID_ARGUMENT, "spec.temperature: must be between 0 and 2"))
    assert isinstance(bad, InvalidArgument) and bad.field == "spec.temperature"
    prose = errors.from_rpc_error(_Error(grpc.StatusCode.INVALID_ARGUMENT, "the request is bad: no"))
    assert prose.field is None
    assert isinstance(errors.from_rpc_error(_Error(grpc.StatusCode.NOT_FOUND, "task x")), NotFound)
    limited = errors.from_rpc_error(
        _Error(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limited", (("retry-after", "7"),))
    )
    assert isinstance(limited, RateLimited) and limited.retry_after == 7.0
    assert isinstance(errors.from_rpc_error(_Error(grpc.StatusCode.PERMISSION_DENIED, "no")), errors.PermissionDenied)


def test_envelopes_become_typed_events():
    event = bus_pb2.TaskEvent(task_id="t1", at_ms=5)
    event.completed.output = "42"
    event.completed.usage.output_tokens = 3
    typed = events.from_envelope(control_pb2.TaskEventEnvelope(seq=9, event=event))
    assert isinstance(typed, events.Completed) and isinstance(typed, events.TERMINAL)
    assert (typed.seq, typed.task_id, typed.output, typed.output_tokens) == (9, "t1", "42", 3)
    step = bus_pb2.TaskEvent(task_id="t1")
    step.model_step.step = 1
    step.model_step.tool_calls.add(id="c1", name="add", arguments='{"a": 1}')
    typed = events.from_envelope(control_pb2.TaskEventEnvelope(seq=2, event=step))
    assert isinstance(typed, events.ModelStep)
    assert typed.tool_calls[0].args() == {"a": 1}
    assert not isinstance(typed, events.TERMINAL)
