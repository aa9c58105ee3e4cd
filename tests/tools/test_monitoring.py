"""The chart's alerts and dashboard against what the operator really exports.

The PrometheusRule is rendered by helm and tested with Prometheus's own `promtool test rules`
(built from the Go module proxy, hack/gotools.py). Its input series are scraped over HTTP from
the operator's metrics exporter after driving the same hooks the engine and the Mixpeek client
call, so a renamed metric or label breaks these tests. Every dashboard query is parsed by
promtool and may only name metrics (and group by labels) that the exporter serves.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from exporter import scrape_families

from gotools import TOOLS, build
from k8sbuild import build_helm
from mixpeek_operator.metrics import OperatorMetrics

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "mixpeek-operator"
RELEASE, RELEASE_NS = "rel", "ops"
JOB = f"{RELEASE}-mixpeek-operator-metrics"  # the metrics Service, which a ServiceMonitor makes the job
STEPS = "x60"
RUNBOOKS = REPO_ROOT / "docs" / "runbooks.md"
# The chart's default metrics.prometheusRule.runbookBaseUrl: docs/runbooks.md on the project's site.
RUNBOOK_BASE = "https://github.com/mixpeek/mixpeek-operator/blob/main/docs/runbooks.md"
# Labels Prometheus attaches to every scraped series (a ServiceMonitor's defaults).
TARGET_LABELS = {"job", "namespace", "instance"}
LIMITER_ADVICE = (
    "The client-side limit (settings.rateLimit, settings.rateBurst) is what slows reconciles down; "
    "raise it if Mixpeek allows."
)  # one sample a minute for an hour
Sample = tuple[str, dict[str, str], float, str]  # (name, labels, value, family type)


@pytest.fixture(scope="session")
def promtool() -> Path:
    return build(TOOLS["promtool"])


@pytest.fixture(scope="session")
def helm() -> Path:
    return build_helm() / "helm"


def render(helm: Path, *sets: str) -> list[dict[str, Any]]:
    args = [str(helm), "template", RELEASE, str(CHART), "-n", RELEASE_NS]
    for value in sets:
        args += ["--set", value]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def scrape(metrics: OperatorMetrics) -> list[Sample]:
    """The exporter's samples, read over HTTP like Prometheus does."""
    return [
        (sample.name, dict(sample.labels), sample.value, family.type)
        for family in scrape_families(metrics)
        for sample in family.samples
    ]


def exercised() -> OperatorMetrics:
    """A registry with every hook called once, so every series the operator can export exists."""
    metrics = OperatorMetrics()
    metrics.observe_request("list", "GET", 200, 0.02)
    metrics.observe_request("create", "POST", None, 5.0)
    metrics.observe_ratelimiter_wait(0.1)
    metrics.observe_reconcile("error", 0.2)
    metrics.count_drift_correction("spec.batchSize")
    metrics.observe_kube_write("status", 200)
    metrics.count_event("Created")
    metrics.observe_time_to_ready(3.0)
    metrics.set_lease_held("mixpeek-system/mixpeek-operator", True)
    metrics.set_resource_source(lambda: [("True", "Synced")])
    return metrics


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    """Sample name -> label names, as scraped."""
    names: dict[str, set[str]] = {}
    for name, labels, _, _ in scrape(exercised()):
        names.setdefault(name, set()).update(labels)
    return names


def input_series(samples: list[Sample], *, per_minute: bool = True) -> list[dict[str, str]]:
    """promtool input series: counters grow by their scraped value each minute, gauges hold it."""
    series = []
    for name, labels, value, kind in samples:
        if kind == "histogram":
            continue  # no alert reads a histogram
        target = {**labels, "job": JOB, "namespace": RELEASE_NS, "instance": "10.0.0.7:8080"}
        selector = ", ".join(f'{key}="{val}"' for key, val in sorted(target.items()))
        values = f"0+{value:g}{STEPS}" if kind == "counter" and per_minute else f"{value:g}{STEPS}"
        series.append({"series": f"{name}{{{selector}}}", "values": values})
    return series


def up(value: int | None) -> list[dict[str, str]]:
    if value is None:
        return []  # never scraped: no `up` series at all
    return [
        {
            "series": f'up{{instance="10.0.0.7:8080", job="{JOB}", namespace="{RELEASE_NS}"}}',
            "values": f"{value}{STEPS}",
        }
    ]


@pytest.fixture(scope="module")
def rules_file(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    (rule,) = [
        m for m in render(helm, "metrics.prometheusRule.enabled=true") if m["kind"] == "PrometheusRule"
    ]
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def run_promtool(promtool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(promtool), *args], capture_output=True, text=True, timeout=120, check=False)


