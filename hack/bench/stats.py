"""Pure helpers of the benchmark: statistics, ratios, metric parsing and the result table.

No I/O here, so everything is unit-tested (tests/hack/test_bench_math.py).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# --- statistics -----------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between ranks (numpy's default).

    None for no values; p0 is the minimum and p100 the maximum.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    if not ordered:
        return None
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(values: Sequence[float]) -> dict[str, float | int | None]:
    """count, min, p50, p90, p99, max and mean of a sample (None when it is empty)."""
    if not values:
        return {"count": 0, "min": None, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    return {
        "count": len(values),
        "min": min(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values),
        "mean": sum(values) / len(values),
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is zero."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def format_ratio(value: float | None, digits: int = 2) -> str:
    """`1.23x`, or `n/a`."""
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}x"


def format_number(value: float | int | None, digits: int = 2) -> str:
    """Integers as integers, other numbers rounded; `n/a` for None."""
    if value is None:
        return "n/a"
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"


def format_seconds(value: float | None) -> str:
    """`850 ms` below a second, `12.3 s` above; `n/a` for None."""
    if value is None:
        return "n/a"
    if abs(value) < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s" if abs(value) < 10 else f"{value:.1f} s"


def per_object(total: float | int | None, objects: int) -> float | None:
    if total is None or objects <= 0:
        return None
    return total / objects


def verdict(passed: bool | None) -> str:
    return "n/a" if passed is None else ("PASS" if passed else "MISS")


def linear_slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None with fewer than two distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in points)
    variance = sum((x - mean_x) ** 2 for x, _ in points)
    return covariance / variance


# --- counters ---------------------------------------------------------------------------------


def delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """after - before per key (keys of either side), dropping zeros."""
    keys = sorted(set(before) | set(after))
    changes = {key: after.get(key, 0) - before.get(key, 0) for key in keys}
    return {key: value for key, value in changes.items() if value}


_APISERVER_REQUEST = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')
MUTATING_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "APPLY", "CREATE", "UPDATE"})


def apiserver_requests(metrics_text: str, resources: Iterable[str], verbs: Iterable[str]) -> dict[str, float]:
    """Requests the API server served, from its /metrics text, keyed `resource/subresource/VERB`.

    Summed over response codes, so failed requests (409 conflicts, say) count as well.
    """
    wanted, wanted_verbs = set(resources), set(verbs)
    totals: dict[str, float] = {}
    for line in metrics_text.splitlines():
        match = _APISERVER_REQUEST.match(line)
        if not match:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        if labels.get("resource") not in wanted or labels.get("verb") not in wanted_verbs:
            continue
        key = f"{labels['resource']}/{labels.get('subresource', '')}/{labels['verb']}"
        totals[key] = totals.get(key, 0.0) + float(match["value"])
    return totals


def apiserver_writes(
    metrics_text: str, resources: Iterable[str] = ("bucketsyncs", "events")
) -> dict[str, float]:
    """Mutating requests (POST, PATCH, PUT, DELETE, ...) of `resources`; see `apiserver_requests`."""
    return apiserver_requests(metrics_text, resources, MUTATING_VERBS)


def apiserver_gets(
    metrics_text: str, resources: Iterable[str] = ("bucketsyncs", "secrets")
) -> dict[str, float]:
    """Single-object GETs of `resources` (LIST and WATCH are other verbs)."""
    return apiserver_requests(metrics_text, resources, ("GET",))


# The operator's writes, as `apiserver_writes` keys.
STATUS_PATCH = "bucketsyncs/status/PATCH"
MAIN_PATCH = "bucketsyncs//PATCH"
EVENT_POST = "events//POST"
OPERATOR_WRITE_KEYS = (MAIN_PATCH, STATUS_PATCH, EVENT_POST)


def prometheus_sum(metrics_text: str, name: str, **labels: str) -> float:
    """Sum of the samples of one metric whose labels include `labels` (0 when absent)."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        sample, _, value = line.rpartition(" ")
        series = sample[len(name) :]
        if series and not series.startswith("{"):
            continue  # another metric whose name starts with this one
        if all(f'{key}="{val}"' in series for key, val in labels.items()):
            total += float(value)
    return total


# --- observation passes -------------------------------------------------------------------------


@dataclass(frozen=True)
class ListPasses:
    """What the observer's list calls in a window amount to."""

    groups: int  # buckets listed at least once
    calls: int  # list requests (pages)
    passes: int  # list passes (a pass is the pages of one bucket fetched back to back)
    max_pages_per_pass: int
    mean_gap_seconds: float | None  # mean time between consecutive passes of the same bucket
    min_gap_seconds: float | None  # the shortest such time
    calls_per_interval: float | None  # list requests per observe interval, from the gaps

    def to_json(self) -> dict[str, Any]:
        return {
            "groups": self.groups,
            "calls": self.calls,
            "passes": self.passes,
            "max_pages_per_pass": self.max_pages_per_pass,
            "mean_gap_seconds": self.mean_gap_seconds,
            "min_gap_seconds": self.min_gap_seconds,
            "calls_per_interval": self.calls_per_interval,
        }


