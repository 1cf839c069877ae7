"""Schema validation of rendered manifests, offline.

- Kubernetes built-in kinds: `kubernetes-validate` in strict mode (unknown
  fields are errors) against the Kubernetes version K8S_VERSION (1.34 unless
  AGENTMESH_K8S_VERSION says otherwise).
- KEDA (keda.sh/v1alpha1): the CRD schema of KEDA 2.16 as the
  `cloudcoil-models-keda` models carry it, made strict the same way
  (additionalProperties: false wherever the schema lists properties), plus
  the models' own validation. The CRD types a trigger's `metadata` as a free
  string map, so the parameters of each scaler are checked separately,
  against the parameter lists of KEDA's scaler documentation
  (SCALER_PARAMETERS below): required ones present, no unknown names, numbers
  that parse.
- Karpenter (karpenter.sh/v1 NodePool, karpenter.k8s.aws/v1 EC2NodeClass): no
  published schema package exists offline, so a hand-written structural check
  of the v1 fields this project uses (required fields, known keys, enums).
- Prometheus Operator (monitoring.coreos.com/v1 PrometheusRule): the CRD
  schema of prometheus-operator 0.80 as `cloudcoil-models-prometheus-operator`
  carries it, made strict like KEDA's; the rules' PromQL is parsed and held
  to the exported metrics by check_observability.py.
- Any other kind (a CRD we have no validator for, or a typo in kind or
  apiVersion) is an error, never a silent pass.

Usage: validate_manifests.py TARGET...   (kustomization dirs or YAML files)
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import sys
from typing import Any

import jsonschema
import kubernetes_validate.utils as kv

from deploylib import CheckError, Findings, ref, render, rel

K8S_VERSION = os.environ.get("AGENTMESH_K8S_VERSION", "1.34")

# kubernetes-validate reads and parses its schema files on every call; the
# definitions file alone is megabytes. Cache by (file, version).
kv.schema_contents = functools.lru_cache(maxsize=None)(kv.schema_contents)


# === Kubernetes built-ins ===


def validate_builtin(obj: dict[str, Any], findings: Findings) -> None:
    try:
        kv.validate(obj, K8S_VERSION, strict=True)
    except kv.ValidationError as e:
        path = ".".join(str(p) for p in e.path) or "<root>"
        findings.add(ref(obj), f"does not validate against Kubernetes {e.version} (strict): {path}: {e.message}")
    except kv.SchemaNotFoundError:
        findings.add(
            ref(obj),
            f"no schema for kind {obj.get('kind')!r} with apiVersion {obj.get('apiVersion')!r} "
            f"in Kubernetes {K8S_VERSION} (a typo in kind or apiVersion, or a CRD with no validator here)",
        )
    except kv.VersionNotSupportedError:
        raise CheckError(f"kubernetes-validate does not support Kubernetes {K8S_VERSION}")


# === KEDA ===


def _strict(schema: Any) -> Any:
    """additionalProperties: false on every object schema that lists its
    properties (free maps, like labels or trigger metadata, list none)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.lru_cache(maxsize=None)
def keda_models() -> dict[str, Any]:
    from cloudcoil.models.keda import v1alpha1 as keda

    return {
        "ScaledObject": keda.ScaledObject,
        "ScaledJob": keda.ScaledJob,
        "TriggerAuthentication": keda.TriggerAuthentication,
        "ClusterTriggerAuthentication": keda.ClusterTriggerAuthentication,
    }


@functools.lru_cache(maxsize=None)
def keda_validator(kind: str) -> jsonschema.protocols.Validator:
    schema = _strict(keda_models()[kind].model_json_schema(by_alias=True, mode="validation"))
    return jsonschema.Draft202012Validator(schema)


# === Prometheus Operator ===


@functools.lru_cache(maxsize=None)
def monitoring_validator(kind: str) -> jsonschema.protocols.Validator | None:
    from cloudcoil.models.prometheus_operator import v1 as monitoring

    model = {"PrometheusRule": monitoring.PrometheusRule}.get(kind)
    if model is None:
        return None
    return jsonschema.Draft202012Validator(_strict(model.model_json_schema(by_alias=True, mode="validation")))


