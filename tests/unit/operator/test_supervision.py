"""No long-lived task dies silently: each is killed here with an exception it did not expect and
shown to come back (the observer's listing loop, the leader elector, the shard ring loop, the
reconcile workers), and a task that cannot be restarted fails the liveness endpoint, served by
kopf's own probe server. Nothing waits on a wall clock: backoff sleeps return at once."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import kopf
import pytest
from kopf._core.engines.probing import health_reporter

from hack.localcluster import free_port
from mixpeek_operator import handlers
from mixpeek_operator.coordination import LeaderElector, LeaseTimings, ShardCoordinator
from mixpeek_operator.keys import ListingScope, ObjectKey
from mixpeek_operator.kube import JsonObject, KubeClient, KubeConflict, Resource
from mixpeek_operator.logging_setup import SecretRegistry
from mixpeek_operator.metrics import OperatorMetrics
from mixpeek_operator.mixpeek import SyncListing
from mixpeek_operator.observer import Observer, ObserverSettings
from mixpeek_operator.runtime import OperatorConfig, OperatorRuntime
from mixpeek_operator.supervision import SupervisionPolicy, Supervisor
from mixpeek_operator.workqueue import Backoff
from tests.support.fakes import FakeClock

SCOPE = ListingScope("sha256:abc", "ns", "bkt_1")
TIMINGS = LeaseTimings(lease_duration=15.0, renew_deadline=10.0, retry_period=2.0)


async def settle(turns: int = 200) -> None:
    """Let every ready task run (event-loop turns, no wall-clock time)."""
    for _ in range(turns):
        await asyncio.sleep(0)


@dataclass
class QuickSleep:
    """Backoff waits (a few seconds at most) return at once; the loops' own intervals park."""

    delays: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if seconds >= 10.0:
            await asyncio.Event().wait()
        await asyncio.sleep(0)


def crashing(times: int, error: Exception) -> Callable[[], None]:
    """Raises `error` on its first `times` calls, then does nothing."""
    calls = iter(range(times))

    def maybe_crash() -> None:
        if next(calls, None) is not None:
            raise error

    return maybe_crash


# --- the supervisor itself ------------------------------------------------------------------


async def test_a_crash_is_logged_counted_backed_off_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    metrics, sleep, runs = OperatorMetrics(), QuickSleep(), []
    supervisor = Supervisor(on_restart=metrics.count_task_restart, sleep=sleep, jitter=lambda: 1.0)
    crash = crashing(2, KeyError("holderIdentity"))

    async def work() -> None:
        runs.append(len(runs))
        crash()

    with caplog.at_level(logging.ERROR, logger="mixpeek_operator.supervision"):
        await supervisor.spawn("worker-0", work, kind="reconcile-worker")
    assert runs == [0, 1, 2]  # two crashes, two restarts, then it finished
    assert sleep.delays == [1.0, 2.0]  # exponential backoff (jitter pinned to its maximum)
    assert (
        metrics.registry.get_sample_value(
            "mixpeek_operator_task_restarts_total", {"task": "reconcile-worker"}
        )
        == 2
    )
    assert [r.getMessage() for r in caplog.records] == [
        "task worker-0 crashed; restarting it in 1.0s",
        "task worker-0 crashed; restarting it in 2.0s",
    ]
    assert all(r.exc_info for r in caplog.records)  # with the traceback
    assert supervisor.healthy()


async def test_a_task_that_keeps_crashing_is_given_up_and_marks_the_process_unhealthy() -> None:
    clock = FakeClock()
    supervisor = Supervisor(SupervisionPolicy(max_failures=3), clock=clock, sleep=QuickSleep())

    async def broken() -> None:
        raise RuntimeError("always")

    await supervisor.spawn("observe ns/bkt_1", broken, kind="observer")
    assert supervisor.failed == {"observe ns/bkt_1": "RuntimeError: always"}
    assert not supervisor.healthy()


