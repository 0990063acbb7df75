"""The chart's monitoring: the Grafana dashboard ConfigMap and the PrometheusRule, rendered with
the real Helm engine on and off, linted strictly, validated, and the rules checked and unit-tested
by the real promtool (tests/observability/alerts-test.yaml)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import pytest
import yaml
from deploy_support import KUBE_VERSION, check_object, model
from obs_support import ALERTS, CHART, DASHBOARD, alert_rules, dashboard, panel_targets, rule_groups

from tests.serving import ROOT

HERE = Path(__file__).resolve().parent
RULE_SCHEMA = yaml.safe_load((HERE / "prometheusrule-schema.yaml").read_text())
UNIT_TESTS = HERE / "alerts-test.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"
ON = {"alerts": {"enabled": True}, "grafana": {"dashboard": {"enabled": True}}}
MODELS = {
    "models": [model("resnet"), model("bert", "transformer", deploymentMode="Knative", autoscaling={"class": "kpa"})]
}


def the_rule(rendered) -> dict[str, Any]:
    (rule,) = rendered.of_kind("PrometheusRule")
    return rule


def dashboards(rendered) -> list[dict[str, Any]]:
    return [o for o in rendered.of_kind("ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]


@pytest.mark.parametrize("values", [{}, ON, {**ON, **MODELS}], ids=["off", "on", "on-with-models"])
def test_lint_strict_is_clean(values):
    report = helm_python.lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_monitoring_is_off_by_default(render):
    rendered = render(MODELS)
    assert rendered.of_kind("PrometheusRule") == [] and dashboards(rendered) == []


def test_dashboard_configmap_for_the_grafana_sidecar(render):
    rendered = render(ON)
    (configmap,) = dashboards(rendered)
    check_object(configmap)  # a core kind: kubernetes-validate, strict
    meta = configmap["metadata"]
    assert (meta["name"], meta["namespace"]) == ("demo-maas-dashboard", "ml")
    assert meta["labels"]["grafana_dashboard"] == "1"
    assert meta["labels"]["app.kubernetes.io/instance"] == "demo"
    assert "annotations" not in meta
    assert list(configmap["data"]) == ["maas.json"]
    assert json.loads(configmap["data"]["maas.json"]) == dashboard()
    assert configmap["data"]["maas.json"] == DASHBOARD.read_text().rstrip("\n")


def test_dashboard_configmap_overrides(render):
    """What kube-prometheus-stack users set: another sidecar label, a folder annotation, Grafana's namespace."""
    settings = {
        "enabled": True,
        "label": "dashboards.example.com/grafana",
        "labelValue": "maas",
        "labels": {"team": "ml-platform"},
        "annotations": {"grafana_folder": "MaaS"},
        "namespace": "monitoring",
    }
    (configmap,) = dashboards(render({"grafana": {"dashboard": settings}}))
    check_object(configmap)
    meta = configmap["metadata"]
    assert meta["namespace"] == "monitoring"
    assert meta["labels"]["dashboards.example.com/grafana"] == "maas" and meta["labels"]["team"] == "ml-platform"
    assert "grafana_dashboard" not in meta["labels"]
    assert meta["annotations"] == {"grafana_folder": "MaaS"}