def validate_monitoring(obj: dict[str, Any], findings: Findings) -> None:
    kind, api = obj.get("kind"), obj.get("apiVersion")
    validator = monitoring_validator(kind) if api == "monitoring.coreos.com/v1" else None
    if validator is None:
        findings.add(ref(obj), f"no validator for {kind} {api} (monitoring.coreos.com/v1 PrometheusRule only)")
        return
    for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.path)):
        detail = _deepest(error)
        path = ".".join(str(p) for p in detail.path) or "<root>"
        findings.add(ref(obj), f"does not validate against the Prometheus Operator's {kind} schema: {path}: {detail.message}")


def _int(value: str, minimum: int) -> str | None:
    if not re.fullmatch(r"-?\d+", value):
        return f"must be an integer, not {value!r}"
    if int(value) < minimum:
        return f"must be at least {minimum}, not {value}"
    return None


def _float(value: str, minimum: float, exclusive: bool = False) -> str | None:
    try:
        number = float(value)
    except ValueError:
        return f"must be a number, not {value!r}"
    if number < minimum or (exclusive and number == minimum):
        return f"must be {'above' if exclusive else 'at least'} {minimum}, not {value}"
    return None


def _bool(value: str) -> str | None:
    return None if value in ("true", "false") else f"must be \"true\" or \"false\", not {value!r}"


def _host_port(value: str) -> str | None:
    # KEDA prefixes the scheme itself (useHttps); a value with one is wrong.
    if "://" in value:
        return f"must be host:port without a scheme, not {value!r}"
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        return f"must be host:port, not {value!r}"
    return None


def _url(value: str) -> str | None:
    return None if re.match(r"^https?://[^/\s]+", value) else f"must be an http(s) URL, not {value!r}"


# Parameters of each scaler, from KEDA's scaler documentation (2.16):
# name -> (required, value check). Parameters that a TriggerAuthentication may
# supply instead are required only when the trigger has no authenticationRef.
SCALER_PARAMETERS: dict[str, dict[str, tuple[str, Any]]] = {
    "nats-jetstream": {
        "natsServerMonitoringEndpoint": ("required-or-auth", _host_port),
        "account": ("required-or-auth", None),
        "stream": ("required", None),
        "consumer": ("required", None),
        "lagThreshold": ("optional", lambda v: _int(v, 1)),
        "activationLagThreshold": ("optional", lambda v: _int(v, 0)),
        "useHttps": ("optional", _bool),
    },
    "prometheus": {
        "serverAddress": ("required", _url),
        "query": ("required", None),
        "threshold": ("required", lambda v: _float(v, 0.0, exclusive=True)),
        "activationThreshold": ("optional", lambda v: _float(v, 0.0)),
        "queryParameters": ("optional", None),
        "namespace": ("optional", None),
        "customHeaders": ("optional", None),
        "ignoreNullValues": ("optional", _bool),
        "unsafeSsl": ("optional", _bool),
        "authModes": ("optional", None),
    },
    "cpu": {"value": ("required", lambda v: _int(v, 1)), "containerName": ("optional", None)},
    "memory": {"value": ("required", lambda v: _int(v, 1)), "containerName": ("optional", None)},
}


def validate_trigger(obj: dict[str, Any], i: int, trigger: dict[str, Any], findings: Findings) -> None:
    kind = trigger.get("type")
    where = f"{ref(obj)} trigger[{i}] ({kind})"
    table = SCALER_PARAMETERS.get(kind)
    if table is None:
        findings.add(where, f"no parameter list for trigger type {kind!r} in tests/deploy; add KEDA's documented parameters")
        return
    metadata = trigger.get("metadata") or {}
    has_auth = bool(trigger.get("authenticationRef"))
    for name, (need, check) in table.items():
        if name not in metadata:
            if need == "required" or (need == "required-or-auth" and not has_auth):
                findings.add(where, f"{kind} trigger lacks required parameter {name!r}")
            continue
        value = metadata[name]
        if not isinstance(value, str):
            continue  # the CRD schema reports non-string values
        if value.strip() == "":
            findings.add(where, f"{name} is empty")
        elif check and (problem := check(value)):
            findings.add(where, f"{name} {problem}")
    for name in metadata:
        if name not in table:
            findings.add(where, f"unknown {kind} parameter {name!r} (known: {', '.join(sorted(table))})")


