"""Prometheus metrics of the operator, in a registry of their own.

A dedicated `CollectorRegistry` (not prometheus_client's global one) lets every test, and
every operator instance in one process, start from zero. Hooks elsewhere are plain
callables, so this module imports nothing of ours.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from typing import Final, Literal
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

ReconcileResult = Literal["success", "error", "stalled"]
RECONCILE_RESULTS: Final[tuple[ReconcileResult, ...]] = ("success", "error", "stalled")
# (Ready condition status, Ready reason) of every BucketSync, read at scrape time.
ResourceSource = Callable[[], Iterable[tuple[str, str]]]

# Mixpeek calls are small JSON requests: most finish well under a second.
_REQUEST_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A reconcile is a few remote calls plus a status patch, or longer when rate limited.
_RECONCILE_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Creation to Ready spans seconds (healthy) to many minutes (backoff, rate limits).
_TIME_TO_READY_BUCKETS: Final = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class _ResourceCollector(Collector):
    """`bucketsync_resources{ready,reason}`: objects per Ready status and reason, counted per scrape.

    A callback rather than a Gauge the engine keeps in step: there is nothing to forget to
    decrement when an object is deleted or changes condition.
    """

    NAME: Final = "bucketsync_resources"
    HELP: Final = "BucketSync objects by the status and reason of their Ready condition"

    def __init__(self) -> None:
        self.source: ResourceSource | None = None

    def describe(self) -> Iterable[Metric]:
        # Lets the registry learn the name without calling the source at registration.
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        source = self.source
        if source is not None:
            try:
                counts = Tally(source())
            except Exception:
                # A failing source must not break the whole scrape; the gauge is just empty.
                logger.exception("bucketsync_resources source failed")
                counts = Tally()
            for (ready, reason), count in sorted(counts.items()):
                family.add_metric([ready, reason], count)
        return [family]

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.NAME, self.HELP, labels=["ready", "reason"])


class MetricsServer:
    """The running exporter; call it (or `stop()`) to shut it down."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.host: str = str(server.server_address[0])
        self.port: int = int(server.server_address[1])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __call__(self) -> None:
        self.stop()


