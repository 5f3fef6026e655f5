"""The alert rules, their unit tests, their runbook, the Grafana dashboard and the compose
services that run them, checked without a Docker engine (none runs here or in CI).

- `promtool test rules` runs every rule's unit test (Debian's `prometheus` package, major
  version 2 like the compose Prometheus; .ci/run installs it);
- each rule links to a runbook section that says which `visio-rdv ops` command helps;
- Grafana cannot run here: the dashboard JSON is validated statically (structure, the
  provisioned data source uid) and every panel's expression is parsed by promtool;
- the selectors of rules and panels are checked against a live stack's /metrics in
  tests/test_end_to_end.py (visio_deploy.monitoring); here, that the extraction is right.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from visio_deploy.monitoring import (
    Exported,
    Selector,
    check,
    dashboard_expressions,
    dashboard_targets,
    grafana_to_promql,
    parse,
    rule_expressions,
)

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "deploy/prometheus/rules/visio-rdv.rules.yml"
RULE_TESTS = REPO / "deploy/prometheus/tests/visio-rdv.test.yml"
RUNBOOK = REPO / "docs/runbook.md"
DASHBOARD = REPO / "deploy/grafana/dashboards/visio-rdv.json"
DATASOURCES = REPO / "deploy/grafana/provisioning/datasources/prometheus.yml"
DASHBOARD_PROVIDERS = REPO / "deploy/grafana/provisioning/dashboards/visio-rdv.yml"
COMPOSE = REPO / "docker-compose.yml"


def promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: apt-get install prometheus (.ci/run does)"
    return subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def alerts() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_rules_and_every_unit_test_passes() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_promtool_fails_a_rule_that_no_longer_does_what_its_test_says(tmp_path: Path) -> None:
    # The unit tests have teeth: a threshold changed in the rule fails its test.
    rules = tmp_path / "rules"
    rules.mkdir()
    text = RULES.read_text(encoding="utf-8")
    rule = "max by (job) (visio_outbox_oldest_age_seconds) > 120"
    assert rule in text
    (rules / RULES.name).write_text(text.replace(rule, rule + "0"), encoding="utf-8")
    tests = tmp_path / "tests"
    tests.mkdir()
    shutil.copy(RULE_TESTS, tests / RULE_TESTS.name)
    tested = promtool("test", "rules", str(tests / RULE_TESTS.name))
    assert tested.returncode != 0
    assert "VisioOutboxBacklogAgeing" in tested.stdout + tested.stderr


def test_every_alert_has_a_firing_unit_test_a_severity_and_a_runbook_section() -> None:
    tested = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    firing = {
        case["alertname"]
        for test in tested["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    quiet = {
        case["alertname"]
        for test in tested["tests"]
        for case in test.get("alert_rule_test", [])
        if not case.get("exp_alerts")
    }
    runbook = RUNBOOK.read_text(encoding="utf-8")
    sections = dict(re.findall(r"^## (\w+)\n(.*?)(?=^## |\Z)", runbook, re.MULTILINE | re.DOTALL))
    for rule in alerts():
        name = rule["alert"]
        assert name in firing and name in quiet, f"{name}: no test that fires and one that does not"
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert rule["annotations"]["runbook_url"] == f"docs/runbook.md#{name.lower()}", name
        section = sections.get(name)
        assert section, f"docs/runbook.md has no section ## {name}"
        for part in ("What it means", "What to look at", "What helps"):
            assert f"**{part}**" in section, f"{name}: the runbook section lacks {part}"
        assert "visio-rdv ops" in section, f"{name}: the runbook names no visio-rdv ops command"


def test_the_selector_extraction_reads_names_matchers_and_grouping() -> None:
    expr = parse(
        "probe",
        'sum by (job, topic) (increase(visio_events_dead_lettered_total{error_class!="x"}[15m]))'
        ' or (visio_a unless visio_a offset 15m) and on (job) time() - max(up{job=~"b|c"}) > 0',
    )
    assert expr.selectors == [
        Selector("visio_events_dead_lettered_total", frozenset({"error_class"})),
        Selector("visio_a", frozenset()),
        Selector("visio_a", frozenset()),
        Selector("up", frozenset({"job"})),
    ]
    assert expr.grouping == {"job", "topic"}
    assert grafana_to_promql('rate(x{job=~"$job"}[$__rate_interval])') == 'rate(x{job=~".*"}[1m])'


def test_the_checker_names_a_renamed_metric_and_a_missing_label() -> None:
    exported = Exported()
    exported.add_page(
        "# HELP visio_smtp_sends_total x\n# TYPE visio_smtp_sends_total counter\n"
        'visio_smtp_sends_total{outcome="sent"} 1\n'
        "# HELP visio_graph_calls_total x\n# TYPE visio_graph_calls_total counter\n"
    )
    ok = parse("ok", 'sum by (outcome) (rate(visio_smtp_sends_total{outcome="deferred"}[5m]))')
    assert check([ok], exported) == []
    renamed = parse("renamed", "rate(visio_smtp_messages_total[5m])")
    wrong_label = parse("label", 'rate(visio_smtp_sends_total{result="deferred"}[5m])')
    unknown = parse("unknown", 'rate(visio_graph_calls_total{status="429"}[5m])')
    assert check([renamed, wrong_label, unknown], exported) == [
        "renamed: no process exports visio_smtp_messages_total",
        "label: visio_smtp_sends_total has no label result",
        "unknown: visio_graph_calls_total has no sample yet, so its labels ['status'] cannot "
        "be checked",
    ]


# --- the dashboard ----------------------------------------------------------------------------


def datasource_uid() -> str:
    provisioned = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))
    [source] = provisioned["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    uid: str = source["uid"]
    return uid


def test_the_dashboard_is_well_formed_and_uses_the_provisioned_data_source() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    uid = datasource_uid()
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in ("timeseries", "stat"), panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["description"], f"{panel['title']}: say what it shows"
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid and target["expr"], panel["title"]
    # Panels do not overlap.
    cells = set()
    for panel in panels:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
    [variable] = dashboard["templating"]["list"]
    assert variable["datasource"]["uid"] == uid
    # What the issue asks to see.
    titles = " ".join(panel["title"] for panel in panels).lower()
    for wanted in ("lag", "latency", "failures by class", "graph", "smtp", "requests", "errors"):
        assert wanted in titles, wanted


def test_every_panel_expression_parses_in_promtool(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    rules = [
        {"record": f"panel:{panel['id']}:{t['refId']}", "expr": grafana_to_promql(t["expr"])}
        for panel, t in dashboard_targets(dashboard)
    ]
    assert len(rules) >= 20
    path = tmp_path / "panels.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # And promtool does refuse a broken one.
    path.write_text(yaml.safe_dump({"groups": [{"name": "p", "rules": [
        {"record": "p:x", "expr": "sum by (job (rate(x[5m]))"}]}]}))  # fmt: skip
    assert promtool("check", "rules", str(path)).returncode != 0


def test_grafana_loads_the_dashboards_where_compose_mounts_them() -> None:
    providers = yaml.safe_load(DASHBOARD_PROVIDERS.read_text(encoding="utf-8"))
    [provider] = providers["providers"]
    services = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    mounts = {spec.split(":")[1]: spec.split(":")[0] for spec in services["grafana"]["volumes"]}
    assert (REPO / mounts[provider["options"]["path"]]).resolve() == DASHBOARD.parent
    assert (REPO / mounts["/etc/grafana/provisioning"]).resolve() == DATASOURCES.parents[1]
    assert list(dashboard_expressions()) and list(rule_expressions())


# --- compose ----------------------------------------------------------------------------------


def test_every_image_is_pinned_and_prometheus_is_promtools_major_version() -> None:
    services = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    images = {name: svc["image"] for name, svc in services.items() if "image" in svc}
    assert {"prometheus", "alertmanager", "grafana"} <= set(images)
    for name, image in images.items():
        tag = image.rpartition(":")[2]
        # A release (PostgreSQL's are two numbers, 15.13): a moving `latest` or `15` is refused.
        assert re.fullmatch(r"v?\d+\.\d+(\.\d+)?", tag), f"{name}: {image} is not a release"
    version = promtool("--version").stdout
    promtool_major = re.search(r"version (\d+)\.", version)
    assert promtool_major, version
    assert images["prometheus"].startswith(f"prom/prometheus:v{promtool_major[1]}.")
    prometheus = services["prometheus"]
    assert "./deploy/prometheus/rules:/etc/prometheus/rules:ro" in prometheus["volumes"]
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.rules.yml"]
    [manager] = config["alerting"]["alertmanagers"]
    assert manager["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert "127.0.0.1:9093:9093" in services["alertmanager"]["ports"]


@pytest.mark.parametrize("path", ["deploy/alertmanager/alertmanager.yml"])
def test_alertmanager_routes_every_alert_to_a_receiver(path: str) -> None:
    config = yaml.safe_load((REPO / path).read_text(encoding="utf-8"))
    receivers = {receiver["name"] for receiver in config["receivers"]}
    routes = [config["route"], *config["route"].get("routes", [])]
    assert all(route["receiver"] in receivers for route in routes)
    [email] = next(r for r in config["receivers"] if r["name"] == "operations")["email_configs"]
    services = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    assert email["smarthost"].split(":")[0] in services  # the stack's relay
