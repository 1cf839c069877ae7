"""The platform's deploy rules, checked on rendered manifests: what a schema
cannot say.

Every pod workload (Deployment, StatefulSet):
  - restricted security context: runAsNonRoot, seccomp RuntimeDefault, no
    privilege escalation, read-only root filesystem, capabilities drop ALL;
  - CPU and memory requests and limits; liveness and readiness probes; an
    explicit terminationGracePeriodSeconds; no service account token unless
    it asks for one; its ServiceAccount, ConfigMaps (and, where the render
    generates them, Secrets) exist in the render.
The six agentmesh services, in addition:
  - liveness on /healthz and readiness on /readyz, on the port their
    *_ADMIN_LISTEN variable binds;
  - every *_LISTEN variable their code reads (found in services/<name>/src,
    and mesh_runtime::queue_service) is set, to no loopback address, on a
    port the container declares: the code's defaults bind 127.0.0.1;
  - graceful termination longer than the drain: terminationGracePeriodSeconds
    above the longest call they wait for (AGENTMESH_WORKER_INFERENCE_TIMEOUT_MS,
    AGENTMESH_ROUTER_REQUEST_TIMEOUT_MS), which must be set explicitly.
KEDA ScaledObjects: the target exists; pollingInterval, cooldownPeriod,
  minReplicaCount and maxReplicaCount are explicit (the local scaler reads
  them), min <= max; nats-jetstream triggers set lagThreshold and
  activationLagThreshold and read monitoring on port 8222; a scaled
  Deployment has a PodDisruptionBudget that selects its pods.
Services select pods of some workload, on ports those pods declare.
Namespaces: each one used is declared, with Pod Security `restricted`, a
  default-deny ingress NetworkPolicy and a ResourceQuota that leaves room for
  every workload at its maximum replicas.
Bus settings (AGENTMESH_BUS_*) are equal in every ConfigMap that sets them:
  the orchestrator and the workers both create agent consumers.
Karpenter: a NodePool's EC2NodeClass exists; a pod that selects a NodePool's
  label tolerates that NodePool's taints.

Usage: check_workloads.py [--require-secrets] TARGET...
"""

from __future__ import annotations

import functools
import re
import sys
from collections import defaultdict
from fractions import Fraction
from pathlib import Path
from typing import Any

from deploylib import (
    REPO,
    SERVICES,
    CheckError,
    Findings,
    Index,
    container_env,
    namespace_of,
    pod_labels,
    pod_spec,
    ref,
    render,
    rel,
    selector_matches,
)

# The longest call each service waits for while draining; the variable must
# be set (the code's defaults, 600 s, are longer than any grace period).
DRAIN_BOUNDS = {
    "agent-worker": "AGENTMESH_WORKER_INFERENCE_TIMEOUT_MS",
    "inference-router": "AGENTMESH_ROUTER_REQUEST_TIMEOUT_MS",
}
QUOTA_KEYS = ("requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "requests.nvidia.com/gpu")
LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|localhost|\[::1\]):")

_SUFFIX = {
    "": Fraction(1), "m": Fraction(1, 1000),
    "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
    "Ki": Fraction(2**10), "Mi": Fraction(2**20), "Gi": Fraction(2**30), "Ti": Fraction(2**40),
}


def quantity(value: Any) -> Fraction:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?", str(value))
    if not m:
        raise ValueError(f"not a quantity: {value!r}")
    return Fraction(m.group(1)) * _SUFFIX[m.group(2) or ""]