def list_passes(calls: Iterable[tuple[datetime, str]], interval: float) -> ListPasses:
    """Group list calls `(when, bucket)` into passes and measure their rate per observe interval.

    Calls of one bucket less than half an interval apart belong to the same pass (its pages).
    The rate per bucket is pages-per-pass x interval / mean gap between passes, which is immune
    to where the window's edges fall; buckets seen in a single pass count one pass per interval.
    """
    by_bucket: dict[str, list[datetime]] = {}
    for when, bucket in calls:
        by_bucket.setdefault(bucket, []).append(when)
    total_calls = sum(len(times) for times in by_bucket.values())
    passes = 0
    max_pages = 0
    gaps: list[float] = []
    rate = 0.0
    for times in by_bucket.values():
        times.sort()
        starts: list[datetime] = []
        pages: list[int] = []
        for when in times:
            if starts and (when - starts[-1]).total_seconds() < interval / 2:
                pages[-1] += 1
            else:
                starts.append(when)
                pages.append(1)
        passes += len(starts)
        max_pages = max(max_pages, *pages)
        bucket_gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
        gaps.extend(bucket_gaps)
        pages_per_pass = sum(pages) / len(pages)
        mean_gap = sum(bucket_gaps) / len(bucket_gaps) if bucket_gaps else interval
        rate += pages_per_pass * interval / mean_gap
    return ListPasses(
        groups=len(by_bucket),
        calls=total_calls,
        passes=passes,
        max_pages_per_pass=max_pages,
        mean_gap_seconds=sum(gaps) / len(gaps) if gaps else None,
        min_gap_seconds=min(gaps) if gaps else None,
        calls_per_interval=rate if by_bucket else None,
    )


# --- the table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    scenario: str
    metric: str
    operator: str
    floor: str = ""
    ratio: str = ""
    target: str = ""
    result: str = ""


def markdown_table(rows: Sequence[Row]) -> str:
    header = ("Scenario", "Metric", "Operator", "Floor", "Ratio", "Target", "Result")
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for row in rows:
        cells = (row.scenario, row.metric, row.operator, row.floor, row.ratio, row.target, row.result)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


# --- shards (hack/bench/shards.py) ----------------------------------------------------------------

# The remote endpoints that change a sync: two replicas must never do these to one sync at once.
WRITE_ENDPOINTS = frozenset({"create", "update", "delete", "pause", "resume", "trigger"})
_REPLICA = re.compile(r"^mixpeek-operator/\S+ \((?P<replica>[^()]*)\)$")


def replica_of(user_agent: str | None) -> str | None:
    """The replica the operator's User-Agent names (`mixpeek-operator/<version> (<identity>)`)."""
    match = _REPLICA.match(user_agent or "")
    return match["replica"] if match else None


def moves(before: Mapping[str, str | None], after: Mapping[str, str | None]) -> dict[str, tuple[str, str]]:
    """Objects whose owner changed between two snapshots: name -> (old owner, new owner).

    Only objects owned in both count: a first label (None -> owner) or an object created or
    deleted in between is not a move.
    """
    moved: dict[str, tuple[str, str]] = {}
    for name, old in before.items():
        new = after.get(name)
        if old is not None and new is not None and new != old:
            moved[name] = (old, new)
    return moved


@dataclass(frozen=True)
class RemoteWrite:
    sync_id: str
    replica: str  # "" when the User-Agent names none
    started: float  # epoch seconds: when the emulator received it
    ended: float  # when it answered


def remote_writes(log: Iterable[Mapping[str, Any]]) -> list[RemoteWrite]:
    """The write requests of an emulator request log that name a sync (`sync_id`)."""
    writes = []
    for entry in log:
        sync_id = entry.get("sync_id")
        if entry.get("endpoint") not in WRITE_ENDPOINTS or not sync_id:
            continue
        writes.append(
            RemoteWrite(
                sync_id=str(sync_id),
                replica=replica_of(entry.get("user_agent")) or "",
                started=datetime.fromisoformat(entry["started_at"]).timestamp(),
                ended=datetime.fromisoformat(entry["at"]).timestamp(),
            )
        )
    return writes


@dataclass(frozen=True)
class WriteConflicts:
    """Who wrote each sync in a window, and where two replicas did so inside one handover."""

    writes: int
    syncs: int  # syncs written at least once
    handed_over: tuple[str, ...]  # syncs written by more than one replica (a handover with writes)
    overlapping: tuple[str, ...]  # two replicas' writes in flight at the same time
    interleaved: tuple[str, ...]  # writers went A, B, A: the old owner wrote after the new one
    unattributed: int  # writes whose User-Agent named no replica

    @property
    def double_writes(self) -> int:
        return len(set(self.overlapping) | set(self.interleaved))

    def to_json(self) -> dict[str, Any]:
        return {
            "writes": self.writes,
            "syncs_written": self.syncs,
            "syncs_handed_over_with_writes": len(self.handed_over),
            "double_writes": self.double_writes,
            "overlapping": list(self.overlapping),
            "interleaved": list(self.interleaved),
            "unattributed_writes": self.unattributed,
        }


def write_conflicts(writes: Iterable[RemoteWrite]) -> WriteConflicts:
    """Per sync, in arrival order: do two replicas' writes overlap in time, or does a replica
    write again after another one did (A, B, A)? Either is a double write."""
    by_sync: dict[str, list[RemoteWrite]] = {}
    count = unattributed = 0
    for write in writes:
        by_sync.setdefault(write.sync_id, []).append(write)
        count += 1
        unattributed += not write.replica
    handed_over, overlapping, interleaved = [], [], []
    for sync_id, history in sorted(by_sync.items()):
        history.sort(key=lambda w: (w.started, w.ended))
        if len({w.replica for w in history}) > 1:
            handed_over.append(sync_id)
        if any(
            a.replica != b.replica and b.started < a.ended
            for i, a in enumerate(history)
            for b in history[i + 1 :]
        ):
            overlapping.append(sync_id)
        runs = [replica for replica, _ in itertools.groupby(w.replica for w in history)]
        if len(runs) != len(set(runs)):
            interleaved.append(sync_id)
    return WriteConflicts(
        writes=count,
        syncs=len(by_sync),
        handed_over=tuple(handed_over),
        overlapping=tuple(overlapping),
        interleaved=tuple(interleaved),
        unattributed=unattributed,
    )
