"""Agent resources as users write them (YAML, camelCase) to the protobuf spec.

The document is the one ``agentmesh apply`` and ``PUT /v1/agents/{name}``
take (libs/mesh-spec's ``AgentSpecDoc``)::

    apiVersion: agentmesh.dev/v1alpha1
    kind: Agent
    metadata: {name: assistant}
    spec: {model: smollm2, systemPrompt: ..., maxTokens: 96, tools: [...]}

This module only reshapes it: unknown fields and wrong types are refused
here, naming the field (``spec.maxTokenz``) as the gateway would; what the
values mean (a known model, a valid tool config, limits) is checked by the
gateway, whose InvalidArgument names the field the same way.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping, Optional, Tuple, Union

import yaml

from ._generated import resources_pb2
from .errors import InvalidArgument

__all__ = ["load_agent", "agent_spec", "tool_spec", "parse_duration_ms"]

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|)\s*$")
_FACTOR = {"ms": 1, "": 1000, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}

_CONCURRENCY = {
    "enqueue": resources_pb2.CONCURRENCY_POLICY_ENQUEUE,
    "reject": resources_pb2.CONCURRENCY_POLICY_REJECT,
    "interrupt": resources_pb2.CONCURRENCY_POLICY_INTERRUPT,
}

# spec.scaling: (proto field, default) per document field, as mesh-scaling.
_SCALING = {
    "minReplicas": ("min_replicas", 0),
    "maxReplicas": ("max_replicas", 10),
    "targetQueueLagPerReplica": ("target_queue_lag_per_replica", 10),
    "activationQueueLag": ("activation_queue_lag", 0),
    "pollingIntervalSeconds": ("polling_interval_seconds", 30),
    "cooldownSeconds": ("cooldown_seconds", 300),
    "scaleDownStabilizationSeconds": ("scale_down_stabilization_seconds", 300),
}


def parse_duration_ms(text: str) -> Optional[int]:
    """``500ms``, ``30s``, ``5m``, ``2h``, ``1d`` or bare seconds; else None."""
    match = _DURATION.match(str(text))
    if not match:
        return None
    return int(match.group(1)) * _FACTOR[match.group(2)]


def _object(value: Any, at: str, allowed: set) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{at}: expected an object", field=at)
    for key in value:
        if key not in allowed:
            path = f"{at}.{key}"
            raise InvalidArgument(f"{path}: unknown field", field=path)
    return value


def _str(value: Any, at: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{at}: expected a string", field=at)
    return value


def _uint(value: Any, at: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{at}: expected a non-negative integer", field=at)
    return value


def _number(value: Any, at: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(f"{at}: expected a number", field=at)
    return float(value)


def _bool(value: Any, at: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(f"{at}: expected true or false", field=at)
    return value


def _duration(value: Any, at: str, example: str) -> int:
    ms = parse_duration_ms(value) if isinstance(value, (str, int)) else None
    if ms is None:
        raise InvalidArgument(f"{at}: {value!r} is not a duration like {example}", field=at)
    return ms


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def tool_spec(doc: Any, at: str = "spec") -> resources_pb2.ToolSpec:
    """A Tool resource's ``spec`` (or an agent's inline tool spec)."""
    doc = _object(
        doc,
        at,
        {"type", "description", "parameters", "config", "timeout", "retries", "authentication"},
    )
    if "type" not in doc:
        raise InvalidArgument(f"{at}.type: is required", field=f"{at}.type")
    spec = resources_pb2.ToolSpec(
        type=_str(doc["type"], f"{at}.type"),
        description=_str(doc.get("description", ""), f"{at}.description"),
        parameters_json=_json_text(doc.get("parameters", {"type": "object", "properties": {}})),
        config_json=_json_text(doc.get("config", {})),
        retries=_uint(doc.get("retries", 0), f"{at}.retries"),
    )
    if "timeout" in doc:
        spec.timeout_ms = _duration(doc["timeout"], f"{at}.timeout", "10s or 500ms")
    if "authentication" in doc:
        auth = _object(doc["authentication"], f"{at}.authentication", {"bearerToken"})
        where = f"{at}.authentication.bearerToken"
        token = _object(auth.get("bearerToken", {}), where, {"env", "file"})
        spec.authentication.bearer_env = _str(token.get("env", ""), f"{where}.env")
        spec.authentication.bearer_file = _str(token.get("file", ""), f"{where}.file")
    return spec


_AGENT_FIELDS = {
    "model",
    "systemPrompt",
    "temperature",
    "maxTokens",
    "tools",
    "memory",
    "maxSteps",
    "concurrency",
    "scaling",
    "resources",
    "recordContent",
}


def agent_spec(doc: Any, at: str = "spec") -> resources_pb2.AgentSpec:
    """An Agent resource's ``spec`` as the protobuf ``AgentSpec``."""
    doc = _object(doc, at, _AGENT_FIELDS)
    if "model" not in doc:
        raise InvalidArgument(f"{at}.model: is required", field=f"{at}.model")
    spec = resources_pb2.AgentSpec(
        system_prompt=_str(doc.get("systemPrompt", ""), f"{at}.systemPrompt"),
        max_steps=_uint(doc.get("maxSteps", 0), f"{at}.maxSteps"),
        record_content=_bool(doc.get("recordContent", False), f"{at}.recordContent"),
    )
    model = doc["model"]
    if isinstance(model, str):
        spec.model = model
    else:
        m = _object(
            model, f"{at}.model", {"name", "provider", "temperature", "maxTokens", "fallbacks"}
        )
        spec.model = _str(m.get("name", ""), f"{at}.model.name")
        spec.provider = _str(m.get("provider", ""), f"{at}.model.provider")
        if "temperature" in m:
            spec.temperature = _number(m["temperature"], f"{at}.model.temperature")
        if "maxTokens" in m:
            spec.max_tokens = _uint(m["maxTokens"], f"{at}.model.maxTokens")
        fallbacks = m.get("fallbacks", [])
        if not isinstance(fallbacks, list):
            raise InvalidArgument(f"{at}.model.fallbacks: expected a list", field=f"{at}.model.fallbacks")
        spec.fallback_models.extend(
            _str(f, f"{at}.model.fallbacks[{i}]") for i, f in enumerate(fallbacks)
        )
    for key, field in (("temperature", "temperature"), ("maxTokens", "max_tokens")):
        if key in doc:
            if spec.HasField(field):
                raise InvalidArgument(
                    f"{at}.{key}: set it here or in model.{key}, not both", field=f"{at}.{key}"
                )
            if key == "temperature":
                spec.temperature = _number(doc[key], f"{at}.{key}")
            else:
                spec.max_tokens = _uint(doc[key], f"{at}.{key}")
    tools = doc.get("tools", [])
    if not isinstance(tools, list):
        raise InvalidArgument(f"{at}.tools: expected a list", field=f"{at}.tools")
    for i, tool in enumerate(tools):
        where = f"{at}.tools[{i}]"
        tool = _object(tool, where, {"ref", "name", "spec"})
        entry = spec.tools.add(
            ref=_str(tool.get("ref", ""), f"{where}.ref"),
            name=_str(tool.get("name", ""), f"{where}.name"),
        )
        if "spec" in tool:
            entry.inline.CopyFrom(tool_spec(tool["spec"], f"{where}.spec"))
    if "memory" in doc:
        memory = _object(doc["memory"], f"{at}.memory", {"type", "ttl", "maxHistory"})
        spec.memory.type = _str(memory.get("type", ""), f"{at}.memory.type")
        spec.memory.ttl_seconds = _duration(memory.get("ttl"), f"{at}.memory.ttl", "24h") // 1000
        spec.memory.max_history = _uint(memory.get("maxHistory", 0), f"{at}.memory.maxHistory")
    if "concurrency" in doc:
        policy = doc["concurrency"]
        if policy not in _CONCURRENCY:
            raise InvalidArgument(
                f"{at}.concurrency: expected one of enqueue, reject, interrupt",
                field=f"{at}.concurrency",
            )
        spec.concurrency = _CONCURRENCY[policy]
    if "scaling" in doc:
        scaling = _object(doc["scaling"], f"{at}.scaling", set(_SCALING))
        for key, (field, default) in _SCALING.items():
            setattr(spec.scaling, field, _uint(scaling.get(key, default), f"{at}.scaling.{key}"))
    if "resources" in doc:
        resources = _object(doc["resources"], f"{at}.resources", {"requests", "limits"})
        for side in ("requests", "limits"):
            q = _object(resources.get(side, {}), f"{at}.resources.{side}", {"cpu", "memory"})
            suffix = "request" if side == "requests" else "limit"
            setattr(spec.resources, f"cpu_{suffix}", _str(q.get("cpu", ""), f"{at}.resources.{side}.cpu"))
            setattr(
                spec.resources,
                f"memory_{suffix}",
                _str(q.get("memory", ""), f"{at}.resources.{side}.memory"),
            )
    return spec


