"""The reconcile without a cluster: the emulator in process (httpx ASGI transport) for
Mixpeek, and an in-memory recorder of the Kubernetes writes the reconcile makes."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
import pytest
from fastapi import FastAPI

from mixpeek_operator.constants import (
    FINALIZER,
    OWNER_REF_KEY,
    OWNER_UID_KEY,
    RECONCILE_PAUSED,
    TRIGGER_REQUESTED_AT,
)
from mixpeek_operator.credentials import Credentials, CredentialStore
from mixpeek_operator.emulator.app import create_app
from mixpeek_operator.emulator.config import EmulatorConfig
from mixpeek_operator.emulator.state import Emulator
from mixpeek_operator.emulator.testing import FROZEN_START
from mixpeek_operator.emulator.traffic import FaultRule
from mixpeek_operator.keys import ListingScope
from mixpeek_operator.mixpeek import MixpeekClient, RateLimiterRegistry
from mixpeek_operator.mixpeek.models import SyncConfiguration
from mixpeek_operator.reconcile import ObjectState, Outcome, ReconcileContext, reconcile
from mixpeek_operator.status import apply_conditions, merge_patch

API_KEY = "sk_test_emulator"


@dataclass
class RecordingWriter:
    """The Kubernetes side, in memory: applies status patches and finalizer edits to `body`."""

    body: dict[str, Any]
    live_owners: set[str] = field(default_factory=set)
    log: list[tuple[str, Any]] = field(default_factory=list)

    async def add_finalizer(self, obj: ObjectState) -> None:
        self.log.append(("add_finalizer", None))
        self.body["metadata"].setdefault("finalizers", []).append(FINALIZER)

    async def remove_finalizer(self, obj: ObjectState) -> None:
        self.log.append(("remove_finalizer", None))
        self.body["metadata"]["finalizers"].remove(FINALIZER)

    async def patch_status(self, obj: ObjectState, patch: dict[str, Any]) -> None:
        self.log.append(("patch_status", patch))
        status = self.body.setdefault("status", {})
        for key, value in patch.items():
            if value is None:
                status.pop(key, None)
            elif isinstance(value, dict) and isinstance(status.get(key), dict):
                status[key] = {**status[key], **value}
                status[key] = {k: v for k, v in status[key].items() if v is not None}
            else:
                status[key] = value

    async def event(
        self, obj: ObjectState, kind: Literal["Normal", "Warning"], reason: str, message: str
    ) -> None:
        self.log.append(("event", reason))

    async def owner_exists(self, namespace: str, name: str, uid: str) -> bool:
        return uid in self.live_owners

    def writes(self) -> list[str]:
        return [kind for kind, _ in self.log]

    def events(self) -> list[str]:
        return [detail for kind, detail in self.log if kind == "event"]


class NoCache:
    """A remote cache that knows nothing: every lookup falls back to a GET, and the bucket is
    not listed yet (its first listing is under way or failing, e.g. under 429s)."""

    def join(self, obj: tuple[str, str], group: ListingScope, client: MixpeekClient) -> None:
        return None

    async def lookup(self, group: ListingScope, sync_id: str) -> Literal["unknown"]:
        return "unknown"

    async def owned(self, group: ListingScope, uid: str, ref: str) -> list[SyncConfiguration] | None:
        return None

    def remember(self, group: ListingScope, sync: SyncConfiguration) -> None:
        return None

    def forget(self, group: ListingScope, sync_id: str) -> None:
        return None


class Listed(NoCache):
    """The observer after it listed the bucket: `syncs` as that listing saw them (maybe stale)."""

    def __init__(self, syncs: list[SyncConfiguration]) -> None:
        self.syncs = syncs

    async def owned(self, scope: ListingScope, uid: str, ref: str) -> list[SyncConfiguration] | None:
        return list(self.syncs)  # the caller still checks the marker of each


class LossyTransport(httpx.AsyncBaseTransport):
    """The emulator in process; `lose_create_responses` creates are served but time out here."""

    def __init__(self, app: FastAPI) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.lose_create_responses = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and request.url.path.endswith("/syncs") and self.lose_create_responses:
            self.lose_create_responses -= 1
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response


def secret_body(api_key: str = API_KEY) -> dict[str, Any]:
    data = {"apiKey": api_key, "namespace": "default", "baseUrl": "http://emulator"}
    return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


@dataclass
class Harness:
    app: FastAPI
    writer: RecordingWriter
    secrets: dict[tuple[str, str], dict[str, Any]]
    ctx: ReconcileContext
    transport: LossyTransport

    @property
    def emulator(self) -> Emulator:
        state: Emulator = self.app.state.emulator
        return state

    def counts(self) -> dict[str, int]:
        """Requests served per endpoint, leaving out the endpoints never called."""
        served: dict[str, int] = self.emulator.stats.counts()["endpoints"]
        return {endpoint: n for endpoint, n in served.items() if n}

    async def run(self) -> Outcome:
        return await reconcile(ObjectState.from_body(self.writer.body), self.ctx)


def bucketsync_body(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mixpeek.com/v1alpha1",
        "kind": "BucketSync",
        "metadata": {"name": "demo", "namespace": "team", "uid": "uid-1", "generation": 1},
        "spec": {
            "bucketId": "bkt_demo",
            "connectionId": "conn_s3_demo",
            "sourcePath": "demo-bucket/videos",
            "credentialsRef": {"name": "creds"},
            **spec,
        },
        "status": {"observedGeneration": -1},
    }


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    app = create_app(EmulatorConfig(time_scale=0, start_time=FROZEN_START))
    secrets = {("team", "creds"): secret_body()}
    clients: list[MixpeekClient] = []
    transport = LossyTransport(app)

    async def read_secret(namespace: str, name: str) -> Mapping[str, Any] | None:
        return secrets.get((namespace, name))

    def client_for(creds: Credentials) -> MixpeekClient:
        client = MixpeekClient(
            creds.api_key,
            creds.namespace,
            base_url=creds.base_url,
            transport=transport,
            rate_limiters=RateLimiterRegistry(),
        )
        clients.append(client)
        return client

    writer = RecordingWriter(bucketsync_body())
    ctx = ReconcileContext(
        writer=writer,
        credentials=CredentialStore(read_secret, default_secret=None),
        client_for=client_for,
        remote=NoCache(),
        now=lambda: datetime(2026, 1, 1, tzinfo=UTC),
    )
    yield Harness(app=app, writer=writer, secrets=secrets, ctx=ctx, transport=transport)
    for client in clients:
        await client.aclose()


def condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in body["status"]["conditions"] if c["type"] == kind)


async def test_first_create_writes_the_finalizer_before_the_post_and_status_once(harness: Harness) -> None:
    harness.ctx.remote = Listed([])  # the bucket, listed since the operator started: empty
    outcome = await harness.run()
    assert outcome.result == "success"
    assert outcome.ready
    # The finalizer precedes the POST (no remote sync without it); the Event precedes the one
    # status write that reports it.
    assert harness.writer.writes() == ["add_finalizer", "event", "patch_status"]
    assert harness.counts() == {"create": 1}
    status = harness.writer.body["status"]
    assert status["observedGeneration"] == 1
    assert status["syncConfigId"].startswith("sync_")
    assert condition(harness.writer.body, "Ready")["status"] == "True"
    assert condition(harness.writer.body, "Ready")["reason"] == "Synced"
    assert harness.writer.events() == ["Created"]
    remote = harness.emulator.find(status["syncConfigId"]).config
    assert remote.metadata == {OWNER_UID_KEY: "uid-1", OWNER_REF_KEY: "team/demo"}


async def test_a_finalizer_added_at_admission_leaves_one_status_write(harness: Harness) -> None:
    # The chart's MutatingAdmissionPolicy put the finalizer there at CREATE.
    harness.writer.body["metadata"]["finalizers"] = [FINALIZER]
    harness.ctx.remote = Listed([])
    outcome = await harness.run()
    assert outcome.ready
    assert harness.writer.writes() == ["event", "patch_status"]
    assert harness.counts() == {"create": 1}  # the finalizer is no reason for a per-object list


async def test_a_bucket_not_listed_yet_is_listed_before_a_create(harness: Harness) -> None:
    await harness.run()  # NoCache: the observer has not listed the bucket since the start
    assert harness.counts() == {"list": 1, "create": 1}


async def test_a_create_whose_answer_was_lost_is_looked_up_before_another_post(harness: Harness) -> None:
    harness.writer.body["metadata"]["finalizers"] = [FINALIZER]
    harness.ctx.remote = Listed([])  # stays stale: it predates the create
    harness.transport.lose_create_responses = 1
    first = await harness.run()
    assert first.result == "error"
    assert len(harness.emulator.all_syncs()) == 1  # served, but the answer never came back
    second = await harness.run()
    assert second.ready
    assert harness.counts() == {"create": 1, "list": 1}
    assert "Adopted" in harness.writer.events()
    assert harness.ctx.create_attempts == set()


async def test_a_refused_create_is_tried_again_without_a_lookup(harness: Harness) -> None:
    harness.writer.body["metadata"]["finalizers"] = [FINALIZER]
    harness.ctx.remote = Listed([])
    harness.emulator.faults.rules.append(
        FaultRule(endpoint="create", error_count=1, error_status=422, error_message="bad source path")
    )
    assert (await harness.run()).result == "stalled"
    assert harness.ctx.create_attempts == set()  # a 4xx answer: nothing was created
    harness.writer.body["metadata"]["generation"] = 2  # the user fixed the spec
    assert (await harness.run()).ready
    assert harness.counts() == {"create": 2}  # no list by connection before the second POST
    assert len(harness.emulator.all_syncs()) == 1


async def test_a_converged_object_costs_no_write(harness: Harness) -> None:
    await harness.run()
    harness.writer.log.clear()
    outcome = await harness.run()
    assert outcome.result == "success"
    assert harness.writer.log == []  # no status patch, no Event
    assert "update" not in harness.counts()


async def test_a_spec_change_sends_one_patch_of_the_changed_field(harness: Harness) -> None:
    await harness.run()
    harness.writer.body["spec"]["batchSize"] = 7
    harness.writer.body["metadata"]["generation"] = 2
    await harness.run()
    assert harness.counts()["update"] == 1
    remote = harness.emulator.find(harness.writer.body["status"]["syncConfigId"]).config
    assert remote.batch_size == 7
    assert harness.writer.events()[-1] == "Updated"
    assert harness.writer.body["status"]["observedGeneration"] == 2


async def test_out_of_band_drift_is_corrected_and_reported_as_such(harness: Harness) -> None:
    await harness.run()
    sync_id = harness.writer.body["status"]["syncConfigId"]
    harness.emulator.admin_patch(sync_id, {"batch_size": 99, "metadata": {}})
    await harness.run()
    remote = harness.emulator.find(sync_id).config
    assert remote.batch_size == 50
    assert remote.metadata[OWNER_UID_KEY] == "uid-1"  # the marker is re-sent with every PATCH
    assert harness.writer.events()[-1] == "DriftCorrected"


async def test_mixpeek_validation_error_stalls_without_requeue(harness: Harness) -> None:
    harness.emulator.faults.rules.append(
        FaultRule(endpoint="create", error_count=5, error_status=422, error_message="bad source path")
    )
    outcome = await harness.run()
    assert outcome.result == "stalled"
    assert outcome.requeue_after is None
    stalled = condition(harness.writer.body, "Stalled")
    assert stalled["status"] == "True"
    assert stalled["reason"] == "InvalidSpec"
    assert "bad source path" in stalled["message"]
    assert harness.writer.body["status"]["observedGeneration"] == 1
    assert harness.writer.events() == ["Stalled"]


async def test_rejected_credentials_stall_with_a_long_requeue(harness: Harness) -> None:
    harness.secrets[("team", "creds")] = secret_body("sk_test_not_a_key")
    outcome = await harness.run()
    assert outcome.result == "stalled"
    assert outcome.requeue_after == 300.0
    assert condition(harness.writer.body, "Stalled")["reason"] == "AuthFailed"
    assert "sk_test_not_a_key" not in str(harness.writer.body)


async def test_missing_secret_stalls_before_any_remote_call(harness: Harness) -> None:
    harness.secrets.clear()
    outcome = await harness.run()
    assert outcome.result == "stalled"
    assert condition(harness.writer.body, "Stalled")["reason"] == "SecretNotFound"
    assert harness.counts() == {}


async def test_a_transient_error_keeps_a_converged_object_ready(harness: Harness) -> None:
    await harness.run()
    harness.writer.body["spec"]["batchSize"] = 8
    harness.writer.body["metadata"]["generation"] = 2
    harness.emulator.faults.rules.append(FaultRule(endpoint="get", error_count=10, error_status=503))
    outcome = await harness.run()
    assert outcome.result == "error"
    assert condition(harness.writer.body, "Reconciling")["status"] == "True"
    assert condition(harness.writer.body, "Reconciling")["reason"] == "ProgressingWithRetry"
    # A new generation is not converged, so Ready drops; observedGeneration stays behind.
    assert condition(harness.writer.body, "Ready")["status"] == "False"
    assert harness.writer.body["status"]["observedGeneration"] == 1


async def test_reconcile_paused_makes_no_remote_call(harness: Harness) -> None:
    harness.writer.body["metadata"]["annotations"] = {RECONCILE_PAUSED: "true"}
    outcome = await harness.run()
    assert outcome.result == "paused"
    assert harness.counts() == {}
    assert condition(harness.writer.body, "ReconcilePaused")["status"] == "True"


async def test_trigger_runs_once_per_annotation_value(harness: Harness) -> None:
    await harness.run()
    harness.writer.body["metadata"]["annotations"] = {TRIGGER_REQUESTED_AT: "t1"}
    await harness.run()
    await harness.run()
    assert harness.counts()["trigger"] == 1
    assert harness.writer.body["status"]["lastHandledTriggerAt"] == "t1"


async def test_an_interrupted_create_is_adopted_not_duplicated(harness: Harness) -> None:
    await harness.run()
    first = harness.writer.body["status"]["syncConfigId"]
    # The status write was lost (crash); the finalizer, written before the POST, remains.
    harness.writer.body["status"] = {"observedGeneration": -1}
    await harness.run()
    assert harness.writer.body["status"]["syncConfigId"] == first
    assert harness.counts()["create"] == 1
    assert "Adopted" in harness.writer.events()


async def test_without_a_bucket_listing_a_reapplied_object_lists_its_connection_itself(
    harness: Harness,
) -> None:
    await harness.run()
    first = harness.writer.body["status"]["syncConfigId"]
    # The manifest is re-applied on a rebuilt cluster: no status, no finalizer; and the
    # bucket's shared listing is failing, so the reconcile must not wait for it.
    harness.writer.body["status"] = {"observedGeneration": -1}
    harness.writer.body["metadata"].pop("finalizers", None)
    harness.emulator.stats.clear()

    await harness.run()

    assert harness.writer.body["status"]["syncConfigId"] == first
    assert harness.counts() == {"list": 1}  # one list of the connection; no second create
    assert "Adopted" in harness.writer.events()
    # Adopted by its ownership marker: the finalizer is back, written before the list.
    assert harness.writer.writes()[0] == "add_finalizer"
    assert harness.writer.body["metadata"]["finalizers"] == [FINALIZER]


async def test_a_sync_owned_by_another_live_object_is_a_conflict(harness: Harness) -> None:
    await harness.run()
    sync_id = harness.writer.body["status"]["syncConfigId"]
    harness.emulator.admin_patch(sync_id, {"metadata": {OWNER_UID_KEY: "uid-2", OWNER_REF_KEY: "team/other"}})
    harness.writer.live_owners.add("uid-2")
    outcome = await harness.run()
    assert outcome.result == "stalled"
    assert condition(harness.writer.body, "Stalled")["reason"] == "OwnershipConflict"


@pytest.mark.parametrize("policy", ["Delete", "Orphan"])
async def test_deletion_policies(harness: Harness, policy: str) -> None:
    harness.writer.body["spec"]["deletionPolicy"] = policy
    await harness.run()
    sync_id = harness.writer.body["status"]["syncConfigId"]
    harness.writer.body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    outcome = await harness.run()
    assert outcome.result == "deleted"
    assert harness.writer.body["metadata"]["finalizers"] == []
    remaining = {record.config.sync_config_id: record.config for record in harness.emulator.all_syncs()}
    if policy == "Delete":
        assert sync_id not in remaining
    else:
        assert OWNER_UID_KEY not in remaining[sync_id].metadata


def test_condition_transition_time_moves_only_on_a_flip() -> None:
    from mixpeek_operator.constants import ConditionType
    from mixpeek_operator.status import ConditionUpdate

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    first = apply_conditions(
        None, [ConditionUpdate(ConditionType.READY, "True", "Synced", "a")], generation=1, now=t0
    )
    same = apply_conditions(
        first,
        [ConditionUpdate(ConditionType.READY, "True", "Synced", "b")],
        generation=2,
        now=t0 + timedelta(hours=1),
    )
    flipped = apply_conditions(
        same,
        [ConditionUpdate(ConditionType.READY, "False", "X", "c")],
        generation=2,
        now=t0 + timedelta(hours=2),
    )
    assert first[0].last_transition_time == same[0].last_transition_time == t0
    assert same[0].message == "b"
    assert flipped[0].last_transition_time == t0 + timedelta(hours=2)


def test_merge_patch_is_minimal_and_removes_keys() -> None:
    old = {"a": 1, "b": {"c": 2, "d": 3}, "gone": True, "list": [1, 2]}
    new = {"a": 1, "b": {"c": 2, "d": 4}, "list": [1, 2, 3]}
    assert merge_patch(old, new) == {"b": {"d": 4}, "gone": None, "list": [1, 2, 3]}
    assert merge_patch(new, new) == {}


async def test_status_fields_unknown_to_this_version_are_left_alone(harness: Harness) -> None:
    await harness.run()
    harness.writer.body["status"]["fieldOfANewerVersion"] = {"kept": True}
    harness.writer.body["spec"]["batchSize"] = 9
    harness.writer.body["metadata"]["generation"] = 2
    await harness.run()
    assert harness.writer.body["status"]["fieldOfANewerVersion"] == {"kept": True}
    assert harness.writer.body["status"]["observedGeneration"] == 2


async def test_a_status_that_does_not_parse_is_rewritten_whole(harness: Harness) -> None:
    harness.writer.body["status"] = {"observedGeneration": "not a number", "conditions": "garbage"}
    outcome = await harness.run()
    assert outcome.result == "success"
    assert harness.writer.body["status"]["observedGeneration"] == 1
    assert condition(harness.writer.body, "Ready")["status"] == "True"