def _port_of(listen: str) -> int | None:
    m = re.search(r":(\d+)$", listen)
    return int(m.group(1)) if m else None


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def check_pod_security(w: dict[str, Any], f: Findings) -> None:
    spec = pod_spec(w)
    pod_sc = spec.get("securityContext") or {}
    for c in _containers(spec):
        sc = c.get("securityContext") or {}
        where = f"{ref(w)} container {c.get('name')}"
        if not (sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True):
            f.add(where, "runAsNonRoot is not true")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            f.add(where, f"seccompProfile.type is {seccomp!r}, not RuntimeDefault")
        if sc.get("allowPrivilegeEscalation") is not False:
            f.add(where, "allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            f.add(where, "readOnlyRootFilesystem is not true")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            f.add(where, "capabilities.drop does not contain ALL")
        if (sc.get("capabilities") or {}).get("add"):
            f.add(where, f"adds capabilities {sc['capabilities']['add']}")
        if sc.get("privileged"):
            f.add(where, "is privileged")


def check_resources_and_probes(w: dict[str, Any], f: Findings) -> None:
    for c in pod_spec(w).get("containers") or []:
        where = f"{ref(w)} container {c.get('name')}"
        res = c.get("resources") or {}
        for section in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in (res.get(section) or {}):
                    f.add(where, f"no {section}.{r}")
        for probe in ("livenessProbe", "readinessProbe"):
            if probe not in c:
                f.add(where, f"no {probe}")
    if "terminationGracePeriodSeconds" not in pod_spec(w):
        f.add(ref(w), "terminationGracePeriodSeconds is not set (the default 30 s is no decision)")


def check_references(w: dict[str, Any], index: Index, require_secrets: bool, f: Findings) -> None:
    ns = namespace_of(w)
    spec = pod_spec(w)
    sa_name = spec.get("serviceAccountName") or "default"
    sa = index.get("ServiceAccount", ns, sa_name)
    if sa_name != "default" and sa is None:
        f.add(ref(w), f"ServiceAccount {sa_name!r} is not in the render")
    automount = spec.get("automountServiceAccountToken", (sa or {}).get("automountServiceAccountToken"))
    if automount is not False:
        f.add(ref(w), "mounts a service account token (set automountServiceAccountToken: false)")
    for c in _containers(spec):
        where = f"{ref(w)} container {c.get('name')}"
        for source in c.get("envFrom") or []:
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                r = source.get(key)
                if r and not r.get("optional") and (kind == "ConfigMap" or require_secrets):
                    if index.get(kind, ns, r.get("name", "")) is None:
                        f.add(where, f"envFrom {kind} {r.get('name')!r} is not in the render")
        for var in c.get("env") or []:
            vf = var.get("valueFrom") or {}
            for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                r = vf.get(key)
                if not r or r.get("optional") or (kind == "Secret" and not require_secrets):
                    continue
                obj = index.get(kind, ns, r.get("name", ""))
                if obj is None:
                    f.add(where, f"env {var['name']}: {kind} {r.get('name')!r} is not in the render")
                elif r.get("key") not in (obj.get("data") or {}) and r.get("key") not in (obj.get("stringData") or {}):
                    f.add(where, f"env {var['name']}: {kind} {r.get('name')!r} has no key {r.get('key')!r}")


def _probe_port(container: dict[str, Any], port: Any) -> int | None:
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return p.get("containerPort")
    return None


@functools.lru_cache(maxsize=None)
def listen_vars(service: str, repo: Path = REPO) -> frozenset[str]:
    """The *_LISTEN variables a service's code reads, from its source: every
    one defaults to 127.0.0.1, so every one must be set in its Deployment."""
    src = repo / "services" / service / "src"
    text = "\n".join(p.read_text() for p in sorted(src.glob("*.rs")))
    found = set(re.findall(r'"(AGENTMESH_\w+_LISTEN)"', text))
    prefix = re.search(r'const\s+PREFIX\s*:\s*&str\s*=\s*"(AGENTMESH_\w+_)"', text)
    if prefix:
        found |= {prefix.group(1) + name for name in re.findall(r'\bvar\("(\w*LISTEN)"\)', text)}
    queue = re.search(r'env_prefix\s*:\s*"(\w+)"', text)
    if queue:
        # mesh_runtime::queue_service builds `AGENTMESH_{env_prefix}_{name}`.
        qs = (repo / "libs/mesh-runtime/src/queue_service.rs").read_text()
        if 'format!("AGENTMESH_{}_{name}"' not in qs:
            raise CheckError("libs/mesh-runtime/src/queue_service.rs: no longer names its variables AGENTMESH_{env_prefix}_{name}")
        found |= {f"AGENTMESH_{queue.group(1)}_{name}" for name in re.findall(r'\bvar\("(\w*LISTEN)"\)', qs)}
    if not found:
        raise CheckError(f"services/{service}/src: found no *_LISTEN variable (the listen addresses are read from the code)")
    return frozenset(found)


def check_service_contract(w: dict[str, Any], index: Index, f: Findings) -> None:
    service = pod_labels(w).get("app.kubernetes.io/name")
    if service not in SERVICES:
        return
    ns = namespace_of(w)
    for c in pod_spec(w).get("containers") or []:
        where = f"{ref(w)} container {c.get('name')}"
        env = container_env(index, ns, c)
        for var in sorted(listen_vars(service) - set(env)):
            f.add(where, f"{var} (read by services/{service}) is not set: it would bind 127.0.0.1, unreachable from outside the pod")
        declared = {p.get("containerPort") for p in c.get("ports") or []}
        admin_port = None
        for var, value in env.items():
            if not (var.startswith("AGENTMESH_") and var.endswith("_LISTEN")) or value is None:
                continue
            if LOOPBACK.match(value):
                f.add(where, f"{var}={value} binds loopback: nothing outside the pod reaches it")
            port = _port_of(value)
            if port is not None and port != 0 and port not in declared:
                f.add(where, f"{var} listens on {port}, which the container does not declare")
            if var.endswith("_ADMIN_LISTEN"):
                admin_port = port
        if admin_port is None:
            f.add(where, "no *_ADMIN_LISTEN in its environment (the admin server would bind 127.0.0.1)")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            http = (c.get(probe) or {}).get("httpGet")
            if not http:
                f.add(where, f"{probe} is not an httpGet on {path}")
                continue
            if http.get("path") != path:
                f.add(where, f"{probe} probes {http.get('path')!r}, not {path}")
            port = _probe_port(c, http.get("port"))
            if admin_port is not None and port != admin_port:
                f.add(where, f"{probe} probes port {http.get('port')!r}, not the admin port {admin_port}")
        bound_var = DRAIN_BOUNDS.get(service)
        if bound_var:
            grace = pod_spec(w).get("terminationGracePeriodSeconds")
            raw = env.get(bound_var)
            if raw is None:
                f.add(where, f"{bound_var} is not set: the drain would wait for the code's default (600 s)")
            elif not str(raw).isdigit():
                f.add(where, f"{bound_var}={raw!r} is not a number of milliseconds")
            elif grace is not None and grace * 1000 <= int(raw):
                f.add(
                    ref(w),
                    f"terminationGracePeriodSeconds {grace} does not exceed the drain: {bound_var}={raw} ms "
                    "(the kubelet would kill calls still in flight)",
                )


def check_scaled_objects(index: Index, f: Findings) -> dict[tuple[str | None, str], int]:
    """Returns the maximum replicas of each scaled target."""
    maxima: dict[tuple[str | None, str], int] = {}
    for so in index.of_kind("ScaledObject"):
        spec = so.get("spec") or {}
        target = spec.get("scaleTargetRef") or {}
        kind = target.get("kind", "Deployment")
        ns = namespace_of(so)
        workload = index.get(kind, ns, target.get("name", ""))
        if workload is None:
            f.add(ref(so), f"scaleTargetRef {kind} {target.get('name')!r} is not in the render")
        for k in ("pollingInterval", "cooldownPeriod", "minReplicaCount", "maxReplicaCount"):
            if k not in spec:
                f.add(ref(so), f"{k} is not set explicitly (the local scaler reads it from the render)")
        lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if isinstance(lo, int) and isinstance(hi, int):
            if lo > hi:
                f.add(ref(so), f"minReplicaCount {lo} exceeds maxReplicaCount {hi}")
            if hi < 1:
                f.add(ref(so), "maxReplicaCount is below 1")
            maxima[(ns, target.get("name", ""))] = hi
        for i, t in enumerate(spec.get("triggers") or []):
            if t.get("type") != "nats-jetstream":
                continue
            meta = t.get("metadata") or {}
            for k in ("lagThreshold", "activationLagThreshold"):
                if k not in meta:
                    f.add(f"{ref(so)} trigger[{i}]", f"{k} is not set explicitly")
            endpoint = meta.get("natsServerMonitoringEndpoint", "")
            if not str(endpoint).endswith(":8222"):
                f.add(f"{ref(so)} trigger[{i}]", f"natsServerMonitoringEndpoint {endpoint!r} is not NATS monitoring on port 8222")
        if workload is not None:
            labels = pod_labels(workload)
            if not any(
                namespace_of(pdb) == ns
                and selector_matches(((pdb.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}, labels)
                for pdb in index.of_kind("PodDisruptionBudget")
            ):
                f.add(ref(workload), "is scaled by KEDA but no PodDisruptionBudget selects its pods")
    return maxima


def check_services(index: Index, f: Findings) -> None:
    workloads = list(index.of_kind("Deployment", "StatefulSet"))
    for svc in index.of_kind("Service"):
        selector = (svc.get("spec") or {}).get("selector") or {}
        if not selector:
            continue
        pods = [w for w in workloads if namespace_of(w) == namespace_of(svc) and selector_matches(selector, pod_labels(w))]
        if not pods:
            f.add(ref(svc), f"selector {selector} matches no workload's pods")
            continue
        ports = [p for w in pods for c in pod_spec(w).get("containers") or [] for p in c.get("ports") or []]
        for p in (svc.get("spec") or {}).get("ports") or []:
            target = p.get("targetPort", p.get("port"))
            if not any(q.get("name") == target or q.get("containerPort") == target for q in ports):
                f.add(ref(svc), f"port {p.get('name', p.get('port'))}: targetPort {target!r} is not a port of the selected pods")


def check_namespaces(index: Index, maxima: dict[tuple[str | None, str], int], f: Findings) -> None:
    declared = index.namespaces()
    used = {namespace_of(o) for o in index.objects if namespace_of(o)}
    for ns in sorted(used - declared):
        f.add(f"namespace {ns}", "is used but not declared in the render")
    for ns_obj in index.of_kind("Namespace"):
        ns = ns_obj["metadata"]["name"]
        labels = ns_obj["metadata"].get("labels") or {}
        if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
            f.add(ref(ns_obj), "Pod Security enforce label is not `restricted`")
        policies = [p for p in index.of_kind("NetworkPolicy") if namespace_of(p) == ns]
        if not any(
            (p.get("spec") or {}).get("podSelector") in ({}, None)
            and "Ingress" in ((p.get("spec") or {}).get("policyTypes") or [])
            and not (p.get("spec") or {}).get("ingress")
            for p in policies
        ):
            f.add(ref(ns_obj), "has no default-deny ingress NetworkPolicy")
        quotas = [q for q in index.of_kind("ResourceQuota") if namespace_of(q) == ns]
        if not quotas:
            f.add(ref(ns_obj), "has no ResourceQuota")
            continue
        # Room for every workload at its maximum replicas.
        need: dict[str, Fraction] = defaultdict(Fraction)
        for w in index.of_kind("Deployment", "StatefulSet"):
            if namespace_of(w) != ns:
                continue
            name = w["metadata"]["name"]
            replicas = maxima.get((ns, name), (w.get("spec") or {}).get("replicas", 1))
            need["pods"] += replicas
            for c in pod_spec(w).get("containers") or []:
                res = c.get("resources") or {}
                for key in QUOTA_KEYS:
                    section, resource = key.split(".", 1)
                    value = (res.get(section) or {}).get(resource)
                    if value is None and section == "requests":
                        value = (res.get("limits") or {}).get(resource)  # requests default to limits
                    if value is not None:
                        need[key] += quantity(value) * replicas
        for q in quotas:
            hard = (q.get("spec") or {}).get("hard") or {}
            for key, total in need.items():
                if key in hard and total > quantity(hard[key]):
                    f.add(ref(q), f"{key} {hard[key]} is below what the workloads need at their maximum replicas ({float(total):g})")
                if key not in hard and key != "pods" and total and key in ("requests.nvidia.com/gpu",):
                    f.add(ref(q), f"does not bound {key}, which workloads here request")


def check_bus_settings(index: Index, f: Findings) -> None:
    seen: dict[str, tuple[str, dict[str, str]]] = {}
    for cm in index.of_kind("ConfigMap"):
        bus = {k: v for k, v in (cm.get("data") or {}).items() if k.startswith("AGENTMESH_BUS_")}
        if not bus:
            continue
        key = repr(sorted(bus.items()))
        seen.setdefault(key, (ref(cm), bus))
    if len(seen) > 1:
        (first_ref, first), *others = seen.values()
        for other_ref, other in others:
            diff = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
            f.add(other_ref, f"bus settings differ from {first_ref} in {', '.join(diff)}")


def check_karpenter(index: Index, f: Findings) -> None:
    pools = list(index.of_kind("NodePool"))
    for pool in pools:
        node_class = (((pool.get("spec") or {}).get("template") or {}).get("spec") or {}).get("nodeClassRef") or {}
        if index.get(node_class.get("kind", "EC2NodeClass"), None, node_class.get("name", "")) is None:
            f.add(ref(pool), f"nodeClassRef {node_class.get('kind')} {node_class.get('name')!r} is not in the render")
    if not pools:
        return
    for w in index.of_kind("Deployment", "StatefulSet"):
        selector = pod_spec(w).get("nodeSelector") or {}
        if not selector:
            continue
        matching = [
            p for p in pools
            if selector_matches(selector, ((((p.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}))
        ]
        if not matching:
            f.add(ref(w), f"nodeSelector {selector} matches no NodePool's node labels")
        tolerations = pod_spec(w).get("tolerations") or []
        for p in matching:
            for taint in (((p.get("spec") or {}).get("template") or {}).get("spec") or {}).get("taints") or []:
                if not any(
                    t.get("key") == taint.get("key")
                    and t.get("effect") in (None, taint.get("effect"))
                    and (t.get("operator") == "Exists" or t.get("value") == taint.get("value"))
                    for t in tolerations
                ):
                    f.add(ref(w), f"selects NodePool {p['metadata']['name']} but does not tolerate its taint {taint.get('key')}:{taint.get('effect')}")


def check_objects(objects: list[dict[str, Any]], require_secrets: bool, f: Findings) -> int:
    index = Index(objects)
    workloads = list(index.of_kind("Deployment", "StatefulSet"))
    for w in workloads:
        check_pod_security(w, f)
        check_resources_and_probes(w, f)
        check_references(w, index, require_secrets, f)
        check_service_contract(w, index, f)
    maxima = check_scaled_objects(index, f)
    check_services(index, f)
    check_namespaces(index, maxima, f)
    check_bus_settings(index, f)
    check_karpenter(index, f)
    return len(workloads)


def check(targets: list[str], require_secrets: bool = False) -> tuple[Findings, int]:
    f = Findings("workloads")
    count = 0
    for target in targets:
        before = len(f.items)
        count += check_objects(render(target), require_secrets, f)
        f.items[before:] = [f"{rel(target)}: {item}" for item in f.items[before:]]
    return f, count


def main(argv: list[str]) -> int:
    require_secrets = "--require-secrets" in argv
    targets = [a for a in argv if a != "--require-secrets"]
    if not targets:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    try:
        findings, count = check(targets, require_secrets)
    except (CheckError, ValueError) as e:
        print(f"FAIL [workloads] {e}")
        return 1
    rc = findings.report()
    if not rc:
        print(f"ok [workloads] {count} workloads follow the deploy rules in {', '.join(rel(t) for t in targets)}")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
