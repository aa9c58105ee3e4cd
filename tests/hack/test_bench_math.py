"""The benchmark's pure helpers (hack/bench/stats.py): percentiles, ratios, parsing, the table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hack.bench import stats


def test_percentile_interpolates_between_ranks_like_numpy() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert stats.percentile(values, 0) == 1.0
    assert stats.percentile(values, 100) == 4.0
    assert stats.percentile(values, 50) == pytest.approx(2.5)
    # numpy.percentile([1, 2, 3, 4], 99) == 3.97
    assert stats.percentile(values, 99) == pytest.approx(3.97)
    assert stats.percentile(values, 25) == pytest.approx(1.75)


def test_percentile_ignores_input_order_and_handles_edges() -> None:
    assert stats.percentile([5.0, 1.0, 3.0], 50) == 3.0
    assert stats.percentile([7.0], 99) == 7.0
    assert stats.percentile([], 50) is None
    with pytest.raises(ValueError, match=r"0\.\.100"):
        stats.percentile([1.0], 101)
    with pytest.raises(ValueError, match=r"0\.\.100"):
        stats.percentile([1.0], -1)


def test_p99_of_a_hundred_values_is_close_to_the_top() -> None:
    values = [float(i) for i in range(1, 101)]
    assert stats.percentile(values, 99) == pytest.approx(99.01)
    assert stats.percentile(values, 50) == pytest.approx(50.5)


def test_summarize() -> None:
    summary = stats.summarize([3.0, 1.0, 2.0])
    assert summary["count"] == 3
    assert summary["min"] == 1.0
    assert summary["max"] == 3.0
    assert summary["p50"] == 2.0
    assert summary["mean"] == pytest.approx(2.0)
    empty = stats.summarize([])
    assert empty["count"] == 0
    assert empty["p99"] is None


def test_ratio_and_its_formatting() -> None:
    assert stats.ratio(3.0, 2.0) == 1.5
    assert stats.ratio(1.0, 0) is None
    assert stats.ratio(None, 2.0) is None
    assert stats.ratio(2.0, None) is None
    assert stats.format_ratio(1.5) == "1.50x"
    assert stats.format_ratio(2.0 / 3.0) == "0.67x"
    assert stats.format_ratio(12.345, digits=1) == "12.3x"
    assert stats.format_ratio(None) == "n/a"
    assert stats.format_ratio(float("nan")) == "n/a"


def test_number_and_duration_formatting() -> None:
    assert stats.format_number(3) == "3"
    assert stats.format_number(3.0) == "3"
    assert stats.format_number(1234.5678) == "1,234.57"
    assert stats.format_number(0.333, digits=1) == "0.3"
    assert stats.format_number(None) == "n/a"
    assert stats.format_seconds(0.0123) == "12 ms"
    assert stats.format_seconds(1.234) == "1.23 s"
    assert stats.format_seconds(42.26) == "42.3 s"
    assert stats.format_seconds(None) == "n/a"


def test_per_object_verdict_and_slope() -> None:
    assert stats.per_object(300, 100) == 3.0
    assert stats.per_object(5, 0) is None
    assert stats.verdict(True) == "PASS"
    assert stats.verdict(False) == "MISS"
    assert stats.verdict(None) == "n/a"
    assert stats.linear_slope([(0, 10.0), (100, 20.0), (1000, 110.0)]) == pytest.approx(0.1)
    assert stats.linear_slope([(5, 1.0), (5, 2.0)]) is None


def test_delta_keeps_changed_keys_only() -> None:
    assert stats.delta({"a": 1, "b": 2}, {"a": 4, "b": 2, "c": 1}) == {"a": 3, "c": 1}


def _request_line(resource: str, subresource: str, verb: str, code: str, value: int) -> str:
    group, version = ("mixpeek.com", "v1alpha1") if resource == "bucketsyncs" else ("", "v1")
    labels = (
        f'code="{code}",component="apiserver",dry_run="",group="{group}",resource="{resource}",'
        f'scope="resource",subresource="{subresource}",verb="{verb}",version="{version}"'
    )
    return f"apiserver_request_total{{{labels}}} {value}"


METRICS = "\n".join(
    [
        "# HELP apiserver_request_total [STABLE] Counter of apiserver requests",
        "# TYPE apiserver_request_total counter",
        _request_line("bucketsyncs", "status", "PATCH", "200", 7),
        _request_line("bucketsyncs", "", "PATCH", "409", 2),
        _request_line("bucketsyncs", "", "PATCH", "200", 5),
        _request_line("events", "", "POST", "201", 3),
        _request_line("bucketsyncs", "", "GET", "200", 99),
        _request_line("secrets", "", "POST", "201", 1),
        'apiserver_request_duration_seconds_bucket{resource="bucketsyncs",verb="PATCH",le="0.1"} 12',
    ]
)


def test_apiserver_writes_sums_codes_and_skips_reads_and_other_resources() -> None:
    writes = stats.apiserver_writes(METRICS)
    assert writes == {
        stats.STATUS_PATCH: 7.0,
        stats.MAIN_PATCH: 7.0,  # 5 successful + 2 conflicts
        stats.EVENT_POST: 3.0,
    }


def test_apiserver_gets_counts_single_object_reads() -> None:
    assert stats.apiserver_gets(METRICS) == {"bucketsyncs//GET": 99.0}


def test_prometheus_sum_matches_labels_and_not_longer_names() -> None:
    text = (
        'bucketsync_reconcile_total{result="success"} 4\n'
        'bucketsync_reconcile_total{result="error"} 1\n'
        'bucketsync_reconcile_total_extra{result="success"} 100\n'
        "# bucketsync_reconcile_total 1000\n"
    )
    assert stats.prometheus_sum(text, "bucketsync_reconcile_total") == 5
    assert stats.prometheus_sum(text, "bucketsync_reconcile_total", result="success") == 4
    assert stats.prometheus_sum(text, "absent_total") == 0


def _at(seconds: float) -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)


def test_list_passes_group_pages_and_rate_per_interval() -> None:
    calls = [
        # bucket a: one page per pass, every 5 s
        (_at(0.0), "a"),
        (_at(5.0), "a"),
        (_at(10.0), "a"),
        # bucket b: two pages per pass, every 4.5 s
        (_at(1.0), "b"),
        (_at(1.1), "b"),
        (_at(5.5), "b"),
        (_at(5.6), "b"),
    ]
    passes = stats.list_passes(calls, interval=5.0)
    assert passes.groups == 2
    assert passes.calls == 7
    assert passes.passes == 5
    assert passes.max_pages_per_pass == 2
    assert passes.min_gap_seconds == pytest.approx(4.5)
    # a: 1 page x 5/5 = 1;  b: 2 pages x 5/4.5
    assert passes.calls_per_interval == pytest.approx(1 + 2 * 5 / 4.5)


def test_list_passes_of_nothing() -> None:
    passes = stats.list_passes([], interval=5.0)
    assert passes.groups == 0
    assert passes.calls_per_interval is None
    assert passes.mean_gap_seconds is None


def test_markdown_table_escapes_pipes() -> None:
    table = stats.markdown_table([stats.Row("Idle", "a|b", "1", result="PASS")])
    lines = table.splitlines()
    assert lines[0] == "| Scenario | Metric | Operator | Floor | Ratio | Target | Result |"
    assert lines[1] == "|---|---|---|---|---|---|---|"
    assert lines[2] == "| Idle | a\\|b | 1 |  |  |  | PASS |"