def promtool_test(promtool: Path, rules_file: Path, tests: list[dict[str, Any]]) -> None:
    spec = {"rule_files": [str(rules_file)], "evaluation_interval": "1m", "tests": tests}
    path = rules_file.with_name(f"test-{len(list(rules_file.parent.iterdir()))}.yaml")
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = run_promtool(promtool, "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def alert(name: str, severity: str, summary: str, description: str, **labels: str) -> dict[str, Any]:
    return {
        "exp_labels": {"severity": severity, **labels},
        "exp_annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"{RUNBOOK_BASE}#{name.lower()}",
        },
    }


def test_the_rules_pass_promtool_check(promtool: Path, rules_file: Path) -> None:
    result = run_promtool(promtool, "check", "rules", str(rules_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


def test_a_troubled_fleet_fires_each_alert_after_its_for(promtool: Path, rules_file: Path) -> None:
    metrics = OperatorMetrics()
    objects = [("True", "Synced")] * 3 + [("False", "AuthFailed"), ("False", "ProgressingWithRetry")]
    objects.append(("Unknown", "ReconcilePaused"))  # paused on purpose: never alerted on
    metrics.set_resource_source(lambda: objects)
    for _ in range(60):  # one 429 a second
        metrics.observe_request("list", "GET", 429, 0.05)
    metrics.observe_ratelimiter_wait(45.0)  # 0.75 requests waiting on average
    series = input_series(scrape(metrics)) + up(1)
    not_ready = (
        "Objects have not been Ready for 15m. kubectl get bucketsyncs -A shows which; "
        "the runbook lists what each reason means."
    )
    stalled = (
        "Stalled objects wait for a human (fix the spec, the credentials Secret or the ownership "
        "conflict); retrying alone will not help."
    )
    promtool_test(
        promtool,
        rules_file,
        [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": "4m", "alertname": "BucketSyncStalled", "exp_alerts": []},
                    {
                        "eval_time": "6m",
                        "alertname": "BucketSyncStalled",
                        "exp_alerts": [
                            alert(
                                "BucketSyncStalled",
                                "warning",
                                "1 BucketSync object(s) stalled: AuthFailed",
                                stalled,
                                namespace=RELEASE_NS,
                                reason="AuthFailed",
                            )
                        ],
                    },
                    {"eval_time": "14m", "alertname": "BucketSyncNotReady", "exp_alerts": []},
                    {
                        "eval_time": "16m",
                        "alertname": "BucketSyncNotReady",
                        "exp_alerts": [
                            alert(
                                "BucketSyncNotReady",
                                "warning",
                                f"1 BucketSync object(s) not Ready (Ready=False, reason {reason})",
                                not_ready,
                                namespace=RELEASE_NS,
                                ready="False",
                                reason=reason,
                            )
                            for reason in ("AuthFailed", "ProgressingWithRetry")
                        ],
                    },
                    {
                        "eval_time": "25m",
                        "alertname": "MixpeekAPIThrottled",
                        "exp_alerts": [
                            alert(
                                "MixpeekAPIThrottled",
                                "warning",
                                "Mixpeek keeps answering 429 (1/s)",
                                "Lower settings.rateLimit or spread BucketSyncs over more credentials.",
                                namespace=RELEASE_NS,
                            )
                        ],
                    },
                    {
                        "eval_time": "25m",
                        "alertname": "MixpeekRateLimiterSaturated",
                        "exp_alerts": [
                            alert(
                                "MixpeekRateLimiterSaturated",
                                "warning",
                                "Requests queue in the operator rate limiter (750m waiting on average)",
                                LIMITER_ADVICE,
                                namespace=RELEASE_NS,
                            )
                        ],
                    },
                    {"eval_time": "25m", "alertname": "MixpeekOperatorDown", "exp_alerts": []},
                ],
            }
        ],
    )


def test_a_healthy_fleet_fires_nothing(promtool: Path, rules_file: Path) -> None:
    metrics = exercised()  # a 200, a connection error, a short limiter wait, Ready objects
    metrics.set_resource_source(lambda: [("True", "Synced")] * 5 + [("Unknown", "ReconcilePaused")])
    tests = [
        {"eval_time": "50m", "alertname": name, "exp_alerts": []}
        for name in (
            "BucketSyncNotReady",
            "BucketSyncStalled",
            "MixpeekAPIThrottled",
            "MixpeekRateLimiterSaturated",
            "MixpeekOperatorDown",
        )
    ]
    series = input_series(scrape(metrics)) + up(1)
    promtool_test(
        promtool, rules_file, [{"interval": "1m", "input_series": series, "alert_rule_test": tests}]
    )


@pytest.mark.parametrize("scraped", [0, None], ids=["scrape-failing", "never-scraped"])
def test_operator_down_fires_when_it_is_not_scraped(
    promtool: Path, rules_file: Path, scraped: int | None
) -> None:
    description = f"No successful scrape of job {JOB} for 5m: BucketSyncs are not reconciled."
    # A failing scrape keeps the target's labels; a target never scraped at all has only the job.
    target = {"instance": "10.0.0.7:8080", "namespace": RELEASE_NS} if scraped == 0 else {}
    down = alert(
        "MixpeekOperatorDown",
        "critical",
        "The mixpeek-operator is down or not scraped",
        description,
        job=JOB,
        **target,
    )
    tests = [
        {"eval_time": "4m", "alertname": "MixpeekOperatorDown", "exp_alerts": []},
        {"eval_time": "6m", "alertname": "MixpeekOperatorDown", "exp_alerts": [down]},
    ]
    series = up(scraped) or [{"series": 'up{job="something-else"}', "values": f"1{STEPS}"}]
    promtool_test(
        promtool, rules_file, [{"interval": "1m", "input_series": series, "alert_rule_test": tests}]
    )