def load_agent(
    document: Union[str, bytes, Mapping[str, Any]], name: Optional[str] = None
) -> Tuple[str, resources_pb2.AgentSpec]:
    """``(name, spec)`` of an Agent resource given as YAML text or a dict.

    A full resource (``kind: Agent``, ``metadata.name``, ``spec``) or a bare
    spec with ``name`` passed in.
    """
    if isinstance(document, (str, bytes)):
        try:
            docs = [d for d in yaml.safe_load_all(document) if d is not None]
        except yaml.YAMLError as error:
            raise InvalidArgument(f"document: not valid YAML: {error}", field="document") from None
        if len(docs) != 1:
            raise InvalidArgument(
                f"document: expected one Agent resource, found {len(docs)}", field="document"
            )
        document = docs[0]
    if not isinstance(document, Mapping):
        raise InvalidArgument("document: expected an object", field="document")
    if "spec" in document or "kind" in document:
        _object(document, "document", {"apiVersion", "kind", "metadata", "spec"})
        if document.get("kind", "Agent") != "Agent":
            raise InvalidArgument(
                f"kind: expected Agent, found {document.get('kind')!r}", field="kind"
            )
        metadata = _object(document.get("metadata", {}), "metadata", {"name", "labels", "annotations"})
        name = name or metadata.get("name")
        body = document.get("spec")
    else:
        body = document
    if not name or not isinstance(name, str):
        raise InvalidArgument("metadata.name: is required", field="metadata.name")
    return name, agent_spec(body)
