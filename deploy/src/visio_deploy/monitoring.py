"""Do the alert rules and the dashboard name metrics and labels the code really exports?

A rule's unit test invents its own series, so a metric renamed in the code leaves every rule
test green and the alert silent for good. This reads every PromQL expression of
deploy/prometheus/rules and deploy/grafana/dashboards, takes out each selector (metric name and
the labels it matches on) and each grouping label (`by`, `on`, …), and compares them with what
the processes' /metrics pages actually show. `visio-rdv ops check-monitoring` runs it against
the running stack; tests/test_end_to_end.py against a live one after a booking.

The selector extraction is a small PromQL lexer rather than a full parser (none exists for
Python): strings and range brackets are set aside, an identifier followed by `(` is a function,
one followed by `{` or standing alone is a metric. `promtool check rules` proves the syntax.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[3]
RULES_DIR = REPO / "deploy/prometheus/rules"
DASHBOARDS_DIR = REPO / "deploy/grafana/dashboards"

# Labels Prometheus adds to every scraped series, and the series it makes itself.
TARGET_LABELS = frozenset({"job", "instance"})
PROMETHEUS_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
PROMETHEUS_SERIES |= {"ALERTS", "ALERTS_FOR_STATE"}

KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2", "start", "end"}
)
AGGREGATIONS = frozenset(
    {
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
        "bottomk", "topk", "quantile", "limitk", "limit_ratio",
    }
)  # fmt: skip
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})

_TOKEN = re.compile(
    r"""(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
      | (?P<range>\[[^\]]*\])
      | (?P<number>(?:0x[0-9a-fA-F]+|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)[a-zA-Z]*)
      | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
      | (?P<matchop>=~|!~|!=|==|=)
      | (?P<punct>[{}(),])
      | (?P<other>\S)""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Selector:
    metric: str | None  # None: a selector with no name ({__name__=~"…"})
    labels: frozenset[str]


@dataclass
class Expression:
    where: str  # "rules/visio-rdv.rules.yml: VisioDeadLetters"
    expr: str
    selectors: list[Selector] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)


def _tokens(expr: str) -> list[tuple[str, str]]:
    found = []
    for match in _TOKEN.finditer(expr):
        kind = match.lastgroup
        assert kind is not None
        found.append((kind, match.group()))
    return found


def parse(where: str, expr: str) -> Expression:
    """The selectors and grouping labels of one PromQL expression."""
    parsed = Expression(where, expr)
    tokens = _tokens(expr)
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if kind == "ident" and text in GROUPING:
            i += 1
            if following == ("punct", "("):
                grouping, i = _label_list(tokens, i + 1)
                parsed.grouping.update(grouping)
            continue
        if kind == "ident" and text == "offset":
            i += 2  # its duration
            continue
        if kind == "ident" and (
            following == ("punct", "(") or text in AGGREGATIONS or text in KEYWORDS
        ):
            i += 1
            continue
        if kind == "ident" or (kind, text) == ("punct", "{"):
            metric = text if kind == "ident" else None
            if kind == "ident":
                i += 1
            labels: set[str] = set()
            if i < len(tokens) and tokens[i] == ("punct", "{"):
                labels, i = _matchers(tokens, i + 1)
            if metric is None and "__name__" in labels:
                labels.discard("__name__")
            parsed.selectors.append(Selector(metric, frozenset(labels)))
            continue
        i += 1
    return parsed


def _label_list(tokens: list[tuple[str, str]], i: int) -> tuple[set[str], int]:
    labels = set()
    while i < len(tokens) and tokens[i] != ("punct", ")"):
        if tokens[i][0] == "ident":
            labels.add(tokens[i][1])
        i += 1
    return labels, i + 1


def _matchers(tokens: list[tuple[str, str]], i: int) -> tuple[set[str], int]:
    labels = set()
    while i < len(tokens) and tokens[i] != ("punct", "}"):
        if tokens[i][0] == "ident" and i + 1 < len(tokens) and tokens[i + 1][0] == "matchop":
            labels.add(tokens[i][1])
        i += 1
    return labels, i + 1


# What the rules and dashboards ask for.


def rule_expressions(rules_dir: Path = RULES_DIR) -> Iterator[Expression]:
    for path in sorted(rules_dir.glob("*.yml")):
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in loaded["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule.get("record")
                yield parse(f"{path.name}: {name}", rule["expr"])


def dashboard_expressions(dashboards_dir: Path = DASHBOARDS_DIR) -> Iterator[Expression]:
    for path in sorted(dashboards_dir.glob("*.json")):
        for panel, target in dashboard_targets(json.loads(path.read_text(encoding="utf-8"))):
            yield parse(f"{path.name}: {panel['title']}", grafana_to_promql(target["expr"]))


def dashboard_targets(dashboard: Mapping[str, Any]) -> Iterator[tuple[dict[str, Any], Any]]:
    """Every (panel, target) of a dashboard, panels inside rows included."""
    for panel in dashboard.get("panels", []):
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                yield inner, target


def grafana_to_promql(expr: str) -> str:
    """Grafana's variables as Prometheus would receive them once Grafana fills them in."""
    for variable, value in (("$__rate_interval", "1m"), ("$__interval", "1m"), ("$__range", "1h")):
        expr = expr.replace(variable, value)
    return re.sub(r"\$\{?(\w+)(?::\w+)?\}?", ".*", expr)


# What the processes export.


@dataclass
class Exported:
    """Sample name → the label names seen on it; None where a family is declared (HELP, TYPE)
    but has no sample yet, so its labels cannot be known."""

    series: dict[str, set[str] | None] = field(default_factory=dict)

    def add_page(self, text: str) -> None:
        for family in text_string_to_metric_families(text):
            declared = [family.name, *(family.name + s for s in _SUFFIXES[family.type])]
            for name in declared:
                self.series.setdefault(name, None)
            for sample in family.samples:
                known = self.series.get(sample.name) or set()
                self.series[sample.name] = known | set(sample.labels)


_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum"),
    "info": ("_info",),
    "gauge": (),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "stateset": (),
    "unknown": (),
}


def check(expressions: Iterable[Expression], exported: Exported) -> list[str]:
    """What the expressions name that the processes do not export, one line each."""
    problems = []
    for expression in expressions:
        seen: set[str] = set(TARGET_LABELS)
        for selector in expression.selectors:
            if selector.metric is None:
                problems.append(f"{expression.where}: a selector with no metric name")
                continue
            if selector.metric in PROMETHEUS_SERIES:
                continue
            if selector.metric not in exported.series:
                problems.append(f"{expression.where}: no process exports {selector.metric}")
                continue
            labels = exported.series[selector.metric]
            asked = selector.labels - TARGET_LABELS
            if labels is None:
                if asked:
                    problems.append(
                        f"{expression.where}: {selector.metric} has no sample yet, so its "
                        f"labels {sorted(asked)} cannot be checked"
                    )
                continue
            seen |= labels
            for label in sorted(asked - labels):
                problems.append(f"{expression.where}: {selector.metric} has no label {label}")
        for label in sorted(expression.grouping - seen):
            problems.append(f"{expression.where}: no metric of the expression has label {label}")
    return problems


def check_monitoring(pages: Iterable[str]) -> list[str]:
    """Every rule and dashboard panel against these /metrics pages."""
    exported = Exported()
    for page in pages:
        exported.add_page(page)
    return check([*rule_expressions(), *dashboard_expressions()], exported)
