"""Evaluates a Tiltfile with a Starlark interpreter (starlark-pyo3) against
stand-ins for the Tilt built-ins it uses, so that a typo or a missing
argument fails here instead of in someone's `tilt up`.

The stand-ins take Tilt's parameters (names and defaults from Tilt's API
reference), so an unknown keyword or a missing required argument fails as a
call error; a built-in that has no stand-in fails as an unknown name. What
they check beyond the call:

  kustomize()       the directory exists; it is rendered for real (`kubectl
                    kustomize`), and k8s_yaml() records its objects
  docker_build()    the Dockerfile exists; live_update holds sync()/run()
                    steps, syncs first, each sync inside the build context;
                    one build per image; every built image is used by a
                    rendered workload and every `agentmesh/*` image that a
                    workload uses is built
  k8s_resource()    `workload` names a workload (Deployment, StatefulSet, ...)
                    in the rendered YAML, once; `objects` selectors
                    (name:kind[:namespace]) each match a rendered object;
                    port_forwards are LOCAL:CONTAINER with a port the
                    workload's containers declare; resource_deps name
                    resources that exist; labels are valid
  local_resource()  unique name; a command; the script it runs and its deps
                    exist
  local()           not run (it may have side effects): recorded only
Afterwards every rendered workload must carry a label (grouped by layer).

Paths are relative to the Tiltfile's directory, as in Tilt.

Usage: check_tiltfile.py TILTFILE
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import starlark as sl

from deploylib import CheckError, Findings, Index, render, rel

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod")
LABEL = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
TRIGGER_MODE_AUTO = 0
TRIGGER_MODE_MANUAL = 1


class TiltError(Exception):
    """A Tilt built-in refused its arguments (Tilt would stop loading)."""


@dataclass
class Blob:
    objects: list[dict[str, Any]]
    source: str


@dataclass
class LiveUpdateStep:
    kind: str  # "sync" | "run"
    args: dict[str, Any]


@dataclass
class TiltState:
    base: Path
    objects: list[dict[str, Any]] = field(default_factory=list)
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {kind, labels, deps, ...}
    configured_workloads: set[str] = field(default_factory=set)
    local_commands: list[str] = field(default_factory=list)

    def path(self, p: str) -> Path:
        return (self.base / p).resolve()


def _str(name: str, value: Any, *, empty_ok: bool = False) -> str:
    if not isinstance(value, str):
        raise TiltError(f"{name} must be a string, got {type(value).__name__}")
    if not empty_ok and not value:
        raise TiltError(f"{name} must not be empty")
    return value


def _str_list(name: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TiltError(f"{name} must be a string or a list of strings")
    return list(value)


def _labels(value: Any) -> list[str]:
    labels = _str_list("labels", value)
    for label in labels:
        if not LABEL.match(label):
            raise TiltError(f"label {label!r} is not a valid label")
    return labels


def make_builtins(state: TiltState) -> dict[str, Any]:
    def kustomize(pathToDir, kustomize_bin=None, flags=[]):  # noqa: B006 (Tilt's signature)
        path = state.path(_str("pathToDir", pathToDir))
        if not path.is_dir():
            raise TiltError(f"kustomize: {pathToDir} is not a directory")
        if flags:
            raise TiltError("kustomize: flags are not supported by this check")
        return sl.OpaquePythonObject(Blob(render(path), rel(path)))

    def k8s_yaml(yaml, allow_duplicates=False):
        items = yaml if isinstance(yaml, list) else [yaml]
        for item in items:
            if isinstance(item, Blob):
                state.objects.extend(item.objects)
            elif isinstance(item, str):
                path = state.path(item)
                if not path.is_file():
                    raise TiltError(f"k8s_yaml: {item} does not exist")
                state.objects.extend(render(path))
            else:
                raise TiltError(f"k8s_yaml: expected a path or a Blob, got {type(item).__name__}")

    def sync(local_path, remote_path):
        _str("local_path", local_path)
        if not _str("remote_path", remote_path).startswith("/"):
            raise TiltError(f"sync: remote_path {remote_path!r} must be absolute")
        return sl.OpaquePythonObject(LiveUpdateStep("sync", {"local_path": local_path, "remote_path": remote_path}))

    def run(cmd, trigger=[], echo_off=False):  # noqa: B006
        _str("cmd", cmd) if isinstance(cmd, str) else _str_list("cmd", cmd)
        return sl.OpaquePythonObject(LiveUpdateStep("run", {"cmd": cmd, "trigger": _str_list("trigger", trigger)}))

    def docker_build(
        ref,
        context,
        build_args={},  # noqa: B006
        dockerfile="Dockerfile",
        dockerfile_contents="",
        live_update=[],  # noqa: B006
        match_in_env_vars=False,
        ignore=[],  # noqa: B006
        only=[],  # noqa: B006
        entrypoint=[],  # noqa: B006
        target="",
        ssh="",
        network="",
        secret="",
        extra_tag="",
        container_args=None,
        cache_from=[],  # noqa: B006
        pull=False,
        platform="",
        extra_hosts=[],  # noqa: B006
    ):
        _str("ref", ref)
        ctx = state.path(_str("context", context))
        if ref in state.images:
            raise TiltError(f"docker_build: image {ref!r} is already built by another docker_build")
        if not dockerfile_contents and not state.path(dockerfile).is_file():
            raise TiltError(f"docker_build {ref}: dockerfile {dockerfile} does not exist")
        steps = live_update if isinstance(live_update, list) else [live_update]
        seen_run = False
        for step in steps:
            if not isinstance(step, LiveUpdateStep):
                raise TiltError(f"docker_build {ref}: live_update takes sync() and run() steps, got {type(step).__name__}")
            if step.kind == "sync":
                if seen_run:
                    raise TiltError(f"docker_build {ref}: every sync() must come before the run() steps")
                local = state.path(step.args["local_path"])
                if ctx != local and ctx not in local.parents:
                    raise TiltError(f"docker_build {ref}: sync {step.args['local_path']} is outside the build context {context}")
            else:
                seen_run = True
        state.images[ref] = {"context": context, "live_update": steps}

    def k8s_resource(
        workload="",
        new_name="",
        port_forwards=[],  # noqa: B006
        extra_pod_selectors=[],  # noqa: B006
        trigger_mode=TRIGGER_MODE_AUTO,
        resource_deps=[],  # noqa: B006
        objects=[],  # noqa: B006
        auto_init=True,
        pod_readiness="",
        links=[],  # noqa: B006
        labels=[],  # noqa: B006
        discovery_strategy="",
    ):
        index = Index(state.objects)
        if workload:
            matches = [o for o in index.of_kind(*WORKLOAD_KINDS) if o["metadata"]["name"] == workload]
            if not matches:
                known = sorted(o["metadata"]["name"] for o in index.of_kind(*WORKLOAD_KINDS))
                raise TiltError(f"k8s_resource: no workload named {workload!r} in the YAML (workloads: {', '.join(known)})")
            if workload in state.configured_workloads:
                raise TiltError(f"k8s_resource: workload {workload!r} is configured twice")
            state.configured_workloads.add(workload)
            name = new_name or workload
            pod_ports = {
                p.get("containerPort")
                for o in matches
                for c in ((o.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
                for p in c.get("ports") or []
            }
        elif new_name and objects:
            name, pod_ports = new_name, None
        else:
            raise TiltError("k8s_resource: needs a workload, or new_name with objects")
        if name in state.resources and state.resources[name]["kind"] != "workload-default":
            raise TiltError(f"k8s_resource: resource {name!r} is defined twice")
        for selector in _str_list("objects", objects):
            parts = selector.split(":")
            if not 1 <= len(parts) <= 3:
                raise TiltError(f"k8s_resource {name}: object selector {selector!r} is not name[:kind[:namespace]]")
            hits = [
                o for o in state.objects
                if o["metadata"]["name"].lower() == parts[0].lower()
                and (len(parts) < 2 or o["kind"].lower() == parts[1].lower())
                and (len(parts) < 3 or (o["metadata"].get("namespace") or "").lower() == parts[2].lower())
            ]
            if not hits:
                raise TiltError(f"k8s_resource {name}: object selector {selector!r} matches nothing in the YAML")
        for pf in _str_list("port_forwards", port_forwards):
            m = re.fullmatch(r"(?:(\d+):)?(\d+)", pf)
            if not m:
                raise TiltError(f"k8s_resource {name}: port forward {pf!r} is not LOCAL:CONTAINER")
            container = int(m.group(2))
            if pod_ports is not None and container not in pod_ports:
                raise TiltError(f"k8s_resource {name}: port forward {pf!r} targets {container}, which {workload} does not declare")
        state.resources[name] = {
            "kind": "k8s",
            "workload": workload,
            "labels": _labels(labels),
            "deps": _str_list("resource_deps", resource_deps),
        }

    def local_resource(
        name,
        cmd="",
        deps=[],  # noqa: B006
        trigger_mode=TRIGGER_MODE_AUTO,
        resource_deps=[],  # noqa: B006
        ignore=[],  # noqa: B006
        auto_init=True,
        serve_cmd="",
        cmd_bat="",
        serve_cmd_bat="",
        allow_parallel=False,
        links=[],  # noqa: B006
        tags=[],  # noqa: B006
        env={},  # noqa: B006
        serve_env={},  # noqa: B006
        readiness_probe=None,
        dir="",
        serve_dir="",
        labels=[],  # noqa: B006
    ):
        _str("name", name)
        if name in state.resources:
            raise TiltError(f"local_resource: resource {name!r} is defined twice")
        if not cmd and not serve_cmd:
            raise TiltError(f"local_resource {name}: needs cmd or serve_cmd")
        for command in (cmd, serve_cmd):
            first = (command if isinstance(command, str) else " ".join(command)).split()[:1]
            if first and "/" in first[0] and not state.path(first[0]).exists():
                raise TiltError(f"local_resource {name}: {first[0]} does not exist")
        for dep in _str_list("deps", deps):
            if not state.path(dep).exists():
                raise TiltError(f"local_resource {name}: dep {dep} does not exist")
        state.resources[name] = {"kind": "local", "labels": _labels(labels), "deps": _str_list("resource_deps", resource_deps)}

    def local(command, quiet=False, command_bat="", echo_off=False, env={}, dir="", stdin=None):  # noqa: B006
        state.local_commands.append(command if isinstance(command, str) else " ".join(command))
        return ""

    def update_settings(max_parallel_updates=3, k8s_upsert_timeout_secs=30, suppress_unused_image_warnings=None):
        for name, value in (("max_parallel_updates", max_parallel_updates), ("k8s_upsert_timeout_secs", k8s_upsert_timeout_secs)):
            if not isinstance(value, int) or value < 1:
                raise TiltError(f"update_settings: {name} must be a positive integer")

    def allow_k8s_contexts(contexts):
        _str_list("contexts", contexts)

    return {
        "kustomize": kustomize,
        "k8s_yaml": k8s_yaml,
        "sync": sync,
        "run": run,
        "docker_build": docker_build,
        "k8s_resource": k8s_resource,
        "local_resource": local_resource,
        "local": local,
        "update_settings": update_settings,
        "allow_k8s_contexts": allow_k8s_contexts,
    }


def _one_line(message: str) -> str:
    """`line L:C: error` from starlark's multi-line report (the finding
    names the file)."""
    lines = message.strip().splitlines()
    error = next((l.strip() for l in lines if l.startswith("error:")), lines[-1] if lines else message)
    error = error.removeprefix("error:").strip()
    error = re.sub(r"^(TiltError|TypeError|ValueError): ", "", error)
    where = next((l.split("-->", 1)[1].strip() for l in lines if "-->" in l), "")
    pos = where.partition(":")[2]
    return f"line {pos}: {error}" if pos else error


def evaluate(tiltfile: Path) -> TiltState:
    state = TiltState(base=tiltfile.resolve().parent)
    module = sl.Module()
    for name, fn in make_builtins(state).items():
        fn.__qualname__ = name  # call errors read `docker_build() missing ...`
        module.add_callable(name, fn)
    module["TRIGGER_MODE_AUTO"] = TRIGGER_MODE_AUTO
    module["TRIGGER_MODE_MANUAL"] = TRIGGER_MODE_MANUAL
    globals_ = sl.Globals.extended_by([sl.LibraryExtension.StructType, sl.LibraryExtension.Print])
    try:
        ast = sl.parse(str(tiltfile), tiltfile.read_text(), sl.Dialect.extended())
        sl.eval(module, ast, globals_)
    except sl.StarlarkError as e:
        raise TiltError(_one_line(str(e))) from e
    return state


def check_state(state: TiltState, f: Findings, where: str) -> None:
    index = Index(state.objects)
    workloads = list(index.of_kind(*WORKLOAD_KINDS))
    names = {o["metadata"]["name"] for o in workloads}
    # Workloads not named in k8s_resource are resources too (Tilt's default).
    all_resources = set(state.resources) | names
    for name, res in state.resources.items():
        for dep in res["deps"]:
            if dep not in all_resources:
                f.add(where, f"resource {name!r}: resource_deps names {dep!r}, which is no resource")
    for name in sorted(names - state.configured_workloads):
        f.add(where, f"workload {name!r} has no k8s_resource (and so no layer label)")
    for name, res in state.resources.items():
        if res["kind"] == "k8s" and res["workload"] and not res["labels"]:
            f.add(where, f"resource {name!r} has no label (resources are grouped by layer)")
    used_images = set()
    for o in workloads:
        spec = ((o.get("spec") or {}).get("template") or {}).get("spec") or {}
        for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            image = c.get("image", "")
            repo = re.sub(r"(@.*|:[^/:]*)$", "", image)
            used_images.add(repo)
            if repo.startswith("agentmesh/") and repo not in state.images:
                f.add(where, f"workload {o['metadata']['name']!r} uses image {image!r}, which no docker_build builds")
    for ref in sorted(set(state.images) - used_images):
        f.add(where, f"docker_build {ref!r} builds an image no rendered workload uses")


def check(tiltfile: str) -> tuple[Findings, TiltState | None]:
    f = Findings("tiltfile")
    path = Path(tiltfile)
    if not path.is_file():
        raise CheckError(f"{tiltfile}: no such file")
    where = rel(path)
    try:
        state = evaluate(path)
    except TiltError as e:
        f.add(where, str(e))
        return f, None
    check_state(state, f, where)
    return f, state


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    try:
        findings, state = check(argv[0])
    except CheckError as e:
        print(f"FAIL [tiltfile] {e}")
        return 1
    rc = findings.report()
    if not rc and state is not None:
        print(
            f"ok [tiltfile] {rel(argv[0])}: {len(state.images)} images, {len(state.resources)} resources, "
            f"{len(state.objects)} objects from the dev overlay; every resource name resolves"
        )
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
