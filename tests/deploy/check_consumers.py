"""Holds every KEDA nats-jetstream trigger to the stream and consumer names
that the Rust code creates.

KEDA's nats-jetstream scaler falls back to the stream's last sequence when
the consumer it is told to read does not exist, which scales the target to
its maximum: a renamed consumer constant, or a typo in a manifest, must fail
here rather than in production. The names are read from the Rust source,
never restated in this file:

  stream names       libs/mesh-bus/src/topology.rs    StreamKind::name()
  agent consumers    libs/mesh-bus/src/names.rs       agent_consumer(): "agent-{agent}"
                     libs/mesh-bus/src/bus.rs         ensure_agent_consumer(): its stream
  service consumers  <file>: `pub const CONSUMER: &str = "..."` and the
                     stream it is created on (`StreamKind::X, CONSUMER`, or
                     `stream: StreamKind::X, consumer: CONSUMER` in a spec)

For an agent worker the consumer must be `agent-<agent>` for an agent that
the same Deployment serves (AGENTMESH_WORKER_AGENTS, from its env or its
ConfigMaps), and every agent it serves needs a trigger.

Usage: check_consumers.py TARGET...   (kustomization dirs or YAML files)
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from deploylib import REPO, CheckError, Findings, Index, container_env, namespace_of, pod_labels, pod_spec, ref, render, rel

# Which service's consumer is declared in which file. A service missing here
# that gets a nats-jetstream trigger is an error (add its file).
CONSUMER_SOURCES = {
    "orchestrator": "services/orchestrator/src/projection.rs",
    "retrieval": "services/retrieval/src/lib.rs",
    "trace-collector": "services/trace-collector/src/lib.rs",
}
WORKER = "agent-worker"
WORKER_AGENTS_VAR = "AGENTMESH_WORKER_AGENTS"


@dataclass(frozen=True)
class Contract:
    stream: str
    consumer: str | None  # None: per agent, `prefix + agent`
    prefix: str = ""
    source: str = ""


def _read(repo: Path, path: str) -> str:
    try:
        return (repo / path).read_text()
    except OSError as e:
        raise CheckError(f"cannot read {path}: {e}") from e


def _fn_body(text: str, name: str, path: str) -> str:
    m = re.search(rf"\bfn\s+{name}\b[^{{]*\{{", text)
    if not m:
        raise CheckError(f"{path}: fn {name} not found (the deploy contract is read from it)")
    depth, i = 1, m.end()
    while depth and i < len(text):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[m.end() : i - 1]


def stream_names(repo: Path) -> dict[str, str]:
    path = "libs/mesh-bus/src/topology.rs"
    body = _fn_body(_read(repo, path), "name", path)
    names = dict(re.findall(r'Self::(\w+)\s*=>\s*"([^"]+)"', body))
    if not names:
        raise CheckError(f"{path}: no `Self::X => \"NAME\"` arms in StreamKind::name")
    return names


def read_contracts(repo: Path = REPO) -> dict[str, Contract]:
    streams = stream_names(repo)

    def stream_of(variant: str, path: str) -> str:
        if variant not in streams:
            raise CheckError(f"{path}: StreamKind::{variant} has no name in StreamKind::name")
        return streams[variant]

    contracts: dict[str, Contract] = {}
    for service, path in CONSUMER_SOURCES.items():
        text = _read(repo, path)
        const = re.search(r'pub\s+const\s+CONSUMER\s*:\s*&str\s*=\s*"([^"]+)"\s*;', text)
        if not const:
            raise CheckError(f"{path}: no `pub const CONSUMER: &str = \"...\"` (the {service} consumer of the deploy contract)")
        # `ensure_durable(StreamKind::X, CONSUMER, ..)` or a spec struct's
        # `stream: StreamKind::X, consumer: CONSUMER`.
        on = re.search(r"StreamKind::(\w+)\s*,\s*(?:consumer\s*:\s*)?CONSUMER\b", text)
        if not on:
            raise CheckError(f"{path}: no `StreamKind::X, CONSUMER` (or `stream: StreamKind::X, consumer: CONSUMER`) naming the stream of {service}'s consumer")
        contracts[service] = Contract(stream_of(on.group(1), path), const.group(1), source=path)

    names_rs = "libs/mesh-bus/src/names.rs"
    body = _fn_body(_read(repo, names_rs), "agent_consumer", names_rs)
    fmt = re.search(r'format!\(\s*"([^"{]*)\{agent\}"\s*\)', body)
    if not fmt:
        raise CheckError(f'{names_rs}: agent_consumer no longer builds `format!("<prefix>{{agent}}")`')
    bus_rs = "libs/mesh-bus/src/bus.rs"
    body = _fn_body(_read(repo, bus_rs), "ensure_agent_consumer", bus_rs)
    on = re.search(r"ensure_durable\(\s*StreamKind::(\w+)", body)
    if not on:
        raise CheckError(f"{bus_rs}: ensure_agent_consumer no longer calls ensure_durable(StreamKind::X, ...)")
    contracts[WORKER] = Contract(stream_of(on.group(1), bus_rs), None, prefix=fmt.group(1), source=names_rs)
    return contracts


def _service_of(deployment: dict) -> str:
    labels = pod_labels(deployment)
    if "app.kubernetes.io/name" in labels:
        return labels["app.kubernetes.io/name"]
    containers = pod_spec(deployment).get("containers") or [{}]
    return containers[0].get("name", "")


def _worker_agents(index: Index, deployment: dict) -> tuple[list[str] | None, str]:
    ns = namespace_of(deployment)
    for container in pod_spec(deployment).get("containers") or []:
        env = container_env(index, ns, container)
        if WORKER_AGENTS_VAR in env:
            raw = env[WORKER_AGENTS_VAR]
            if raw is None:
                return None, "set from a Secret or the downward API (cannot be checked)"
            agents = [a.strip() for a in raw.split(",") if a.strip()]
            return agents, raw
    return None, "not set (the worker then serves every agent: `*`)"


def check_objects(objects: list[dict], contracts: dict[str, Contract], findings: Findings) -> int:
    """Checks every nats-jetstream trigger; returns how many were checked."""
    index = Index(objects)
    checked = 0
    for so in index.of_kind("ScaledObject"):
        triggers = [t for t in (so.get("spec") or {}).get("triggers") or [] if t.get("type") == "nats-jetstream"]
        if not triggers:
            continue
        target = (so.get("spec") or {}).get("scaleTargetRef") or {}
        kind = target.get("kind", "Deployment")
        deployment = index.get(kind, namespace_of(so), target.get("name", ""))
        if deployment is None:
            findings.add(ref(so), f"scaleTargetRef {kind} {target.get('name')!r} is not in the rendered manifests")
            continue
        service = _service_of(deployment)
        contract = contracts.get(service)
        if contract is None:
            findings.add(
                ref(so),
                f"targets {ref(deployment)} (service {service!r}), which owns no consumer in the deploy contract; "
                f"known: {', '.join(sorted(contracts))}",
            )
            continue
        agents, raw = _worker_agents(index, deployment) if contract.consumer is None else (None, "")
        if contract.consumer is None and agents is None:
            findings.add(ref(deployment), f"{WORKER_AGENTS_VAR} is {raw}; a worker scaled on one consumer must name its agents")
        if contract.consumer is None and agents == ["*"]:
            findings.add(ref(deployment), f"{WORKER_AGENTS_VAR}=* serves every agent; a scaled worker Deployment serves named agents only")
            agents = None
        triggered_agents: set[str] = set()
        for i, trigger in enumerate(triggers):
            checked += 1
            meta = trigger.get("metadata") or {}
            where = f"{ref(so)} trigger[{i}]"
            stream, consumer = meta.get("stream"), meta.get("consumer")
            if stream != contract.stream:
                findings.add(where, f"stream {stream!r} is not {contract.stream!r}, the stream {service}'s consumer is created on ({contract.source})")
            if contract.consumer is not None:
                if consumer != contract.consumer:
                    findings.add(
                        where,
                        f"consumer {consumer!r} is not {contract.consumer!r}, the CONSUMER constant of {contract.source}; "
                        "KEDA would read the stream's last sequence and scale to the maximum",
                    )
                continue
            if not isinstance(consumer, str) or not consumer.startswith(contract.prefix):
                findings.add(where, f"consumer {consumer!r} is not {contract.prefix}<agent> ({contract.source})")
                continue
            agent = consumer[len(contract.prefix) :]
            triggered_agents.add(agent)
            if agents is not None and agent not in agents:
                findings.add(
                    where,
                    f"consumer {consumer!r} belongs to agent {agent!r}, but {ref(deployment)} serves "
                    f"{WORKER_AGENTS_VAR}={raw!r}: it would scale on another agent's queue",
                )
        for agent in sorted(set(agents or []) - triggered_agents):
            findings.add(ref(so), f"no trigger on {contract.prefix}{agent}, though {ref(deployment)} serves agent {agent!r}")

    # Every Deployment that owns a consumer scales on it, where KEDA is used.
    if any(True for _ in index.of_kind("ScaledObject")):
        scaled = {
            (namespace_of(so), ((so.get("spec") or {}).get("scaleTargetRef") or {}).get("name"))
            for so in index.of_kind("ScaledObject")
            if any(t.get("type") == "nats-jetstream" for t in (so.get("spec") or {}).get("triggers") or [])
        }
        for deployment in index.of_kind("Deployment"):
            if _service_of(deployment) in contracts and (namespace_of(deployment), deployment["metadata"]["name"]) not in scaled:
                findings.add(ref(deployment), "owns a JetStream consumer but no ScaledObject scales it on that consumer's lag")
    return checked


def check(targets: list[str], repo: Path = REPO) -> tuple[Findings, int]:
    findings = Findings("consumers")
    contracts = read_contracts(repo)
    checked = sum(check_objects(render(t), contracts, findings) for t in targets)
    return findings, checked


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    try:
        findings, checked = check(argv)
        contracts = read_contracts()
    except CheckError as e:
        print(f"FAIL [consumers] {e}")
        return 1
    rc = findings.report()
    if not rc:
        names = ", ".join(
            f"{c.stream}/{c.consumer or c.prefix + '<agent>'}" for _, c in sorted(contracts.items())
        )
        print(f"ok [consumers] {checked} nats-jetstream triggers match the code's names ({names}) in {', '.join(rel(t) for t in argv)}")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
