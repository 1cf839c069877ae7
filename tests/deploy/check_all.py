"""Runs every offline deploy check on the real tree, then every broken
fixture, which must FAIL, and only for the reason its case.yaml names.
`scripts/check-deploy` runs this with the project venv's Python.

The real tree:
  validate      kubernetes-validate --strict, KEDA and Karpenter schemas, on
                base, dev, eks and the tenant example
  workloads     the deploy rules (check_workloads.py) on the same renders
  consumers     KEDA nats-jetstream triggers against the code's names
  tiltfile      the Tiltfile against stand-ins for Tilt's built-ins
  dockerfiles   the service Dockerfiles against their Cargo packages
  observability the Grafana dashboards (deploy/grafana) and the eks
                PrometheusRules: PromQL parses, names only exported metrics
                and labels (check_observability.py)
  render        (when AGENTMESH_CLI names an agentmesh binary) the component
                `agentmesh render` writes for a probe agent, composed with
                the base and put through validate, workloads and consumers
Fixtures: tests/deploy/fixtures/<case>/case.yaml names the check, its
arguments (relative to the case folder) and the messages expected; every
FAIL line must match one of them, and each must appear.

Exit status 0 only if every check passes and every fixture fails as
expected. The last line reads `check-deploy: N passed, M failed`.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

import check_consumers
import check_dockerfiles
import check_observability
import check_tiltfile
import check_workloads
import validate_manifests
from deploylib import KUSTOMIZE, REPO, CheckError, rel

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
CHECKS = {
    "validate_manifests": validate_manifests.main,
    "check_workloads": check_workloads.main,
    "check_consumers": check_consumers.main,
    "check_tiltfile": check_tiltfile.main,
    "check_dockerfiles": check_dockerfiles.main,
    "check_observability": check_observability.main,
}

BASE = KUSTOMIZE / "base"
DEV = KUSTOMIZE / "overlays" / "dev"
EKS = KUSTOMIZE / "overlays" / "eks"
TENANT = KUSTOMIZE / "examples" / "tenant-namespace"

PROBE_AGENT = """\
apiVersion: agentmesh.dev/v1alpha1
kind: Agent
metadata:
  name: render-probe
spec:
  model: smollm2
  scaling:
    minReplicas: 1
    maxReplicas: 4
    targetQueueLagPerReplica: 5
"""


def run(name: str, fn, argv: list[str]) -> tuple[int, str]:
    """Runs a check's main() in-process, capturing what it prints."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            rc = fn(argv)
        except CheckError as e:
            print(f"FAIL [{name}] {e}")
            rc = 1
    return rc, out.getvalue()


def real_tree() -> list[tuple[str, int, str]]:
    s = lambda p: str(p)  # noqa: E731
    steps = [
        ("validate", validate_manifests.main, [s(BASE), s(DEV), s(EKS), s(TENANT)]),
        ("workloads", check_workloads.main, [s(BASE), s(EKS), s(TENANT)]),
        ("workloads (dev, secrets generated)", check_workloads.main, ["--require-secrets", s(DEV)]),
        ("consumers", check_consumers.main, [s(BASE), s(DEV), s(EKS)]),
        ("tiltfile", check_tiltfile.main, [s(REPO / "Tiltfile")]),
        ("dockerfiles", check_dockerfiles.main, [s(REPO)]),
        ("observability", check_observability.main, [s(EKS)]),
    ]
    results = []
    for name, fn, argv in steps:
        rc, out = run(name, fn, argv)
        results.append((name, rc, out))
    return results


def render_probe(cli: str) -> list[tuple[str, int, str]]:
    """`agentmesh render` for a probe agent, composed with the base."""
    scratch = REPO / ".cache" / "check-deploy"
    scratch.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "agent.yaml").write_text(PROBE_AGENT)
        proc = subprocess.run(
            [cli, "render", "-f", str(tmp_path / "agent.yaml"), "--out", str(tmp_path / "components")],
            capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            return [("render", 1, f"FAIL [render] {cli} render failed: {proc.stderr.strip() or proc.stdout.strip()}\n")]
        component = tmp_path / "components" / "agent-worker-render-probe"
        if not (component / "kustomization.yaml").is_file():
            return [("render", 1, f"FAIL [render] {cli} render wrote no {rel(component)}/kustomization.yaml\n")]
        # Kustomize takes relative paths only.
        (tmp_path / "kustomization.yaml").write_text(
            yaml.safe_dump({
                "resources": [os.path.relpath(BASE, tmp_path)],
                "components": ["components/agent-worker-render-probe"],
            })
        )
        for name, fn in (
            ("render: validate", validate_manifests.main),
            ("render: workloads", check_workloads.main),
            ("render: consumers", check_consumers.main),
        ):
            rc, out = run(name, fn, [str(tmp_path)])
            results.append((name, rc, out))
    return results


def fixture_cases() -> list[Path]:
    return sorted(p.parent for p in FIXTURES.glob("*/case.yaml"))


def run_fixture(case_dir: Path) -> tuple[bool, str]:
    case = yaml.safe_load((case_dir / "case.yaml").read_text())
    check = case.get("check")
    if check not in CHECKS:
        return False, f"unknown check {check!r} (known: {', '.join(CHECKS)})"
    argv = [a if a.startswith("--") else str((case_dir / a).resolve()) for a in case.get("args") or []]
    expect = case.get("expect") or []
    if isinstance(expect, str):
        expect = [expect]
    if not expect:
        return False, "case.yaml names no expected message"
    rc, out = run(check, CHECKS[check], argv)
    fails = [line for line in out.splitlines() if line.startswith("FAIL")]
    if rc == 0:
        return False, f"{check} PASSED a broken fixture ({case.get('why', '')})"
    unexpected = [line for line in fails if not any(e in line for e in expect)]
    missing = [e for e in expect if not any(e in line for line in fails)]
    if unexpected or missing:
        detail = "".join(f"\n      unexpected: {u}" for u in unexpected) + "".join(f"\n      missing: {m}" for m in missing)
        return False, f"{check} failed, but not (only) for the expected reason:{detail}"
    first = fails[0].split("] ", 1)[-1]
    if len(first) > 220:
        first = first[:217] + "..."
    return True, f"{check} fails as expected: {first}"


def main() -> int:
    started = time.monotonic()
    passed = failed = 0
    print("== the real tree")
    results = real_tree()
    cli = os.environ.get("AGENTMESH_CLI")
    if cli:
        results += render_probe(cli)
    for name, rc, out in results:
        sys.stdout.write(out)
        if rc == 0:
            passed += 1
        else:
            failed += 1
    if not cli:
        print("skip [render] set AGENTMESH_CLI=<path to the agentmesh binary> to check `agentmesh render` output too")
    print("== broken fixtures (each must fail, for its reason)")
    for case_dir in fixture_cases():
        ok, message = run_fixture(case_dir)
        print(f"{'ok  ' if ok else 'FAIL'} [fixture {case_dir.name}] {message}")
        if ok:
            passed += 1
        else:
            failed += 1
    print(f"({time.monotonic() - started:.1f} s)")
    print(f"check-deploy: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