def test_every_alert_reads_only_series_the_operator_exports(
    rules_file: Path, exported: dict[str, set[str]]
) -> None:
    rules = yaml.safe_load(rules_file.read_text())["groups"][0]["rules"]
    for rule in rules:
        for name, labels in metric_references(rule["expr"]):
            if name == "up":
                continue  # Prometheus' own series for the scrape target
            assert name in exported, f"{rule['alert']} reads {name}, which the operator does not export"
            missing = labels - exported[name] - TARGET_LABELS
            assert not missing, f"{rule['alert']}: {name} has no labels {missing}"


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub and MkDocs give a page's headings (lowercase, punctuation dropped)."""
    return {
        re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        for title in re.findall(r"^#{1,6} (.+)$", markdown, flags=re.MULTILINE)
    }


def test_every_alert_links_a_runbook_section_that_exists(rules_file: Path) -> None:
    rules = yaml.safe_load(rules_file.read_text())["groups"][0]["rules"]
    anchors = heading_anchors(RUNBOOKS.read_text())
    assert len(rules) == 5
    for rule in rules:
        url = rule["annotations"].get("runbook_url", "")
        page, _, anchor = url.partition("#")
        assert page == RUNBOOK_BASE, f"{rule['alert']}: runbook_url {url!r}"
        assert anchor == rule["alert"].lower(), f"{rule['alert']}: runbook_url {url!r}"
        assert anchor in anchors, f"{rule['alert']}: docs/runbooks.md has no section #{anchor}"


# --- the dashboard ----------------------------------------------------------------------------

DASHBOARD = CHART / "dashboards" / "mixpeek-operator.json"
_FUNCTIONS = {"sum", "rate", "increase", "histogram_quantile", "by", "without", "absent", "avg", "max", "min"}


def metric_references(expr: str) -> Iterator[tuple[str, set[str]]]:
    """(metric name, label names matched or grouped on) for each selector in a PromQL expression."""
    groups = {
        label.strip()
        for match in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
        for label in match.split(",")
    }
    for name, matchers in re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}", expr):
        if name in _FUNCTIONS:
            continue
        labels = {m.split("=")[0].strip().rstrip("!~") for m in matchers.split(",") if m.strip()}
        yield name, labels | (groups - {"le"})


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def test_the_chart_ships_the_dashboard_file_unchanged(helm: Path) -> None:
    manifests = render(helm, "metrics.grafanaDashboard.enabled=true")
    (config_map,) = [
        m for m in manifests if m["kind"] == "ConfigMap" and m["metadata"]["name"].endswith("-dashboard")
    ]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["mixpeek-operator.json"]) == json.loads(DASHBOARD.read_text())
    assert not [
        m for m in render(helm) if m["kind"] in ("ConfigMap", "PrometheusRule")
    ]  # both off by default


def test_every_dashboard_query_parses_in_promtool(promtool: Path, tmp_path: Path) -> None:
    rules = [
        {
            "record": f"dashboard:query_{index}",
            "expr": expr.replace("$__rate_interval", "5m").replace("$job", ".+"),
        }
        for index, (_, expr) in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_promtool(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dashboard_query_names_exported_metrics(exported: dict[str, set[str]]) -> None:
    covered = set()
    for title, expr in dashboard_queries():
        references = list(metric_references(expr))
        assert references, f"panel {title!r} reads no metric: {expr}"
        for name, labels in references:
            assert name in exported, f"panel {title!r} reads {name}, which the operator does not export"
            missing = labels - exported[name] - TARGET_LABELS
            assert not missing, f"panel {title!r}: {name} has no labels {missing}"
            covered.add(name.removesuffix("_bucket").removesuffix("_total"))
    # What it promises: conditions, reconciles, Mixpeek calls, throttling, limiter, writes, time to
    # Ready, who leads and each shard's share.
    assert {
        "bucketsync_resources",
        "bucketsync_reconcile",
        "bucketsync_reconcile_duration_seconds",
        "mixpeek_api_requests",
        "mixpeek_api_request_duration_seconds",
        "mixpeek_api_throttled",
        "mixpeek_ratelimiter_wait_seconds",
        "bucketsync_kube_writes",
        "bucketsync_time_to_ready_seconds",
        "mixpeek_operator_leading",
        "mixpeek_operator_shard_owned_objects",
        "mixpeek_operator_shard_members",
    } <= covered