def test_dashboard_json():
    """Grafana's conventions (kubernetes-mixin): a datasource variable every query uses, namespace
    and model variables every maas query filters on, rate() over $__rate_interval, quantiles over
    le; and the panels the project promised."""
    board = dashboard()
    assert board["uid"] == "maas-serving" and board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert set(variables) == {"datasource", "namespace", "model"}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "model"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    assert variables["model"]["multi"] and variables["model"]["includeAll"]

    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["fieldConfig"]["defaults"]["unit"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        assert all(t["legendFormat"] for t in panel["targets"])
    for title, ref, expr in panel_targets(board):
        assert 'namespace=~"$namespace"' in expr, (title, ref)
        if "maas_" in expr:
            for selector in re.findall(r"maas_\w+\{([^}]*)\}", expr):
                assert 'model=~"$model"' in selector, (title, ref, selector)
        windows = re.findall(r"\}\[([^\]]+)\]", expr)  # range selectors
        assert windows == ["$__rate_interval"] * expr.count("rate("), (title, windows)
        for match in re.finditer(r"histogram_quantile\(([\d.]+), sum by \(([^)]*)\)", expr):
            assert "le" in [g.strip() for g in match[2].split(",")], (title, expr)

    titles = " | ".join(p["title"] for p in board["panels"])
    for wanted in (
        "Request rate",
        "Error ratio",
        "p50 / p95 / p99",
        "by protocol",
        "by workload",
        "Batch size",
        "Queue time",
        "Forward time",
        "Queue rejections (429 / 503)",
        "Scrape targets",
        "by model and version",
        "replicas ready / not ready",
        "tokens per second",
        "time to first token p50 / p99",
        "time per output token p50 / p99",
        "sequences running / waiting",
        "KV-cache use",
    ):
        assert wanted in titles


def test_prometheus_rule_shape_and_runbook(render):
    rule = the_rule(render({**ON, **MODELS}))
    jsonschema.Draft202012Validator(RULE_SCHEMA).validate(rule)
    assert rule["metadata"]["name"] == "demo-maas" and rule["metadata"]["namespace"] == "ml"
    alerts = alert_rules(rule)
    assert {a["alert"] for a in alerts} == ALERTS and len(alerts) == len(ALERTS)
    anchors = {line[3:].strip().lower() for line in RUNBOOK.read_text().splitlines() if line.startswith("## ")}
    for alert in alerts:
        assert alert["labels"]["severity"] in ("critical", "warning")
        assert set(alert["annotations"]) == {"summary", "description", "runbook_url"}
        url = alert["annotations"]["runbook_url"]
        assert url.endswith("/docs/runbook.md#" + alert["alert"].lower())
        assert alert["alert"].lower() in anchors, f"docs/runbook.md has no section {alert['alert']}"
        # Prometheus's own templating reaches Prometheus untouched by Helm's
        assert "{{ $labels." in alert["annotations"]["summary"] + alert["annotations"]["description"]
        assert 'namespace="ml"' in alert["expr"]
    by_name = {a["alert"]: a for a in alerts}
    assert 'pod=~"(resnet|bert)-predictor-.+"' in by_name["MaasTargetDown"]["expr"]
    assert 'pod=~"(resnet|bert)-predictor-.+"' in by_name["MaasPodNotReady"]["expr"]


def test_alert_values(render):
    values = {
        "enabled": True,
        "labels": {"release": "kube-prometheus-stack"},
        "annotations": {"owner": "ml-platform"},
        "alertLabels": {"team": "ml"},
        "runbookUrl": "https://wiki.example.com/maas",
        "rateWindow": "10m",
        "targetSelector": 'job="maas"',
        "highErrorRatio": {"threshold": 0.2, "for": "1m", "severity": "page"},
        "highLatency": {"thresholdSeconds": 2.5},
        "queueRejections": {"enabled": False},
        "modelNotReady": {"kubeStateMetrics": False},
    }
    rule = the_rule(render({"alerts": values}))
    jsonschema.Draft202012Validator(RULE_SCHEMA).validate(rule)
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["annotations"] == {"owner": "ml-platform"}
    alerts = {a["alert"]: a for a in alert_rules(rule)}
    assert set(alerts) == {"MaasHighErrorRatio", "MaasHighLatency", "MaasModelNotReady", "MaasTargetDown"}
    errors = alerts["MaasHighErrorRatio"]
    assert errors["expr"].endswith("> 0.2") and "[10m]" in errors["expr"]
    assert errors["for"] == "1m" and errors["labels"] == {"severity": "page", "team": "ml"}
    assert errors["annotations"]["runbook_url"] == "https://wiki.example.com/maas#maashigherrorratio"
    assert alerts["MaasHighLatency"]["expr"].endswith("> 2.5")
    assert alerts["MaasHighLatency"]["for"] == "10m"  # the default
    assert alerts["MaasTargetDown"]["expr"] == 'up{job="maas"} == 0'
    # without models, the targets are any predictor pod of the namespace
    down = {a["alert"]: a for a in alert_rules(the_rule(render({"alerts": {"enabled": True}})))}["MaasTargetDown"]
    assert down["expr"] == 'up{namespace="ml",pod=~".+-predictor-.+"} == 0'
    # every alert off: no PrometheusRule at all, rather than an empty group
    off = {
        key: {"enabled": False}
        for key in ("highErrorRatio", "highLatency", "queueRejections", "modelNotReady", "targetDown")
    }
    assert render({"alerts": {"enabled": True, **off}}).of_kind("PrometheusRule") == []


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"alerts": {"highErrorRatio": {"threshold": 5}}}, "/alerts/highErrorRatio/threshold"),
        ({"alerts": {"rateWindow": "5 minutes"}}, "/alerts/rateWindow"),
        ({"alerts": {"targetDown": {"for": "soon"}}}, "/alerts/targetDown/for"),
        ({"alerts": {"hihgLatency": {}}}, "hihgLatency"),
        ({"grafana": {"dashboard": {"enabled": "yes"}}}, "/grafana/dashboard/enabled"),
        ({"grafana": {"dashboards": {}}}, "dashboards"),
    ],
)
def test_bad_monitoring_values_fail_at_render_time(chart, values, fragment):
    with pytest.raises(helm_python.HelmError) as failure:
        chart.render(values, name="demo", namespace="ml")
    assert fragment in str(failure.value)


@pytest.mark.parametrize("values", [{}, MODELS], ids=["no-models", "models"])
def test_promtool_check_rules(render, promtool: str, tmp_path: Path, values):
    rules = tmp_path / "maas-rules.yaml"
    rules.write_text(yaml.safe_dump(rule_groups(the_rule(render({**ON, **values}))), sort_keys=False))
    result = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests(render, promtool: str, tmp_path: Path):
    """alerts-test.yaml against the rules as the chart's defaults render them."""
    (tmp_path / "maas-rules.yaml").write_text(
        yaml.safe_dump(rule_groups(the_rule(render({"alerts": {"enabled": True}}))), sort_keys=False)
    )
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    result = subprocess.run(
        [promtool, "test", "rules", UNIT_TESTS.name], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    # every alert has a case where it fires and one where it stays quiet
    cases = [case for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    assert {c["alertname"] for c in cases if c["exp_alerts"]} == ALERTS
    assert {c["alertname"] for c in cases if not c["exp_alerts"]} == ALERTS
