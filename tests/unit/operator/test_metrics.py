"""OperatorMetrics: values through the registry, and the HTTP exporter."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from mixpeek_operator.metrics import OperatorMetrics


@pytest.fixture
def metrics() -> OperatorMetrics:
    return OperatorMetrics()


def test_each_instance_has_its_own_registry() -> None:
    first, second = OperatorMetrics(), OperatorMetrics()
    first.count_event("Created")
    assert first.registry.get_sample_value("bucketsync_events_total", {"reason": "Created"}) == 1
    assert second.registry.get_sample_value("bucketsync_events_total", {"reason": "Created"}) is None


def test_mixpeek_requests_by_code_with_latency_and_throttling(metrics: OperatorMetrics) -> None:
    metrics.observe_request("syncs.create", "POST", 201, 0.2)
    metrics.observe_request("syncs.create", "POST", 429, 0.1)
    metrics.observe_request("syncs.create", "POST", None, 5.0)
    get = metrics.registry.get_sample_value
    for code in ("201", "429", "error"):
        labels = {"endpoint": "syncs.create", "method": "POST", "code": code}
        assert get("mixpeek_api_requests_total", labels) == 1
    labels = {"endpoint": "syncs.create", "method": "POST"}
    assert get("mixpeek_api_request_duration_seconds_count", labels) == 3
    assert get("mixpeek_api_request_duration_seconds_sum", labels) == pytest.approx(5.3)
    assert get("mixpeek_api_request_duration_seconds_bucket", {**labels, "le": "0.25"}) == 2
    assert get("mixpeek_api_throttled_total") == 1


def test_rate_limiter_waits_accumulate(metrics: OperatorMetrics) -> None:
    metrics.observe_ratelimiter_wait(0.25)
    metrics.observe_ratelimiter_wait(0.5)
    assert metrics.registry.get_sample_value("mixpeek_ratelimiter_wait_seconds_total") == pytest.approx(0.75)


def test_reconciles_by_result_start_at_zero(metrics: OperatorMetrics) -> None:
    get = metrics.registry.get_sample_value
    for result in ("success", "error", "stalled"):
        assert get("bucketsync_reconcile_total", {"result": result}) == 0
    assert get("bucketsync_reconcile_total", {"result": "requeued"}) is None  # never emitted
    metrics.observe_reconcile("success", 0.3)
    metrics.observe_reconcile("stalled", 0.1)
    assert get("bucketsync_reconcile_total", {"result": "success"}) == 1
    assert get("bucketsync_reconcile_total", {"result": "stalled"}) == 1
    assert get("bucketsync_reconcile_duration_seconds_count") == 2
    with pytest.raises(ValueError, match="unknown reconcile result"):
        metrics.observe_reconcile("sucess", 0.1)  # type: ignore[arg-type]


def test_drift_writes_events_and_time_to_ready(metrics: OperatorMetrics) -> None:
    metrics.count_drift_correction("batchSize")
    metrics.count_drift_correction("batchSize")
    metrics.observe_kube_write("status", 200)
    metrics.observe_kube_write("status", 409)
    metrics.observe_kube_write("event", 201)
    metrics.count_event("Paused")
    metrics.observe_time_to_ready(42.0)
    get = metrics.registry.get_sample_value
    assert get("bucketsync_drift_corrections_total", {"field": "batchSize"}) == 2
    assert get("bucketsync_kube_writes_total", {"kind": "status"}) == 2
    assert get("bucketsync_kube_writes_total", {"kind": "event"}) == 1
    assert get("bucketsync_events_total", {"reason": "Paused"}) == 1
    assert get("bucketsync_time_to_ready_seconds_bucket", {"le": "60.0"}) == 1
    assert get("bucketsync_time_to_ready_seconds_bucket", {"le": "30.0"}) == 0


def test_resources_gauge_is_read_from_the_source_at_scrape_time(metrics: OperatorMetrics) -> None:
    get = metrics.registry.get_sample_value
    assert get("bucketsync_resources", {"ready": "True", "reason": "Synced"}) is None  # no source yet
    states = [("True", "Synced"), ("True", "Synced"), ("False", "AuthFailed")]
    metrics.set_resource_source(lambda: iter(states))
    assert get("bucketsync_resources", {"ready": "True", "reason": "Synced"}) == 2
    assert get("bucketsync_resources", {"ready": "False", "reason": "AuthFailed"}) == 1
    states[:] = [("Unknown", "")]  # an object changed: the next scrape follows, nothing to decrement
    assert get("bucketsync_resources", {"ready": "True", "reason": "Synced"}) is None
    assert get("bucketsync_resources", {"ready": "Unknown", "reason": ""}) == 1


def test_a_failing_resource_source_does_not_break_the_scrape(metrics: OperatorMetrics) -> None:
    def broken() -> list[tuple[str, str]]:
        raise RuntimeError("engine not ready")

    metrics.set_resource_source(broken)
    metrics.count_event("Created")
    assert metrics.registry.get_sample_value("bucketsync_events_total", {"reason": "Created"}) == 1


def test_exporter_serves_the_registry_over_http_and_stops(metrics: OperatorMetrics) -> None:
    metrics.observe_request("syncs.list", "GET", 200, 0.05)
    metrics.set_resource_source(lambda: [("True", "Synced")])
    server = metrics.serve(0, host="127.0.0.1")
    try:
        assert server.port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as response:
            assert response.status == 200
            body = response.read().decode()
    finally:
        server()  # the server doubles as the stop callable
    assert 'mixpeek_api_requests_total{code="200",endpoint="syncs.list",method="GET"} 1.0' in body
    assert 'bucketsync_resources{ready="True",reason="Synced"} 1.0' in body
    assert "# HELP bucketsync_time_to_ready_seconds Seconds from BucketSync creation" in body
    assert "# TYPE bucketsync_reconcile_total counter" in body
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=2)


def test_every_metric_has_help_text(metrics: OperatorMetrics) -> None:
    families = {family.name: family.documentation for family in metrics.registry.collect()}
    expected = {
        "mixpeek_api_requests",
        "mixpeek_api_request_duration_seconds",
        "mixpeek_api_throttled",
        "mixpeek_ratelimiter_wait_seconds",
        "mixpeek_api_key_holds",
        "bucketsync_reconcile",
        "bucketsync_reconcile_duration_seconds",
        "bucketsync_drift_corrections",
        "bucketsync_kube_writes",
        "bucketsync_events",
        "bucketsync_time_to_ready_seconds",
        "bucketsync_resources",
        "mixpeek_operator_active",
        "mixpeek_operator_leading",
        "mixpeek_operator_lease_held",
        "mixpeek_operator_lease_transitions",
        "mixpeek_operator_shard_members",
        "mixpeek_operator_shard_owned_objects",
        "mixpeek_operator_shard_owned_groups",
        "mixpeek_operator_shard_handovers",
        "mixpeek_operator_shard_draining_objects",
        "mixpeek_operator_shard_object_handovers",
        "mixpeek_operator_watch_events",
        "mixpeek_operator_shard_assigner",
        "mixpeek_operator_shard_assignments",
        "mixpeek_operator_task_restarts",
    }
    assert set(families) == expected
    assert all(len(text) > 20 for text in families.values())


def test_lease_gauge_follows_transitions(metrics: OperatorMetrics) -> None:
    def value(name: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"lease": "ops/mixpeek-operator"})

    metrics.set_lease_held("ops/mixpeek-operator", False)  # campaigning: exported at 0
    assert (value("mixpeek_operator_lease_held"), value("mixpeek_operator_lease_transitions_total")) == (0, 0)
    metrics.set_lease_held("ops/mixpeek-operator", True)
    metrics.set_lease_held("ops/mixpeek-operator", True)  # no change: not a transition
    assert (value("mixpeek_operator_lease_held"), value("mixpeek_operator_lease_transitions_total")) == (1, 1)
    metrics.set_lease_held("ops/mixpeek-operator", False)
    assert (value("mixpeek_operator_lease_held"), value("mixpeek_operator_lease_transitions_total")) == (0, 2)


def test_the_leader_is_the_active_replica_and_a_shard_member_is_active_without_leading(
    metrics: OperatorMetrics,
) -> None:
    value = metrics.registry.get_sample_value
    assert (value("mixpeek_operator_active"), value("mixpeek_operator_leading")) == (0, 0)
    metrics.set_leading(True)
    assert (value("mixpeek_operator_active"), value("mixpeek_operator_leading")) == (1, 1)
    metrics.set_leading(False)
    metrics.set_active(True)  # sharding (or alone): reconciles, leads nothing
    assert (value("mixpeek_operator_active"), value("mixpeek_operator_leading")) == (1, 0)