class OperatorMetrics:
    """Every metric the operator exports, registered in `self.registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "mixpeek_api_requests_total",
            "Mixpeek API requests by endpoint, method and HTTP status code ('error': no response)",
            ["endpoint", "method", "code"],
            registry=r,
        )
        self.request_duration = Histogram(
            "mixpeek_api_request_duration_seconds",
            "Latency of Mixpeek API requests, including failed ones",
            ["endpoint", "method"],
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        self.throttled = Counter(
            "mixpeek_api_throttled_total",
            "Mixpeek API responses with status 429 (rate limited by the server)",
            registry=r,
        )
        self.ratelimiter_wait = Counter(
            "mixpeek_ratelimiter_wait_seconds_total",
            "Seconds requests waited in the operator's own client-side rate limiter, "
            "including Retry-After holds of their API key",
            registry=r,
        )
        self.key_holds = Counter(
            "mixpeek_api_key_holds_total",
            "Retry-After answers that held every request with the API key until the wait passed",
            registry=r,
        )
        self.reconciles = Counter(
            "bucketsync_reconcile_total",
            "BucketSync reconciles by result: success, error (retried with backoff) or stalled",
            ["result"],
            registry=r,
        )
        self.reconcile_duration = Histogram(
            "bucketsync_reconcile_duration_seconds",
            "Duration of one BucketSync reconcile",
            buckets=_RECONCILE_BUCKETS,
            registry=r,
        )
        self.drift_corrections = Counter(
            "bucketsync_drift_corrections_total",
            "Remote fields set back to the BucketSync spec after drifting",
            ["field"],
            registry=r,
        )
        self.kube_writes = Counter(
            "bucketsync_kube_writes_total",
            "Writes to the Kubernetes API by kind (status, metadata, event), failed ones included",
            ["kind"],
            registry=r,
        )
        self.events = Counter(
            "bucketsync_events_total",
            "Kubernetes Events emitted by reason",
            ["reason"],
            registry=r,
        )
        self.time_to_ready = Histogram(
            "bucketsync_time_to_ready_seconds",
            "Seconds from BucketSync creation to its first Ready=True",
            buckets=_TIME_TO_READY_BUCKETS,
            registry=r,
        )
        # Coordination: what this replica does (active), why (leading, or owning a shard), and
        # the Leases behind it. Leader election and sharding are the two users of a Lease.
        self.active = Gauge(
            "mixpeek_operator_active",
            "1 while this replica reconciles (it works alone, leads, or owns a shard past its join "
            "delay), 0 on a standby or a shard member that owns nothing yet",
            registry=r,
        )
        self.leading = Gauge(
            "mixpeek_operator_leading",
            "1 while this replica holds the leader election Lease, else 0 (standby, sharding, or "
            "no leader election)",
            registry=r,
        )
        self.lease_held = Gauge(
            "mixpeek_operator_lease_held",
            "1 while this replica holds the Lease (leader election's, or its own shard member Lease) "
            "and renewed it within the renew deadline",
            ["lease"],
            registry=r,
        )
        self.lease_transitions = Counter(
            "mixpeek_operator_lease_transitions",
            "Times this replica acquired or lost the Lease",
            ["lease"],
            registry=r,
        )
        self.shard_members = Gauge(
            "mixpeek_operator_shard_members",
            "Live replicas in this replica's view of the shard ring (rendezvous shards; with label "
            "shards, on the replica running the assigner)",
            registry=r,
        )
        self.shard_owned_objects = Gauge(
            "mixpeek_operator_shard_owned_objects",
            "BucketSync objects this replica reconciles (sharding only)",
            registry=r,
        )
        self.shard_owned_groups = Gauge(
            "mixpeek_operator_shard_owned_groups",
            "Listing groups (credentials Secret x bucket) this replica owns (sharding only)",
            registry=r,
        )
        self.shard_handovers = Counter(
            "mixpeek_operator_shard_handovers",
            "Listing groups that moved to or away from this replica (sharding only)",
            registry=r,
        )
        # Label shards: what moves, what this replica's own watches receive, and the assigner.
        self.shard_draining_objects = Gauge(
            "mixpeek_operator_shard_draining_objects",
            "Objects this replica is handing over: told to drain, not yet acknowledged (label shards)",
            registry=r,
        )
        self.shard_object_handovers = Counter(
            "mixpeek_operator_shard_object_handovers",
            "Objects that moved to (in) or away from (out) this replica (label shards)",
            ["direction"],
            registry=r,
        )
        self.watch_events = Counter(
            "mixpeek_operator_watch_events",
            "Objects received by this replica's own watches, initial lists included (label shards; "
            "resource: bucketsyncs, secrets, or assigner for the assigner's two BucketSync watches)",
            ["resource"],
            registry=r,
        )
        self.shard_assigner = Gauge(
            "mixpeek_operator_shard_assigner",
            "1 while this replica runs the shard assigner (holds its Lease), else 0 (label shards)",
            registry=r,
        )
        self.shard_assignments = Counter(
            "mixpeek_operator_shard_assignments",
            "Label writes of the shard assigner: label (a new object), drain (asked to hand over), "
            "move (owner changed)",
            ["action"],
            registry=r,
        )
        self.task_restarts = Counter(
            "mixpeek_operator_task_restarts",
            "Background tasks (observer, reconcile-worker, leader-election, shard-ring, ...) restarted "
            "after an unexpected exception",
            ["task"],
            registry=r,
        )
        self._leases_held: dict[str, bool] = {}
        self._resources = _ResourceCollector()
        r.register(self._resources)
        for result in RECONCILE_RESULTS:
            # Exported at 0 from the start, so rate() and alerts work before the first error.
            self.reconciles.labels(result=result)

    # --- helpers with the signatures of the hooks elsewhere ------------------------------------

    def observe_request(self, endpoint: str, method: str, status_code: int | None, seconds: float) -> None:
        """One Mixpeek HTTP attempt; `status_code` None when no response arrived."""
        code = "error" if status_code is None else str(status_code)
        self.requests.labels(endpoint=endpoint, method=method, code=code).inc()
        self.request_duration.labels(endpoint=endpoint, method=method).observe(seconds)
        if status_code == 429:
            self.throttled.inc()

    def observe_ratelimiter_wait(self, seconds: float) -> None:
        """Time spent waiting for the client-side rate limiter (its `on_wait` hook)."""
        self.ratelimiter_wait.inc(seconds)

    def observe_key_hold(self, seconds: float) -> None:
        """A Retry-After hold began on an API key (the rate limiter's `on_hold` hook)."""
        self.key_holds.inc()

    def observe_reconcile(self, result: ReconcileResult, seconds: float) -> None:
        if result not in RECONCILE_RESULTS:
            # An open label set would let a typo create an unbounded series.
            raise ValueError(f"unknown reconcile result {result!r}; expected one of {RECONCILE_RESULTS}")
        self.reconciles.labels(result=result).inc()
        self.reconcile_duration.observe(seconds)

    def count_drift_correction(self, field: str) -> None:
        self.drift_corrections.labels(field=field).inc()

    def observe_kube_write(self, kind: str, status: int) -> None:
        """Matches `KubeClient(on_write=...)`; the status is not a label (the kind is what matters)."""
        self.kube_writes.labels(kind=kind).inc()

    def count_event(self, reason: str) -> None:
        self.events.labels(reason=reason).inc()

    def observe_time_to_ready(self, seconds: float) -> None:
        self.time_to_ready.observe(max(0.0, seconds))

    def set_active(self, active: bool) -> None:
        self.active.set(1 if active else 0)

    def set_leading(self, leading: bool) -> None:
        """With leader election the leader is the one replica that reconciles: active too."""
        self.leading.set(1 if leading else 0)
        self.set_active(leading)

    def set_lease_held(self, lease: str, held: bool) -> None:
        """Matches `LeaseHolder(on_lease=...)`; a change of `held` counts as a transition."""
        transitions = self.lease_transitions.labels(lease=lease)  # exported at 0 from the first call
        if held != self._leases_held.get(lease, False):
            transitions.inc()
        self._leases_held[lease] = held
        self.lease_held.labels(lease=lease).set(1 if held else 0)

    def set_shard_members(self, count: int) -> None:
        self.shard_members.set(count)

    def set_ownership_source(self, source: Callable[[], tuple[int, int]]) -> None:
        """Where the owned objects/groups gauges read (objects, groups) at scrape time."""
        self.shard_owned_objects.set_function(lambda: source()[0])
        self.shard_owned_groups.set_function(lambda: source()[1])

    def count_task_restart(self, task: str) -> None:
        """A supervised task crashed and is restarted (supervision.Supervisor's `on_restart` hook)."""
        self.task_restarts.labels(task=task).inc()

    def count_handovers(self, groups: int) -> None:
        self.shard_handovers.inc(groups)

    def set_draining_source(self, source: Callable[[], int]) -> None:
        self.shard_draining_objects.set_function(source)

    def count_object_handover(self, direction: Literal["in", "out"], objects: int = 1) -> None:
        self.shard_object_handovers.labels(direction=direction).inc(objects)

    def count_watch_events(self, resource: str, events: int = 1) -> None:
        self.watch_events.labels(resource=resource).inc(events)

    def set_assigner(self, running: bool) -> None:
        self.shard_assigner.set(1 if running else 0)

    def count_assignments(self, action: Literal["label", "drain", "move"], objects: int = 1) -> None:
        self.shard_assignments.labels(action=action).inc(objects)

    def set_resource_source(self, source: ResourceSource | None) -> None:
        """Where `bucketsync_resources` reads (ready, reason) of each object at scrape time."""
        self._resources.source = source

    # --- exporter ------------------------------------------------------------------------------

    def serve(self, port: int, host: str = "0.0.0.0") -> MetricsServer:
        """Serve this registry over HTTP in a daemon thread; port 0 picks a free port.

        Returns the server; calling it stops it (so it doubles as a `() -> None` stop callable).
        """
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        served = MetricsServer(server, thread)
        logger.info("serving metrics", extra={"address": f"{served.host}:{served.port}"})
        return served
