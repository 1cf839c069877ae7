"""Holds the Grafana dashboards under deploy/grafana and the PrometheusRules
of the rendered manifests to the metrics the Rust code really exports.

A dashboard panel or an alert on a misspelled metric shows "No data" and
never fires: nothing else would notice. The metric names, their types and
their label names are read from the Rust source, never restated here:

  registrations   every `registry.register("name", "help", x.clone())` under
                  services/*/src and libs/*/src
  type            the declared type of `x` (a struct field `x: Type` or a
                  `let x = Type::...`), looked up in the same file, then in
                  the same crate: Counter, Gauge or Histogram, inside a
                  Family or not
  labels          a Family's label struct (`#[derive(EncodeLabelSet)]
                  struct L { pub a: String, ... }`) gives its label names

The Prometheus exposition adds `_total` to a counter's name and exposes a
histogram as `_bucket` (with the label `le`), `_sum` and `_count`; a bare
registered name of either is not a series. Labels a scrape adds (job,
instance, namespace, pod, container, service, endpoint) are allowed on every
metric.

Every PromQL expression (dashboard targets, alert and recording rules) is
parsed with `promql-parser` (the Python bindings of the Rust PromQL parser
that GreptimeDB uses); a syntax error is a finding. Grafana's template
variables are replaced before parsing ($__rate_interval and the like by a
duration, $var by a plain token), and `label_values(metric, label)` variable
queries are checked like an expression.

Usage: check_observability.py [--dashboards DIR] TARGET...
       (TARGET: kustomization dirs or YAML files whose PrometheusRules to check)
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import promql_parser

from deploylib import REPO, CheckError, Findings, ref, rel, render

# Labels the scrape (Prometheus, kube-prometheus' PodMonitor relabelling)
# attaches to every series.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "container", "service", "endpoint"}

# The labels of a metric whose label set is not a struct: not checked.
ANY_LABELS = frozenset({"*"})

# Grafana's built-in interval variables, replaced by a duration before parsing.
GRAFANA_INTERVALS = re.compile(r"\$(?:__rate_interval|__interval|__range|\{__rate_interval\}|\{__interval\}|\{__range\})")
# A dashboard variable: `$tenant`, `${tenant}`, `${tenant:regex}`.
GRAFANA_VARIABLE = re.compile(r"\$\{?(\w+)(?::\w+)?\}?")


@dataclass
class Metric:
    name: str
    kind: str  # counter | gauge | histogram
    labels: set[str] | None  # None: not a Family (no labels of its own)
    source: str

    def series(self) -> dict[str, set[str]]:
        """Series names this metric exposes, each with its label names."""
        labels = set(self.labels or ())
        if self.kind == "counter":
            return {f"{self.name}_total": labels}
        if self.kind == "histogram":
            return {f"{self.name}_bucket": labels | {"le"}, f"{self.name}_sum": labels, f"{self.name}_count": labels}
        return {self.name: labels}


@dataclass
class Exported:
    series: dict[str, tuple[Metric, set[str]]] = field(default_factory=dict)

    def describe(self, name: str) -> str:
        """Why `name` is not a series, with the nearest real ones."""
        bare = re.sub(r"_(total|bucket|sum|count)$", "", name)
        related = sorted(s for s in self.series if s.startswith(bare))
        if related:
            return f"is not exported (the code exports {', '.join(related)})"
        return "is not registered by any service (registry.register in services/*/src or libs/*/src)"


def _rust_files(repo: Path) -> Iterator[Path]:
    for top in ("services", "libs"):
        yield from sorted((repo / top).glob("*/src/**/*.rs"))


def _crate_of(path: Path, repo: Path) -> Path:
    return path.relative_to(repo).parents[-3]  # services/<crate>


def _type_of(ident: str, text: str) -> str | None:
    """The declared type of a field or local named `ident`, if it is a
    metric type (`requests: Family<L, Counter>`, `let lag = Gauge::<i64>::default()`)."""
    metric = re.compile(r"\b(Counter|Gauge|Histogram)\b")
    for m in re.finditer(rf"(?<![\w.]){ident}\s*:\s*([^\n=;]+)", text):
        if metric.search(m.group(1)):
            return m.group(1)
    for m in re.finditer(rf"\blet\s+(?:mut\s+)?{ident}\s*(?::\s*([^=]+))?=\s*([^;]+);", text):
        declared = (m.group(1) or "") + " " + m.group(2)
        if metric.search(declared):
            return declared
    return None


def _label_struct(name: str, texts: dict[Path, str]) -> set[str] | None:
    for text in texts.values():
        m = re.search(rf"\bstruct\s+{name}\s*\{{([^}}]*)\}}", text)
        if m:
            return set(re.findall(r"(?:pub\s+)?(\w+)\s*:", m.group(1)))
    return None


def registered_metrics(repo: Path = REPO) -> dict[str, Metric]:
    files = list(_rust_files(repo))
    texts = {p: p.read_text() for p in files}
    by_crate: dict[Path, dict[Path, str]] = {}
    for p, t in texts.items():
        by_crate.setdefault(_crate_of(p, repo), {})[p] = t
    metrics: dict[str, Metric] = {}
    call = re.compile(r'\.register\(\s*"([^"]+)"\s*,\s*"(?:[^"\\]|\\.)*"\s*,\s*([\w.]+?)\.clone\(\)\s*,?\s*\)')
    for path, text in texts.items():
        for m in call.finditer(text):
            name, expr = m.group(1), m.group(2)
            ident = expr.split(".")[-1]
            where = f"{rel(path)}: metric {name!r}"
            crate = by_crate[_crate_of(path, repo)]
            declared = _type_of(ident, text) or next(
                (t for t in (_type_of(ident, other) for p, other in crate.items() if p != path) if t), None
            )
            if declared is None:
                raise CheckError(f"{where}: cannot find the type of {expr} (a field `{ident}: Type` or `let {ident} = Type::...`)")
            kind = next(k for k in ("Histogram", "Counter", "Gauge") if re.search(rf"\b{k}\b", declared)).lower()
            labels = None
            family = re.search(r"Family\s*<\s*(\w+)", declared)
            if family:
                labels = _label_struct(family.group(1), crate) or _label_struct(family.group(1), texts)
                if labels is None:
                    # A label set that is no struct (a tuple array, as the
                    # simulator's vLLM names use): its labels go unchecked.
                    labels = ANY_LABELS
            if "Registry::with_labels" in text:
                # Constant labels on every metric of that registry (the
                # simulator's model_name, as vLLM has): not checked.
                labels = ANY_LABELS
            previous = metrics.get(name)
            if previous and previous.kind != kind:
                raise CheckError(f"{where}: registered as a {kind} here and as a {previous.kind} in {previous.source}")
            if previous and previous.labels != labels:
                labels = (previous.labels or set()) | (labels or set())
            metrics[name] = Metric(name, kind, labels, rel(path))
    if not metrics:
        raise CheckError("no registry.register(...) calls found under services/*/src or libs/*/src")
    return metrics


def exported(metrics: dict[str, Metric]) -> Exported:
    out = Exported()
    for metric in metrics.values():
        for series, labels in metric.series().items():
            out.series[series] = (metric, labels)
    return out


def _grafana_to_promql(expr: str) -> str:
    expr = GRAFANA_INTERVALS.sub("5m", expr)
    return GRAFANA_VARIABLE.sub(lambda m: "x", expr)


def selectors(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """The selectors of `expr` (metric name, label names matched) and the
    label names its aggregations group by; raises ValueError on a syntax
    error."""
    tree = promql_parser.parse(expr)
    found: list[tuple[str, set[str]]] = []
    grouping: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = node.matchers.matchers
            name = node.name or next((m.value for m in matchers if m.name == "__name__"), "")
            found.append((name, {m.name for m in matchers if m.name != "__name__"}))
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            grouping.update(node.modifier.labels)
        return True

    promql_parser.walk(tree, visit)
    return found, grouping


def check_expr(expr: str, where: str, series: Exported, findings: Findings) -> int:
    """Findings for one expression; returns 1 if it parsed."""
    try:
        picked, grouping = selectors(expr)
    except ValueError as e:
        findings.add(where, f"PromQL does not parse ({e}): {expr}")
        return 0
    if not picked:
        findings.add(where, f"names no metric: {expr}")
    # A label grouped on must exist on some series of the expression.
    known_labels: set[str] = set(TARGET_LABELS)
    for name, labels in picked:
        if name not in series.series:
            findings.add(where, f"metric {name!r} {series.describe(name)}")
            continue
        metric, metric_labels = series.series[name]
        if "*" in metric_labels:
            known_labels |= labels | grouping
            continue
        known_labels |= metric_labels
        unknown = labels - metric_labels - TARGET_LABELS
        if unknown:
            findings.add(
                where,
                f"metric {name!r} has no label {', '.join(sorted(unknown))} "
                f"(it has: {', '.join(sorted(metric_labels)) or 'none'}; {metric.source})",
            )
    unknown = grouping - known_labels
    if unknown and all(name in series.series for name, _ in picked):
        findings.add(where, f"groups by {', '.join(sorted(unknown))}, a label none of its metrics has")
    return 1


# === Grafana dashboards ===


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels or []:
        yield panel
        yield from _panels(panel.get("panels") or [])


def check_dashboard(path: Path, series: Exported, findings: Findings) -> int:
    where = rel(path)
    try:
        board = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        findings.add(where, f"not valid JSON: {e}")
        return 0
    if not isinstance(board, dict) or not board.get("title") or not isinstance(board.get("panels"), list):
        findings.add(where, "not a Grafana dashboard (title and panels required)")
        return 0
    checked = 0
    ids: set[int] = set()
    for panel in _panels(board["panels"]):
        title = panel.get("title", "?")
        pid = panel.get("id")
        if pid in ids:
            findings.add(where, f"panel id {pid} used twice ({title!r})")
        ids.add(pid)
        if panel.get("type") == "row":
            continue
        targets = panel.get("targets") or []
        if not targets:
            findings.add(where, f"panel {title!r} has no query")
        for i, target in enumerate(targets):
            expr = target.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                findings.add(where, f"panel {title!r} target {i} has no PromQL expr")
                continue
            checked += check_expr(_grafana_to_promql(expr), f"{where} panel {title!r}", series, findings)
    for var in (board.get("templating") or {}).get("list") or []:
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if var.get("type") != "query" or not isinstance(query, str):
            continue
        m = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*(\w+)\s*\)\s*", query)
        if not m:
            findings.add(where, f"variable {var.get('name')!r}: only label_values(metric, label) queries are checked, not {query!r}")
            continue
        expr = f"count by ({m.group(2)}) ({_grafana_to_promql(m.group(1))})"
        checked += check_expr(expr, f"{where} variable {var.get('name')!r}", series, findings)
    return checked


# === PrometheusRules ===


def check_rules(obj: dict[str, Any], series: Exported, findings: Findings) -> int:
    checked = 0
    for group in (obj.get("spec") or {}).get("groups") or []:
        for rule in group.get("rules") or []:
            name = rule.get("alert") or rule.get("record") or "?"
            where = f"{ref(obj)} group {group.get('name')!r} rule {name!r}"
            expr = rule.get("expr")
            if not isinstance(expr, str):
                findings.add(where, "expr must be a PromQL string")
                continue
            checked += check_expr(expr, where, series, findings)
            if "alert" in rule:
                if not (rule.get("labels") or {}).get("severity"):
                    findings.add(where, "an alert needs labels.severity (Alertmanager routes on it)")
                if not (rule.get("annotations") or {}).get("summary"):
                    findings.add(where, "an alert needs annotations.summary")
    return checked


def check(dashboards: Path, targets: list[str]) -> tuple[Findings, int, int, int]:
    findings = Findings("observability")
    series = exported(registered_metrics())
    exprs = 0
    boards = sorted(dashboards.glob("*.json"))
    for path in boards:
        exprs += check_dashboard(path, series, findings)
    rules = 0
    for target in targets:
        for obj in render(target):
            if obj.get("kind") == "PrometheusRule":
                rules += 1
                exprs += check_rules(obj, series, findings)
    return findings, len(boards), rules, exprs


def main(argv: list[str]) -> int:
    dashboards = REPO / "deploy" / "grafana"
    args = list(argv)
    if args[:1] == ["--dashboards"]:
        if len(args) < 2:
            print(__doc__.strip().splitlines()[-2], file=sys.stderr)
            return 2
        dashboards = Path(args[1])
        args = args[2:]
    try:
        findings, boards, rules, exprs = check(dashboards, args)
    except CheckError as e:
        print(f"FAIL [observability] {e}")
        return 1
    rc = findings.report()
    if not rc:
        print(f"ok [observability] {exprs} PromQL expressions in {boards} dashboards and {rules} PrometheusRules ({', '.join(rel(Path(t)) for t in args) or 'no target'}) parse and name only exported metrics and labels")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