def _deepest(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """Optional fields are `anyOf: [X, null]`: report why X failed, not that
    the value is not null."""
    while error.context:
        real = [c for c in error.context if not (isinstance(c.schema, dict) and c.schema.get("type") == "null")]
        error = jsonschema.exceptions.best_match(real or error.context)
    return error


def validate_keda(obj: dict[str, Any], findings: Findings) -> None:
    kind = obj.get("kind")
    models = keda_models()
    if kind not in models:
        findings.add(ref(obj), f"unknown KEDA kind {kind!r}")
        return
    errors = sorted(keda_validator(kind).iter_errors(obj), key=lambda e: list(e.path))
    for e in errors:
        detail = _deepest(e)
        path = ".".join(str(p) for p in detail.absolute_path) or "<root>"
        findings.add(ref(obj), f"does not validate against KEDA's {kind} schema: {path}: {detail.message}")
    if errors:
        return
    try:
        models[kind].model_validate(obj)
    except Exception as e:  # pydantic.ValidationError, reported as the model words it
        findings.add(ref(obj), f"KEDA {kind} model rejects it: {e}")
        return
    if kind in ("ScaledObject", "ScaledJob"):
        for i, trigger in enumerate(obj["spec"].get("triggers") or []):
            validate_trigger(obj, i, trigger, findings)


# === Karpenter (structural: no schema package offline) ===

NODEPOOL_KEYS = {
    "spec": {"template", "disruption", "limits", "weight", "replicas"},
    "template": {"metadata", "spec"},
    "template.metadata": {"labels", "annotations"},
    "template.spec": {"nodeClassRef", "requirements", "taints", "startupTaints", "expireAfter", "terminationGracePeriod"},
    "nodeClassRef": {"group", "kind", "name"},
    "requirement": {"key", "operator", "values", "minValues"},
    "taint": {"key", "value", "effect"},
    "disruption": {"consolidationPolicy", "consolidateAfter", "budgets"},
}
EC2NODECLASS_KEYS = {
    "amiFamily", "amiSelectorTerms", "subnetSelectorTerms", "securityGroupSelectorTerms",
    "capacityReservationSelectorTerms", "role", "instanceProfile", "userData", "tags",
    "blockDeviceMappings", "metadataOptions", "kubelet", "detailedMonitoring",
    "associatePublicIPAddress", "instanceStorePolicy", "context",
}
DURATION = re.compile(r"^(Never|(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+)$")


def _keys(where: str, section: str, value: Any, allowed: set[str], findings: Findings) -> dict[str, Any]:
    if not isinstance(value, dict):
        findings.add(where, f"{section} must be a mapping")
        return {}
    for k in value:
        if k not in allowed:
            findings.add(where, f"{section}: unknown field {k!r} (known: {', '.join(sorted(allowed))})")
    return value


def validate_karpenter(obj: dict[str, Any], findings: Findings) -> None:
    where = ref(obj)
    kind, api = obj.get("kind"), obj.get("apiVersion")
    extra = set(obj) - {"apiVersion", "kind", "metadata", "spec"}
    if extra:
        findings.add(where, f"unknown top-level fields {sorted(extra)}")
    if kind == "NodePool" and api == "karpenter.sh/v1":
        spec = _keys(where, "spec", obj.get("spec"), NODEPOOL_KEYS["spec"], findings)
        template = _keys(where, "spec.template", spec.get("template"), NODEPOOL_KEYS["template"], findings)
        if "metadata" in template:
            _keys(where, "spec.template.metadata", template["metadata"], NODEPOOL_KEYS["template.metadata"], findings)
        tspec = _keys(where, "spec.template.spec", template.get("spec"), NODEPOOL_KEYS["template.spec"], findings)
        node_class = tspec.get("nodeClassRef")
        if node_class is None:
            findings.add(where, "spec.template.spec.nodeClassRef is required")
        else:
            node_class = _keys(where, "nodeClassRef", node_class, NODEPOOL_KEYS["nodeClassRef"], findings)
            for k in ("group", "kind", "name"):
                if not node_class.get(k):
                    findings.add(where, f"spec.template.spec.nodeClassRef.{k} is required")
        requirements = tspec.get("requirements")
        if not isinstance(requirements, list) or not requirements:
            findings.add(where, "spec.template.spec.requirements must be a non-empty list")
        for i, req in enumerate(requirements or []):
            req = _keys(where, f"requirements[{i}]", req, NODEPOOL_KEYS["requirement"], findings)
            if req.get("operator") not in ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"):
                findings.add(where, f"requirements[{i}].operator {req.get('operator')!r} is not In/NotIn/Exists/DoesNotExist/Gt/Lt")
            if req.get("operator") in ("In", "NotIn") and not req.get("values"):
                findings.add(where, f"requirements[{i}] ({req.get('key')}) needs values")
        for i, taint in enumerate(tspec.get("taints") or []):
            taint = _keys(where, f"taints[{i}]", taint, NODEPOOL_KEYS["taint"], findings)
            if taint.get("effect") not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
                findings.add(where, f"taints[{i}].effect {taint.get('effect')!r} is not NoSchedule/PreferNoSchedule/NoExecute")
        if "expireAfter" in tspec and not DURATION.match(str(tspec["expireAfter"])):
            findings.add(where, f"expireAfter {tspec['expireAfter']!r} is not a duration or Never")
        disruption = spec.get("disruption")
        if disruption is not None:
            disruption = _keys(where, "spec.disruption", disruption, NODEPOOL_KEYS["disruption"], findings)
            if disruption.get("consolidationPolicy") not in (None, "WhenEmpty", "WhenEmptyOrUnderutilized"):
                findings.add(where, f"consolidationPolicy {disruption['consolidationPolicy']!r} is not WhenEmpty or WhenEmptyOrUnderutilized")
            if "consolidateAfter" not in disruption:
                findings.add(where, "spec.disruption.consolidateAfter is required in karpenter.sh/v1")
            elif not DURATION.match(str(disruption["consolidateAfter"])):
                findings.add(where, f"consolidateAfter {disruption['consolidateAfter']!r} is not a duration or Never")
        weight = spec.get("weight")
        if weight is not None and not (isinstance(weight, int) and 1 <= weight <= 100):
            findings.add(where, f"spec.weight must be an integer from 1 to 100, not {weight!r}")
    elif kind == "EC2NodeClass" and api == "karpenter.k8s.aws/v1":
        spec = _keys(where, "spec", obj.get("spec"), EC2NODECLASS_KEYS, findings)
        for k in ("amiSelectorTerms", "subnetSelectorTerms", "securityGroupSelectorTerms"):
            if not isinstance(spec.get(k), list) or not spec.get(k):
                findings.add(where, f"spec.{k} must be a non-empty list")
        if ("role" in spec) == ("instanceProfile" in spec):
            findings.add(where, "spec needs exactly one of role and instanceProfile")
        meta = spec.get("metadataOptions") or {}
        if meta.get("httpTokens") not in (None, "required", "optional"):
            findings.add(where, f"metadataOptions.httpTokens {meta['httpTokens']!r} is not required or optional")
    else:
        findings.add(where, f"no validator for {kind} {api} (Karpenter v1 NodePool and EC2NodeClass only)")


# === entry points ===


def validate_objects(objects: list[dict[str, Any]], findings: Findings) -> int:
    """Validates each object; returns how many were checked."""
    for obj in objects:
        api = str(obj.get("apiVersion", ""))
        if "kind" not in obj or "apiVersion" not in obj:
            findings.add(ref(obj), "has no kind or apiVersion")
        elif api.startswith("keda.sh/"):
            validate_keda(obj, findings)
        elif api.startswith("karpenter.sh/") or api.startswith("karpenter.k8s.aws/"):
            validate_karpenter(obj, findings)
        elif api.startswith("monitoring.coreos.com/"):
            validate_monitoring(obj, findings)
        else:
            validate_builtin(obj, findings)
    return len(objects)


def check(targets: list[str]) -> tuple[Findings, int]:
    findings = Findings("validate")
    seen: set[str] = set()
    count = 0
    for target in targets:
        for obj in render(target):
            key = json.dumps(obj, sort_keys=True)
            if key in seen:
                continue  # the same object rendered by another overlay
            seen.add(key)
            count += validate_objects([copy.deepcopy(obj)], findings)
    return findings, count


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    try:
        findings, count = check(argv)
    except CheckError as e:
        print(f"FAIL [validate] {e}")
        return 1
    rc = findings.report()
    if not rc:
        print(f"ok [validate] {count} objects valid (Kubernetes {K8S_VERSION} strict, KEDA 2.16 schema, Karpenter v1, Prometheus Operator 0.80) in {', '.join(rel(t) for t in argv)}")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
