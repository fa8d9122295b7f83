"""deploy/monitoring/ stays true: the rules load in the real `promtool` and each alert fires on
the series it is about (and not on healthy ones); the PrometheusRule carries exactly the plain
file's groups; the dashboard takes its data source from a variable and every query parses; and
every metric the dashboard and the rules name is one the controller exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kube2haproxy.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "rules.yaml"
PROMETHEUS_RULE = MONITORING / "prometheusrule.yaml"
DASHBOARD = MONITORING / "dashboard.json"

Obj = dict[str, Any]


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip(
            "promtool is not installed here: scripts/install installs it (Debian's prometheus "
            "package); CI runs this"
        )
    return found


def run_promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def groups() -> list[Obj]:
    loaded = yaml.safe_load(RULES.read_text())["groups"]
    assert isinstance(loaded, list)
    return loaded


def alerts() -> dict[str, Obj]:
    return {rule["alert"]: rule for group in groups() for rule in group["rules"]}


def dashboard() -> Obj:
    loaded = json.loads(DASHBOARD.read_text())
    assert isinstance(loaded, dict)
    return loaded


def panels() -> list[Obj]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queries() -> list[str]:
    return [t["expr"] for p in panels() for t in p["targets"]]


def exported() -> set[str]:
    """Every series name the controller's registry exposes: counters with `_total`, histograms
    as `_bucket`, `_count` and `_sum`."""
    names = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_count", "_sum"))
        else:
            names.add(family.name)
    return names


def named(text: str) -> set[str]:
    return set(re.findall(r"\bkube2haproxy_[a-z0-9_]*[a-z0-9]", text))


# --- metric names -------------------------------------------------------------------------


def test_exported_names_are_read_as_prometheus_exposes_them():
    names = exported()
    assert {
        "kube2haproxy_reloads_total",
        "kube2haproxy_reload_duration_seconds_bucket",
        "kube2haproxy_pending_changes",
    } <= names
    assert "kube2haproxy_reloads" not in names


def test_every_metric_the_rules_and_the_dashboard_name_is_exported():
    names = exported()
    in_rules = {n for rule in alerts().values() for n in named(rule["expr"])}
    in_dashboard = {n for q in queries() for n in named(q)}
    variables = json.dumps(dashboard()["templating"])
    in_dashboard |= named(variables)
    assert in_rules and in_dashboard
    assert in_rules - names == set()
    assert in_dashboard - names == set()


def test_every_metric_an_annotation_names_is_exported():
    names = exported()
    # A histogram is named by its family in prose.
    allowed = names | {n.removesuffix("_bucket") for n in names}
    for name, rule in alerts().items():
        said = named(" ".join(rule["annotations"].values()))
        assert said, f"{name} names no metric"
        assert said - allowed == set(), name


# --- the rules ----------------------------------------------------------------------------


def test_promtool_accepts_the_rules_file():
    result = run_promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_the_prometheus_rule_carries_the_same_groups(tmp_path):
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["metadata"]["namespace"] == "kube2haproxy"
    assert rule["spec"]["groups"] == groups()
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = run_promtool("check", "rules", spec)
    assert result.returncode == 0, result.stdout + result.stderr


# What the alerts must cover, and a metric each covering alert reads.
TOPICS = {
    "reload failures": "kube2haproxy_reloads_total",
    "runtime fallbacks": "kube2haproxy_runtime_updates_total",
    "drift corrections": "kube2haproxy_drift_corrections_total",
    "sync lag": "kube2haproxy_pending_changes",
    "skipped services": "kube2haproxy_services_skipped",
    "HAProxy down": "kube2haproxy_haproxy_exits_total",
    "watch errors": "kube2haproxy_watch_restarts_total",
    "network programming latency p99": ("kube2haproxy_network_programming_duration_seconds_bucket"),
}


def test_every_topic_has_an_alert():
    for topic, metric in TOPICS.items():
        assert any(metric in named(rule["expr"]) for rule in alerts().values()), topic
    quantiles = [r for r in alerts().values() if "network_programming" in r["expr"]]
    assert quantiles and all("histogram_quantile(0.99," in r["expr"] for r in quantiles)


def test_every_alert_has_a_severity_a_summary_and_what_to_check():
    for name, rule in alerts().items():
        assert name.startswith("Kube2HAProxy"), name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert set(rule["annotations"]) == {"summary", "description"}, name
        description = rule["annotations"]["description"]
        assert "doctor" in description or "log" in description, name


def series(name: str, values: str, **labels: str) -> Obj:
    labels.setdefault("instance", "a")
    inside = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{name}{{{inside}}}", "values": values}


def case(alert: str, at: str, inputs: list[Obj], fired: list[dict[str, str]]) -> Obj:
    """One promtool unit test: `inputs` (one sample a minute), and at `at` the alert's
    instances expected (labels beyond alertname; [] for none)."""
    return {
        "interval": "1m",
        "input_series": inputs,
        "alert_rule_test": [
            {
                "eval_time": at,
                "alertname": alert,
                "exp_alerts": [{"exp_labels": labels} for labels in fired],
            }
        ],
    }


CRIT = {"severity": "critical", "instance": "a"}
WARN = {"severity": "warning", "instance": "a"}
RELOADS = "kube2haproxy_reloads_total"
LATENCY = "kube2haproxy_network_programming_duration_seconds_bucket"


def latency(slow_le: str) -> list[Obj]:
    """Ten changes a minute, every one slower than the bucket below `slow_le`."""
    buckets = ["1", "10", "30", "60", "+Inf"]
    at = buckets.index(slow_le)
    return [
        series(LATENCY, "0+10x40" if i >= at else "0x40", le=le) for i, le in enumerate(buckets)
    ]


CASES = [
    # A config refused again and again, and no success since: firing.
    case(
        "Kube2HAProxyReloadsFailing",
        "25m",
        [
            series(RELOADS, "0+1x40", result="reload_failed"),
            series(RELOADS, "5x40", result="success"),
        ],
        [CRIT],
    ),
    # A failure then successes: what the retries are for, not an alert.
    case(
        "Kube2HAProxyReloadsFailing",
        "25m",
        [
            series(RELOADS, "0 1x40", result="check_failed"),
            series(RELOADS, "0+1x40", result="success"),
        ],
        [],
    ),
    case(
        "Kube2HAProxyConfigRejected",
        "15m",
        [series("kube2haproxy_last_validation_failed", "1x30")],
        [CRIT],
    ),
    case(
        "Kube2HAProxyConfigRejected",
        "15m",
        [series("kube2haproxy_last_validation_failed", "0x30")],
        [],
    ),
    case(
        "Kube2HAProxyRuntimeFallbacks",
        "20m",
        [series("kube2haproxy_runtime_updates_total", "0x10 1x20", result="fallback")],
        [WARN],
    ),
    case(
        "Kube2HAProxyRuntimeFallbacks",
        "20m",
        [series("kube2haproxy_runtime_updates_total", "0+5x30", result="success")],
        [],
    ),
    case(
        "Kube2HAProxyDriftCorrected",
        "20m",
        [series("kube2haproxy_drift_corrections_total", "0x10 2x20", how="runtime")],
        [{**WARN, "how": "runtime"}],
    ),
    case(
        "Kube2HAProxySyncLagging",
        "15m",
        [
            series("kube2haproxy_pending_changes", "3x30"),
            series("kube2haproxy_seconds_since_last_apply_success", "400+60x30"),
        ],
        [CRIT],
    ),
    # Changes pending at each look while applies succeed: churn, not lag.
    case(
        "Kube2HAProxySyncLagging",
        "15m",
        [
            series("kube2haproxy_pending_changes", "3x30"),
            series("kube2haproxy_seconds_since_last_apply_success", "2x30"),
        ],
        [],
    ),
    case(
        "Kube2HAProxyNeverApplied",
        "20m",
        [series("kube2haproxy_seconds_since_last_apply_success", "-1x30")],
        [CRIT],
    ),
    case(
        "Kube2HAProxyNeverApplied",
        "20m",
        [series("kube2haproxy_seconds_since_last_apply_success", "-1x5 0+60x25")],
        [],
    ),
    case(
        "Kube2HAProxyServicesSkipped",
        "20m",
        [
            series("kube2haproxy_services_skipped", "2x30", reason="no-vip"),
            series("kube2haproxy_services_skipped", "9x30", reason="udp-port"),
        ],
        [{**WARN, "reason": "no-vip"}],
    ),
    case(
        "Kube2HAProxyHAProxyExited",
        "10m",
        [series("kube2haproxy_haproxy_exits_total", "0x5 1x10")],
        [CRIT],
    ),
    case(
        "Kube2HAProxyHAProxyExited",
        "10m",
        [series("kube2haproxy_haproxy_exits_total", "0x15")],
        [],
    ),
    case(
        "Kube2HAProxyHAProxyUnavailable",
        "15m",
        [series(RELOADS, "0+1x30", result="unavailable")],
        [CRIT],
    ),
    case(
        "Kube2HAProxyWatchErrors",
        "25m",
        [
            series(
                "kube2haproxy_watch_restarts_total",
                "0+1x40",
                resource="endpointslices",
                reason="error",
            ),
            series(
                "kube2haproxy_watch_restarts_total", "0+1x40", resource="services", reason="closed"
            ),
        ],
        [{**WARN, "resource": "endpointslices"}],
    ),
    # Every change between 10 s and 30 s: slow, within the SLO.
    case("Kube2HAProxyNetworkProgrammingSlow", "25m", latency("30"), [WARN]),
    case("Kube2HAProxyNetworkProgrammingSLO", "25m", latency("30"), []),
    # Between 30 s and 60 s: both.
    case("Kube2HAProxyNetworkProgrammingSLO", "25m", latency("60"), [CRIT]),
    case("Kube2HAProxyNetworkProgrammingSlow", "25m", latency("1"), []),
]


def test_every_alert_has_a_case_that_fires_it():
    fired = {
        t["alert_rule_test"][0]["alertname"] for t in CASES if t["alert_rule_test"][0]["exp_alerts"]
    }
    assert fired == set(alerts())


def test_the_alerts_fire_on_their_cases_and_not_on_healthy_series(tmp_path):
    # promtool compares annotations too: these cases are about when alerts fire, so the rules
    # are loaded without them (their templates are parsed by `promtool check rules`).
    bare = {"groups": groups()}
    for group in bare["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(bare))
    tests = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": CASES}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = run_promtool("test", "rules", tmp_path / "tests.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


# --- the dashboard ------------------------------------------------------------------------


def test_the_dashboard_takes_its_data_source_from_a_variable():
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == (
        "datasource",
        "prometheus",
    )
    ds = {"type": "prometheus", "uid": "${datasource}"}
    assert variables["instance"]["datasource"] == ds
    assert panels()
    for panel in panels():
        assert panel["datasource"] == ds, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == ds, panel["title"]
            assert '{instance=~"$instance"}' in target["expr"], panel["title"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert "${" not in json.dumps({k: v for k, v in board.items() if k != "panels"}).replace(
        "${datasource}", ""
    )


def test_every_dashboard_query_parses(tmp_path):
    """promtool parses PromQL in rules: each query becomes a recording rule, with Grafana's
    variables given values as Grafana would."""
    rules = [
        {
            "record": f"dashboard:query_{i}",
            "expr": q.replace("$__rate_interval", "5m").replace("$instance", ".*"),
        }
        for i, q in enumerate(queries())
    ]
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