async def test_crashes_far_apart_never_exhaust_the_restart_budget() -> None:
    clock = FakeClock()
    supervisor = Supervisor(
        SupervisionPolicy(max_failures=2, healthy_after=60.0), clock=clock, sleep=QuickSleep()
    )
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 5:
            clock.advance(120.0)  # a long healthy run, then a crash
            raise RuntimeError("rare")

    await supervisor.spawn("shard-ring r", flaky, kind="shard-ring")
    assert runs == 6
    assert supervisor.healthy()


async def test_cancelling_a_supervised_task_ends_it() -> None:
    supervisor = Supervisor(sleep=QuickSleep())
    task = supervisor.spawn("forever", lambda: asyncio.Event().wait(), kind="observer")
    await settle(5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert supervisor.healthy()


# --- each loop, killed --------------------------------------------------------------------


@dataclass
class FlakyLister:
    """Mixpeek's list, with an unexpected (non-MixpeekError) exception on the first call."""

    crash: Callable[[], None]
    calls: int = 0

    async def list_all_syncs(self, bucket_id: str, /, *, page_size: int) -> SyncListing:
        self.calls += 1
        self.crash()
        return SyncListing([], 1)


async def test_the_observer_listing_loop_survives_an_unexpected_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lister = FlakyLister(crashing(1, ValueError("unexpected field in the listing")))
    observer = Observer(
        ObserverSettings(interval=60.0), lambda key: None, clock=FakeClock(), sleep=QuickSleep()
    )
    with caplog.at_level(logging.ERROR):
        observer.join(ObjectKey("team", "a"), SCOPE, lister)
        listing = observer.listings[SCOPE]
        await settle()
    try:
        assert listing.primed.is_set(), "the listing loop died on the first exception"
        assert lister.calls == 2
        assert "task observe ns/bkt_1 crashed; restarting it" in caplog.text
        assert listing.task is not None
        assert not listing.task.done()  # polling on
    finally:
        await observer.close()


@dataclass
class FakeLeases:
    """The Lease calls of KubeClient over a dict, with resourceVersion checks; `crash` runs
    before every list (the shard ring's read)."""

    leases: dict[str, JsonObject] = field(default_factory=dict)
    revision: int = 0
    crash: Callable[[], None] = lambda: None
    lists: int = 0

    async def get_object(self, resource: Resource, namespace: str | None, name: str) -> Any:
        lease = self.leases.get(name)
        return copy.deepcopy(lease) if lease else None

    async def create_object(
        self, resource: Resource, namespace: str | None, body: JsonObject, *, write: str
    ) -> JsonObject:
        name = body["metadata"]["name"]
        if name in self.leases:
            raise KubeConflict(409, "AlreadyExists", name)
        return self._store(name, body)

    async def replace_object(
        self, resource: Resource, namespace: str | None, body: JsonObject, *, write: str
    ) -> JsonObject:
        name = body["metadata"]["name"]
        if self.leases[name]["metadata"]["resourceVersion"] != body["metadata"].get("resourceVersion"):
            raise KubeConflict(409, "Conflict", name)
        return self._store(name, body)

    async def list_objects(
        self, resource: Resource, namespace: str | None = None, *, label_selector: str
    ) -> list[JsonObject]:
        self.lists += 1
        self.crash()
        return [copy.deepcopy(lease) for lease in self.leases.values()]

    def _store(self, name: str, body: JsonObject) -> JsonObject:
        self.revision += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.revision)
        self.leases[name] = stored
        return copy.deepcopy(stored)


async def test_the_leader_elector_keeps_campaigning_after_on_started_leading_raises() -> None:
    starts: list[int] = []
    crash = crashing(1, RuntimeError("engine failed to start"))

    async def on_started() -> None:
        starts.append(len(starts))
        crash()

    async def on_stopped() -> None:
        return None

    elector = LeaderElector(
        cast(KubeClient, FakeLeases()),
        namespace="ops",
        name="mixpeek-operator",
        identity="pod-a",
        timings=TIMINGS,
        on_started_leading=on_started,
        on_stopped_leading=on_stopped,
        supervisor=Supervisor(sleep=QuickSleep()),
    )
    elector.start()
    try:
        await settle()
        assert starts == [0, 1], "campaigning ended with the exception"
        assert elector.is_leader()
    finally:
        await elector.stop()


