"""The engine without a cluster: watch events in, reconciles through the real reconcile,
Mixpeek played by the emulator in process, and an in-memory Kubernetes API (our own
`writer.KubeApi` port) that applies finalizer edits and status patches the way the API
server does. Time is a fake clock; workers are driven with `Engine.step()`, so nothing
sleeps."""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from hack.bench.memkube import apply_merge_patch
from mixpeek_operator import __version__
from mixpeek_operator.constants import FINALIZER, RECONCILE_REQUESTED_AT
from mixpeek_operator.credentials import CredentialStore
from mixpeek_operator.emulator.app import create_app
from mixpeek_operator.emulator.config import EmulatorConfig
from mixpeek_operator.emulator.state import Emulator
from mixpeek_operator.emulator.testing import FROZEN_START
from mixpeek_operator.emulator.traffic import FaultRule
from mixpeek_operator.engine import Engine, EngineSettings
from mixpeek_operator.keys import ObjectKey
from mixpeek_operator.kube import (
    EventType,
    JsonObject,
    KubeConflict,
    KubeConnectionError,
    KubeError,
    KubeNotFound,
    ObjectReference,
    Resource,
)
from mixpeek_operator.metrics import OperatorMetrics
from mixpeek_operator.mixpeek import MixpeekClient, RateLimiterRegistry
from mixpeek_operator.mixpeek.models import SyncCreateRequest
from mixpeek_operator.secret_guard import SecretUseGuard
from mixpeek_operator.status import merge_patch
from tests.support.fakes import FakeClock, ParkedSleep

KEY = ObjectKey("team", "demo")
NOW = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)


def secret(api_key: str = "sk_test_emulator") -> dict[str, Any]:
    data = {"apiKey": api_key, "namespace": "default", "baseUrl": "http://emulator"}
    return {
        "metadata": {"namespace": "team", "name": "creds"},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def bucketsync(name: str = "demo") -> dict[str, Any]:
    return {
        "apiVersion": "mixpeek.com/v1alpha1",
        "kind": "BucketSync",
        "metadata": {
            "name": name,
            "namespace": "team",
            "uid": f"uid-{name}",
            "generation": 1,
            "resourceVersion": "1",
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {
            "bucketId": "bkt_demo",
            "connectionId": "conn_s3_demo",
            "sourcePath": "demo-bucket/videos",
            "credentialsRef": {"name": "creds"},
        },
    }


@dataclass
class InMemoryKube:
    """The Kubernetes API as the engine uses it, over a dict of object bodies."""

    objects: dict[ObjectKey, dict[str, Any]] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    fail_status_with: Exception | None = None
    fail_finalizer_with: Exception | None = None
    revision: int = 100
    # Cleared: status patches wait until it is set again (a slow API server).
    status_gate: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.status_gate.set()

    def _existing(self, namespace: str | None, name: str) -> ObjectKey:
        key = ObjectKey(namespace or "", name)
        if key not in self.objects:
            raise KubeNotFound(404, "NotFound", f'bucketsyncs.mixpeek.com "{name}" not found')
        return key

    def _bump(self, key: ObjectKey) -> JsonObject:
        self.revision += 1
        self.objects[key]["metadata"]["resourceVersion"] = str(self.revision)
        return copy.deepcopy(self.objects[key])

    async def add_finalizer(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        finalizer: str,
        *,
        current: JsonObject | None = None,
    ) -> JsonObject:
        if self.fail_finalizer_with is not None:
            raise self.fail_finalizer_with
        key = self._existing(namespace, name)
        self.writes.append("add_finalizer")
        self.objects[key]["metadata"].setdefault("finalizers", []).append(finalizer)
        return self._bump(key)

    async def remove_finalizer(
        self, resource: Resource, namespace: str | None, name: str, finalizer: str
    ) -> JsonObject | None:
        key = ObjectKey(namespace or "", name)
        self.writes.append("remove_finalizer")
        body = self.objects.get(key)
        if body is None:
            return None
        body["metadata"]["finalizers"].remove(finalizer)
        return self._bump(key)

    async def patch_status(
        self, resource: Resource, namespace: str | None, name: str, patch: JsonObject
    ) -> JsonObject:
        if self.fail_status_with is not None:
            raise self.fail_status_with
        await self.status_gate.wait()
        key = self._existing(namespace, name)
        self.writes.append("patch_status")
        body = self.objects[key]
        status = body.get("status") or {}
        new = apply_merge_patch(status, patch["status"])
        assert merge_patch(status, new) is not None or patch["status"] == {}
        body["status"] = new
        return self._bump(key)

    async def create_event(
        self, involved: ObjectReference, *, type: EventType, reason: str, message: str
    ) -> JsonObject:
        self.events.append(reason)
        return {}

    async def get_object(self, resource: Resource, namespace: str | None, name: str) -> JsonObject | None:
        body = self.objects.get(ObjectKey(namespace or "", name))
        return copy.deepcopy(body) if body else None

    def body(self, key: ObjectKey = KEY) -> dict[str, Any]:
        return copy.deepcopy(self.objects[key])


@dataclass
class Rig:
    engine: Engine
    kube: InMemoryKube
    clock: FakeClock
    emulator: Emulator
    secrets: dict[tuple[str, str], dict[str, Any]]
    secret_gate: asyncio.Event
    emulator_app: Any  # cleared: Secret reads wait until it is set again

    async def apply(self, body: dict[str, Any]) -> None:
        """Create or update an object and deliver the watch event, as the API server would."""
        key = ObjectKey(body["metadata"]["namespace"], body["metadata"]["name"])
        self.kube.objects[key] = copy.deepcopy(body)
        await self.engine.on_object_event("MODIFIED", self.kube.body(key))

    async def echo(self, key: ObjectKey = KEY) -> None:
        """Deliver the watch event of the object's current state (our own writes come back)."""
        await self.engine.on_object_event("MODIFIED", self.kube.body(key))

    async def drain(self) -> list[ObjectKey]:
        """Run every reconcile that is due now."""
        done = []
        while (key := await self.engine.step()) is not None:
            done.append(key)
        return done

    def condition(self, kind: str, key: ObjectKey = KEY) -> dict[str, Any]:
        return next(c for c in self.kube.objects[key]["status"]["conditions"] if c["type"] == kind)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    app = create_app(EmulatorConfig(time_scale=0, start_time=FROZEN_START))
    secrets = {("team", "creds"): secret()}

    secret_gate = asyncio.Event()
    secret_gate.set()

    async def read_secret(namespace: str, name: str) -> Mapping[str, Any] | None:
        await secret_gate.wait()
        return secrets.get((namespace, name))

    clock, kube = FakeClock(), InMemoryKube()
    engine = Engine(
        kube=kube,
        credentials=CredentialStore(read_secret, default_secret=None),
        metrics=OperatorMetrics(),
        settings=EngineSettings(workers=1, backoff_base=1.0, backoff_cap=300.0),
        rate_limiters=RateLimiterRegistry(),
        clock=clock,
        now=lambda: NOW,
        sleep=ParkedSleep(),
        mixpeek_transport=httpx.ASGITransport(app=app),
    )
    yield Rig(engine, kube, clock, app.state.emulator, secrets, secret_gate, app)
    await engine.stop()


def sample(engine: Engine, name: str, labels: dict[str, str] | None = None) -> float:
    return engine.metrics.registry.get_sample_value(name, labels or {}) or 0.0


async def test_a_new_object_is_reconciled_once_and_our_own_writes_do_not_wake_it(rig: Rig) -> None:
    await rig.apply(bucketsync())
    assert await rig.drain() == [KEY]
    assert rig.kube.writes == ["add_finalizer", "patch_status"]
    assert rig.condition("Ready")["status"] == "True"
    assert rig.kube.objects[KEY]["metadata"]["finalizers"] == [FINALIZER]
    await rig.echo()  # the watch event of our status write
    assert await rig.drain() == []
    assert sample(rig.engine, "bucketsync_reconcile_total", {"result": "success"}) == 1
    # Time to Ready: creation at 00:00:00, Ready at 00:00:30.
    assert sample(rig.engine, "bucketsync_time_to_ready_seconds_sum") == 30.0


async def test_a_spec_change_or_a_request_annotation_wakes_it(rig: Rig) -> None:
    await rig.apply(bucketsync())
    await rig.drain()
    body = rig.kube.body()
    body["metadata"]["labels"] = {"team": "video"}  # metadata the reconcile does not act on
    await rig.apply(body)
    assert await rig.drain() == []
    body["spec"]["batchSize"] = 7
    body["metadata"]["generation"] = 2
    await rig.apply(body)
    assert await rig.drain() == [KEY]
    assert rig.kube.objects[KEY]["status"]["observedGeneration"] == 2
    body = rig.kube.body()
    body["metadata"]["annotations"] = {RECONCILE_REQUESTED_AT: "now"}
    await rig.apply(body)
    assert await rig.drain() == [KEY]
    assert rig.kube.objects[KEY]["status"]["lastHandledReconcileAt"] == "now"


async def test_a_late_watch_event_does_not_roll_the_record_back(rig: Rig) -> None:
    await rig.apply(bucketsync())
    stale = rig.kube.body()
    await rig.drain()
    await rig.engine.on_object_event("MODIFIED", stale)  # resourceVersion 1, we hold a newer one
    assert rig.engine.objects[KEY].body["status"]["conditions"]


async def test_failures_are_retried_with_backoff_and_a_success_resets_it(rig: Rig) -> None:
    rig.emulator.faults.rules.append(FaultRule(endpoint="create", error_count=2, error_status=503))
    await rig.apply(bucketsync())
    assert await rig.drain() == [KEY]
    assert rig.engine.queue.failures(KEY) == 1
    delay = rig.engine.queue.next_due()
    assert delay is not None
    assert 0.0 <= delay <= 1.0
    rig.clock.advance(1.0)
    assert await rig.drain() == [KEY]
    assert rig.engine.queue.failures(KEY) == 2
    assert (rig.engine.queue.next_due() or 0.0) <= 2.0
    rig.clock.advance(2.0)
    assert await rig.drain() == [KEY]
    assert rig.engine.queue.failures(KEY) == 0
    assert rig.condition("Ready")["status"] == "True"
    assert sample(rig.engine, "bucketsync_reconcile_total", {"result": "error"}) == 2


async def test_a_crashing_reconcile_is_logged_and_retried(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.kube.fail_status_with = RuntimeError("boom")
    await rig.apply(bucketsync())
    with caplog.at_level(logging.ERROR, logger="mixpeek_operator.engine"):
        assert await rig.drain() == [KEY]
    assert "reconcile crashed" in caplog.text
    assert rig.engine.queue.failures(KEY) == 1
    rig.kube.fail_status_with = None
    rig.clock.advance(1.0)
    assert await rig.drain() == [KEY]
    assert rig.condition("Ready")["status"] == "True"


async def test_a_refused_status_write_is_retried_without_a_crash(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.kube.fail_status_with = KubeConflict(409, "Conflict", "the object has been modified")
    await rig.apply(bucketsync())
    with caplog.at_level(logging.WARNING):
        assert await rig.drain() == [KEY]
    assert "reconcile crashed" not in caplog.text
    assert "status not written, will retry: 409 Conflict: the object has been modified" in caplog.text
    assert rig.engine.queue.failures(KEY) == 1
    assert sample(rig.engine, "bucketsync_reconcile_total", {"result": "error"}) == 1
    rig.kube.fail_status_with = None
    rig.clock.advance(1.0)
    assert await rig.drain() == [KEY]
    assert rig.condition("Ready")["status"] == "True"


async def test_a_status_write_to_a_deleted_object_is_not_an_error(rig: Rig) -> None:
    rig.kube.fail_status_with = KubeNotFound(404, "NotFound", 'bucketsyncs.mixpeek.com "demo" not found')
    await rig.apply(bucketsync())
    assert await rig.drain() == [KEY]
    assert rig.engine.queue.failures(KEY) == 0
    assert sample(rig.engine, "bucketsync_reconcile_total", {"result": "success"}) == 1


@pytest.mark.parametrize(
    "outage",
    [
        KubeConnectionError(0, "ConnectionError", "connection refused", "PATCH /apis/x"),
        KubeError(503, "ServiceUnavailable", "apiserver is shutting down", "PATCH /apis/x"),
        KubeError(429, "TooManyRequests", "storage is (re)initializing", "PATCH /apis/x"),
    ],
)
async def test_a_kubernetes_api_outage_is_one_warning_per_object_not_a_crash(
    rig: Rig, caplog: pytest.LogCaptureFixture, outage: KubeError
) -> None:
    rig.kube.fail_status_with = outage
    await rig.apply(bucketsync())
    with caplog.at_level(logging.INFO, logger="mixpeek_operator.engine"):
        for attempt in range(3):
            assert await rig.drain() == [KEY]
            assert rig.engine.queue.failures(KEY) == attempt + 1  # backing off
            rig.clock.advance(60.0)
        rig.kube.fail_status_with = None
        assert await rig.drain() == [KEY]
    records = [r for r in caplog.records if r.name.startswith("mixpeek_operator.")]
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # neither the reconcile's "status not written" nor Event failures
    assert "Kubernetes API unavailable" in warnings[0].getMessage()
    assert warnings[0].exc_info is None
    assert not [r for r in records if r.levelno >= logging.ERROR]
    assert any(r.getMessage() == "Kubernetes API reachable again" for r in records)
    assert rig.condition("Ready")["status"] == "True"


async def test_a_kubernetes_client_error_is_still_a_crash(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    # Not a status write (a refused one is retried with a warning): a finalizer patch.
    rig.kube.fail_finalizer_with = KubeError(400, "BadRequest", "bad patch", "PATCH /apis/x")
    await rig.apply(bucketsync())
    with caplog.at_level(logging.ERROR, logger="mixpeek_operator.engine"):
        assert await rig.drain() == [KEY]
    assert "reconcile crashed" in caplog.text
    assert "Kubernetes API unavailable" not in caplog.text
    assert rig.engine.queue.failures(KEY) == 1


async def test_a_stalled_object_requeues_only_when_told(rig: Rig) -> None:
    rig.secrets.clear()
    await rig.apply(bucketsync())
    await rig.drain()
    assert rig.condition("Stalled")["reason"] == "SecretNotFound"
    assert rig.engine.queue.next_due() is None  # a missing Secret waits for the Secret
    assert rig.engine.queue.failures(KEY) == 0


async def test_a_secret_change_requeues_its_dependents_at_once(rig: Rig) -> None:
    rig.secrets[("team", "creds")] = secret("sk_test_wrong")
    await rig.apply(bucketsync())
    await rig.apply(bucketsync("other"))
    await rig.drain()
    assert rig.condition("Stalled")["reason"] == "AuthFailed"
    assert (rig.engine.queue.next_due() or 0) == 300.0
    rig.secrets[("team", "creds")] = secret()
    await rig.engine.on_secret_event("MODIFIED", secret())
    assert sorted(await rig.drain()) == [KEY, ObjectKey("team", "other")]
    assert rig.condition("Ready")["status"] == "True"
    await rig.engine.on_secret_event("MODIFIED", secret())  # same content: nothing to do
    assert await rig.drain() == []


async def test_a_remote_change_seen_by_the_observer_wakes_the_object(rig: Rig) -> None:
    await rig.apply(bucketsync())
    await rig.drain()
    sync_id = rig.kube.objects[KEY]["status"]["syncConfigId"]
    rig.emulator.admin_patch(sync_id, {"batch_size": 99})
    (listing,) = rig.engine.observer.listings.values()
    rig.clock.advance(60.0)  # the next listing, begun after our last write
    await rig.engine.observer.refresh(listing)
    await rig.engine.wait_background()
    assert await rig.drain() == [KEY]
    assert rig.emulator.find(sync_id).config.batch_size == 50
    assert "DriftCorrected" in rig.kube.events


async def test_deletion_removes_the_finalizer_and_a_deleted_event_forgets_everything(rig: Rig) -> None:
    await rig.apply(bucketsync())
    await rig.drain()
    sync_id = rig.kube.objects[KEY]["status"]["syncConfigId"]
    body = rig.kube.body()
    body["metadata"]["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    await rig.apply(body)
    assert await rig.drain() == [KEY]
    assert rig.kube.objects[KEY]["metadata"]["finalizers"] == []
    assert "Deleted" in rig.kube.events
    assert sync_id not in [record.config.sync_config_id for record in rig.emulator.all_syncs()]
    await rig.engine.on_object_event("DELETED", rig.kube.body())
    assert KEY not in rig.engine.objects
    assert rig.engine.observer.listings == {}
    assert len(rig.engine.queue) == 0
    # The Secret no longer has this dependent.
    assert rig.engine.credentials.secret_changed(("team", "creds"), secret("sk_x")) == set()


async def test_readiness_summary_counts_every_object(rig: Rig) -> None:
    rig.secrets.clear()
    await rig.apply(bucketsync())
    assert list(rig.engine.readiness_summary()) == [("Unknown", "")]
    await rig.drain()
    assert list(rig.engine.readiness_summary()) == [("False", "SecretNotFound")]


async def test_stopping_work_requeues_every_cached_object_for_the_next_leader_term(rig: Rig) -> None:
    await rig.apply(bucketsync())
    assert await rig.drain() == [KEY]
    await rig.echo()
    writes = list(rig.kube.writes)
    assert rig.engine.observer.listings  # the object's group is listed
    # Leadership lost: work stops, the cache stays, and a new term reconciles everything once.
    await rig.engine.stop_work()
    assert KEY in rig.engine.objects
    # Listings are not kept: a group owned again is listed after it was (re)acquired.
    assert rig.engine.observer.listings == {}
    assert await rig.drain() == [KEY]
    assert rig.kube.writes == writes  # the object was already converged: nothing to write


async def test_a_pause_requeues_only_what_it_cut_short_and_then_lists_afresh(rig: Rig) -> None:
    idle, interrupted = ObjectKey("team", "idle"), ObjectKey("team", "busy")
    for key in (KEY, idle, interrupted):
        await rig.apply(bucketsync(key.name))
    assert sorted(await rig.drain()) == sorted([KEY, idle, interrupted])
    for key in (KEY, idle, interrupted):
        await rig.echo(key)
    assert await rig.drain() == []
    changed_sync = rig.kube.objects[KEY]["status"]["syncConfigId"]
    body = rig.kube.body(interrupted)
    body["spec"]["batchSize"], body["metadata"]["generation"] = 7, 2
    rig.kube.status_gate.clear()
    await rig.apply(body)
    rig.engine.start()
    for _ in range(200):  # until the worker waits on the status write
        await asyncio.sleep(0)
    assert rig.engine.queue.active() == {interrupted}
    # The label shard's Lease lapsed: work pauses, the cache and the queue stay.
    await rig.engine.pause()
    assert rig.engine.queue.active() == frozenset()
    (listing,) = rig.engine.observer.listings.values()
    assert listing.task is None
    assert listing.syncs == {}
    rig.emulator.admin_patch(changed_sync, {"batch_size": 99})  # someone changed it meanwhile
    rig.kube.status_gate.set()
    rig.engine.observer.resume()  # what start() does first (its workers would race drain())
    await listing.primed.wait()
    await rig.engine.wait_background()
    # The cut-short reconcile runs again and the remote change is seen; the idle object is left be.
    assert sorted(await rig.drain()) == sorted([KEY, interrupted])
    assert rig.kube.objects[interrupted]["status"]["observedGeneration"] == 2
    assert rig.emulator.find(changed_sync).config.batch_size == 50


# --- nothing grows without bound -------------------------------------------------------------


async def closed_idle_clients(engine: Engine) -> None:
    """Let the idle clients' closes (after idle_client_seconds, 0 here) run."""
    await engine.clients.wait_closed()
    await engine.wait_background()


async def test_a_key_rotation_closes_the_client_of_the_old_key(rig: Rig) -> None:
    """Regression: one HTTP pool + rate limiter per API key ever seen stayed open for good."""
    rig.engine.settings = dataclasses.replace(rig.engine.settings, idle_client_seconds=0.0)
    await rig.apply(bucketsync())
    await rig.apply(bucketsync("other"))
    await rig.drain()
    (first,) = rig.engine.clients._clients.values()
    for rotation in range(5):
        rig.secrets[("team", "creds")] = secret(f"sk_rotated_{rotation}")
        await rig.engine.on_secret_event("MODIFIED", rig.secrets[("team", "creds")])
        assert sorted(await rig.drain()) == [KEY, ObjectKey("team", "other")]
    await closed_idle_clients(rig.engine)
    assert len(rig.engine.clients) == 1  # the current key's only
    assert first._http.is_closed
    # The last object gone: no client, no listing, no cached Secret.
    for key in (KEY, ObjectKey("team", "other")):
        await rig.engine.on_object_event("DELETED", rig.kube.body(key))
    await closed_idle_clients(rig.engine)
    assert rig.engine.clients._clients == {}
    sizes = rig.engine.sizes()
    assert sizes.pop("queue.heap") <= 64  # stale entries leave lazily, at most 64 (workqueue)
    assert {name: count for name, count in sizes.items() if count} == {}, sizes


async def test_the_mixpeek_user_agent_names_the_replica(rig: Rig) -> None:
    """With a replica identity (sharding, leader election) every Mixpeek request says which
    replica sent it; the emulator logs it with the sync it acted on."""
    rig.engine.settings = dataclasses.replace(rig.engine.settings, replica="shard-2")
    await rig.apply(bucketsync())
    await rig.drain()
    log = rig.emulator.stats.log()
    assert {entry["user_agent"] for entry in log} == {f"mixpeek-operator/{__version__} (shard-2)"}
    (created,) = [entry["sync_id"] for entry in log if entry["endpoint"] == "create"]
    assert created == rig.kube.objects[KEY]["status"]["syncConfigId"]


async def test_an_object_deleted_during_a_failing_create_leaves_no_failure_count_or_mark(rig: Rig) -> None:
    """Regression: the failure count and the create-attempt mark of an object deleted while its
    (failing) create was under way stayed for the life of the process."""
    rig.emulator.faults.rules.append(FaultRule(endpoint="create", error_count=50, error_status=503))
    patch_status = rig.kube.patch_status

    async def deleted_meanwhile(*args: Any, **kwargs: Any) -> JsonObject:
        if KEY in rig.kube.objects:  # force-deleted (finalizer stripped) while the create ran
            await rig.engine.on_object_event("DELETED", rig.kube.objects.pop(KEY))
        raise KubeNotFound(404, "NotFound", "bucketsyncs.mixpeek.com demo not found")

    rig.kube.patch_status = deleted_meanwhile  # type: ignore[method-assign]
    await rig.apply(bucketsync())
    assert await rig.drain() == [KEY]
    rig.kube.patch_status = patch_status  # type: ignore[method-assign]
    rig.clock.advance(600)
    await rig.drain()
    assert rig.engine.queue.failures(KEY) == 0
    assert rig.engine.context.create_attempts == set()
    assert len(rig.engine.queue) == 0


async def test_only_the_replica_reconciling_an_object_counts_it_in_bucketsync_resources(rig: Rig) -> None:
    """Regression: standbys (and shards not owning an object) exported it too, so dashboards
    summed over replicas counted each object once per replica."""
    rig.engine.metrics.set_resource_source(rig.engine.readiness_summary)
    await rig.apply(bucketsync())
    await rig.apply(bucketsync("other"))
    await rig.drain()
    labels = {"ready": "True", "reason": "Synced"}
    assert sample(rig.engine, "bucketsync_resources", labels) == 2
    rig.engine.owns = lambda body: body["metadata"]["name"] == "other"  # a shard owning one
    assert sample(rig.engine, "bucketsync_resources", labels) == 1
    rig.engine.owns = lambda body: False  # a standby
    assert sample(rig.engine, "bucketsync_resources", labels) == 0


# --- the finalizer on every owner (adopted ones too), restored when stripped ------------------


async def made_elsewhere(rig: Rig) -> str:
    """A remote sync someone created with Mixpeek's API (no ownership marker); its id."""
    transport = httpx.ASGITransport(app=rig.emulator_app)
    async with MixpeekClient(
        "sk_test_emulator", "default", base_url="http://emulator", transport=transport
    ) as client:
        sync = await client.create_sync(
            "bkt_demo", SyncCreateRequest(connection_id="conn_s3_demo", source_path="demo-bucket/videos")
        )
    assert sync.sync_config_id
    return sync.sync_config_id


async def test_an_object_adopting_by_sync_config_id_gets_the_finalizer_and_its_delete_reaches_mixpeek(
    rig: Rig,
) -> None:
    # Adopted by id on a cluster without the chart's admission policy: no finalizer at CREATE.
    sync_id = await made_elsewhere(rig)
    adopter = bucketsync()
    adopter["spec"] |= {"syncConfigId": sync_id, "deletionPolicy": "Delete"}
    rig.kube.writes.clear()
    await rig.apply(adopter)
    assert await rig.drain() == [KEY]
    assert rig.kube.writes[0] == "add_finalizer"
    assert rig.kube.objects[KEY]["metadata"]["finalizers"] == [FINALIZER]
    assert "Adopted" in rig.kube.events

    body = rig.kube.body()
    body["metadata"]["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    await rig.apply(body)
    assert await rig.drain() == [KEY]
    assert sync_id not in [record.config.sync_config_id for record in rig.emulator.all_syncs()]


async def test_a_stripped_finalizer_wakes_the_object_and_is_restored(rig: Rig) -> None:
    await rig.apply(bucketsync())
    await rig.drain()
    await rig.echo()
    rig.kube.writes.clear()
    body = rig.kube.body()
    body["metadata"]["finalizers"] = []  # kubectl patch --type=json -p '[{"op":"remove",...}]'
    await rig.apply(body)
    assert await rig.drain() == [KEY]
    assert rig.kube.objects[KEY]["metadata"]["finalizers"] == [FINALIZER]
    assert rig.kube.writes == ["add_finalizer"]  # converged otherwise: no status write, no Event
    await rig.echo()  # the watch event of our own finalizer write
    assert await rig.drain() == []


async def test_an_observe_only_object_gets_no_finalizer(rig: Rig) -> None:
    sync_id = await made_elsewhere(rig)
    observer = bucketsync()
    observer["spec"] |= {"syncConfigId": sync_id, "managementPolicy": "ObserveOnly"}
    rig.kube.writes.clear()
    await rig.apply(observer)
    assert await rig.drain() == [KEY]
    assert "finalizers" not in rig.kube.objects[KEY]["metadata"]
    assert rig.kube.writes == ["patch_status"]


# --- races on a fast delete -------------------------------------------------------------------


@dataclass
class SlowSecretApi:
    """The Secret guard's Kubernetes calls; marking a Secret waits for `gate`."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def add_finalizer(self, *args: Any, **kwargs: Any) -> JsonObject:
        await self.gate.wait()
        return {}

    async def remove_finalizer(self, *args: Any) -> JsonObject | None:
        return None

    async def list_objects(self, *args: Any) -> list[JsonObject]:
        return []


async def settle(turns: int = 200) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


async def test_a_delete_while_the_credentials_are_read_leaves_no_listing_or_dependency(rig: Rig) -> None:
    sync_id = await made_elsewhere(rig)
    # An ObserveOnly object (no finalizer) is created and deleted at once.
    body = bucketsync()
    body["spec"] |= {"syncConfigId": sync_id, "managementPolicy": "ObserveOnly"}
    rig.secret_gate.clear()
    await rig.apply(body)
    worker = asyncio.create_task(rig.engine.step())
    await settle()  # the reconcile waits for the Secret read
    assert not worker.done()
    await rig.engine.on_object_event("DELETED", rig.kube.body())
    del rig.kube.objects[KEY]
    rig.secret_gate.set()
    assert await worker == KEY
    assert rig.engine.observer.listings == {}, "the deleted object re-registered its listing"
    assert rig.engine.credentials.secret_changed(("team", "creds"), secret("sk_x")) == set()


async def test_a_delete_before_the_finalizer_is_added_is_not_a_crash_and_creates_nothing(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    guard_kube = SlowSecretApi()
    rig.engine.secret_guard = SecretUseGuard(guard_kube)
    await rig.apply(bucketsync())  # no admission policy: no finalizer yet
    worker = asyncio.create_task(rig.engine.step())
    await settle()  # the Secret guard marks the Secret in use; the API server is slow
    await rig.engine.on_object_event("DELETED", rig.kube.body())
    del rig.kube.objects[KEY]
    guard_kube.gate.set()
    with caplog.at_level(logging.INFO, logger="mixpeek_operator"):
        assert await worker == KEY
    assert "reconcile crashed" not in caplog.text
    assert rig.engine.queue.failures(KEY) == 0
    assert rig.emulator.all_syncs() == []  # no remote sync for an object that is gone
    assert rig.engine.observer.listings == {}
    assert len(rig.engine.queue) == 0


async def test_no_event_is_posted_after_the_work_was_cancelled(rig: Rig) -> None:
    body = bucketsync()
    body["spec"]["paused"] = True  # created, then its identity is written before the pause
    rig.kube.status_gate.clear()
    await rig.apply(body)
    worker = asyncio.create_task(rig.engine.step())
    await settle()  # the remote sync exists; the identity status write hangs
    assert len(rig.emulator.all_syncs()) == 1
    assert rig.kube.events == []
    worker.cancel()  # leadership lost: stop_work cancels every reconcile
    with pytest.raises(asyncio.CancelledError):
        await worker
    await settle()
    assert rig.kube.events == [], "an Event was posted after the work was cancelled"


# --- label shards: handing an object over -------------------------------------------------------


async def test_a_drained_object_is_never_reconciled_here_again_and_leaves_nothing_behind(rig: Rig) -> None:
    await rig.apply(bucketsync())
    await rig.drain()
    assert rig.engine.observer.listings  # its group is listed here
    body = rig.kube.body()
    body["spec"]["batchSize"] = 7
    body["metadata"]["generation"] = 2
    await rig.apply(body)  # queued...
    assert await rig.engine.drain(KEY) is True  # ...and handed over before it ran
    assert rig.engine.draining() == 1
    assert await rig.drain() == []
    await rig.apply(body)
    rig.engine.queue.forget(KEY)
    await rig.engine.stop_work()  # a restart of the work requeues every record...
    assert await rig.drain() == [KEY]  # ...and the drained one is skipped, not reconciled
    assert rig.kube.objects[KEY]["status"]["observedGeneration"] == 1
    assert not rig.engine.observer.listings  # no listing kept polling for it
    assert rig.engine.secrets.sizes()["secret_index.objects"] == 0
    await rig.engine.moved_away(KEY)  # its label moved: the watch sent DELETED
    assert KEY not in rig.engine.objects
    assert rig.kube.writes.count("remove_finalizer") == 0


async def test_a_drain_waits_for_the_reconcile_under_way(rig: Rig) -> None:
    await rig.apply(bucketsync())
    rig.kube.status_gate.clear()  # the status write hangs: the reconcile is in flight
    worker = asyncio.create_task(rig.engine.step())
    for _ in range(100):  # until the worker waits on the status write
        await asyncio.sleep(0)
    assert rig.kube.writes == ["add_finalizer"]
    drained = asyncio.create_task(rig.engine.drain(KEY))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not drained.done()  # no acknowledgement while our write may still land
    rig.kube.status_gate.set()
    await worker
    assert await drained is True
    assert rig.condition("Ready")["status"] == "True"  # it finished, then stopped


async def test_a_drain_called_off_resumes_the_object(rig: Rig) -> None:
    await rig.apply(bucketsync())
    await rig.engine.drain(KEY)
    assert await rig.drain() == []
    await rig.engine.resume(KEY)
    assert rig.engine.draining() == 0
    assert await rig.drain() == [KEY]
    assert rig.condition("Ready")["status"] == "True"