async def test_the_shard_ring_loop_survives_an_unexpected_exception() -> None:
    leases = FakeLeases(crash=crashing(1, KeyError("metadata")))
    changes: list[str] = []

    async def on_change() -> None:
        changes.append("restart")

    coordinator = ShardCoordinator(
        cast(KubeClient, leases),
        namespace="ops",
        ring="mixpeek-operator",
        identity="pod-a",
        timings=TIMINGS,
        on_change=on_change,
        supervisor=Supervisor(sleep=QuickSleep()),
    )
    coordinator.start()
    try:
        await settle()
        assert leases.lists == 2, "the ring loop died on the first exception"
        assert coordinator.members == {"pod-a"}  # its own Lease, seen by the restarted loop
    finally:
        await coordinator.stop()


async def test_a_reconcile_worker_is_restarted() -> None:
    from mixpeek_operator.credentials import CredentialStore
    from mixpeek_operator.engine import Engine, EngineSettings

    async def no_secret(namespace: str, name: str) -> None:
        return None

    metrics = OperatorMetrics()
    engine = Engine(
        kube=cast(Any, None),
        credentials=CredentialStore(no_secret, default_secret=None),
        metrics=metrics,
        settings=EngineSettings(workers=1),
        supervisor=Supervisor(on_restart=metrics.count_task_restart, sleep=QuickSleep()),
    )
    handled: list[ObjectKey] = []
    crash = crashing(1, RuntimeError("bug outside the reconcile's own error handling"))

    async def handle(key: ObjectKey) -> None:
        crash()
        handled.append(key)
        await engine.queue.done(key)

    engine._handle = handle  # type: ignore[method-assign]
    engine.start()
    try:
        await engine.queue.add(ObjectKey("team", "a"))
        await engine.queue.done(ObjectKey("team", "a"))  # the crashed handling never said done
        await engine.queue.add(ObjectKey("team", "b"))
        await settle()
        assert ObjectKey("team", "b") in handled
        assert (
            metrics.registry.get_sample_value(
                "mixpeek_operator_task_restarts_total", {"task": "reconcile-worker"}
            )
            == 1
        )
    finally:
        await engine.stop()


# --- /healthz ---------------------------------------------------------------------------------


async def healthz(runtime: OperatorRuntime) -> httpx.Response:
    """GET /healthz from kopf's own probe server, running the operator's registered probe handlers."""
    port = free_port()
    ready = asyncio.Event()
    server = asyncio.create_task(
        health_reporter(
            f"http://127.0.0.1:{port}/healthz",
            memo=kopf.Memo(runtime=runtime),
            indices={},
            registry=handlers.operator_registry(),
            settings=kopf.OperatorSettings(),
            ready_flag=ready,
        )
    )
    try:
        await ready.wait()
        async with httpx.AsyncClient() as client:
            return await client.get(f"http://127.0.0.1:{port}/healthz")
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


async def test_healthz_fails_once_a_task_cannot_be_restarted() -> None:
    runtime = OperatorRuntime(OperatorConfig(), SecretRegistry())
    assert (await healthz(runtime)).status_code == 200

    runtime.supervisor = Supervisor(
        SupervisionPolicy(backoff=Backoff(base=0.0, cap=0.0), max_failures=2), sleep=QuickSleep()
    )

    async def broken() -> None:
        raise RuntimeError("listing parser bug")

    await runtime.supervisor.spawn("observe ns/bkt_1", broken, kind="observer")
    answer = await healthz(runtime)
    assert answer.status_code == 500  # the kubelet's liveness probe fails: the pod is restarted
