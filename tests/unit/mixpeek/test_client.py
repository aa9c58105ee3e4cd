"""`MixpeekClient` against the real emulator app, in-process over `httpx.ASGITransport`, on fake time.

Faults are injected and requests counted through the emulator state its admin API changes;
the timeout tests serve the emulator over real HTTP and use the admin API itself.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from mixpeek_operator import __version__
from mixpeek_operator.emulator.admin import EmulatorAdmin
from mixpeek_operator.emulator.app import create_app
from mixpeek_operator.emulator.config import EmulatorConfig
from mixpeek_operator.emulator.seed import (
    DEFAULT_API_KEY,
    DEFAULT_SEED,
    ApiKeySeed,
    BucketSeed,
    NamespaceSeed,
    Seed,
)
from mixpeek_operator.emulator.server import EmulatorServer
from mixpeek_operator.emulator.state import Emulator
from mixpeek_operator.emulator.traffic import FaultRule
from mixpeek_operator.mixpeek import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    MixpeekClient,
    MixpeekError,
    NotFoundError,
    PermissionDeniedError,
    RateLimiterRegistry,
    RateLimitError,
    RequestEvent,
    RetryPolicy,
    UnprocessableEntityError,
    user_agent,
)
from mixpeek_operator.mixpeek.models import (
    DeleteResponse,
    ListSyncConfigurationsRequest,
    SyncConfiguration,
    SyncCreateRequest,
    SyncListResponse,
    SyncUpdateRequest,
    TriggerResponse,
)
from tests.unit.mixpeek.test_ratelimit import FakeTime

BASE_URL = "http://emulator.test"
NAMESPACE = "default"
BUCKET = "bkt_demo"
CONNECTION = "conn_s3_demo"
OTHER_CONNECTION = "conn_gdrive_demo"
# A second key that may use only the second namespace: for 403 and for a second rate budget.
OTHER_API_KEY = "sk_test_other_namespace"
SEED = Seed(
    api_keys=[
        *DEFAULT_SEED.api_keys,
        ApiKeySeed(key=OTHER_API_KEY, user_id="usr_other", internal_id="org_emulator", namespaces=["other"]),
    ],
    namespaces=[
        *DEFAULT_SEED.namespaces,
        NamespaceSeed(id="ns_other", name="other", buckets=[BucketSeed(id="bkt_o")]),
    ],
)
# Half the backoff ceiling: delays of 0.25, 0.5, 1.0 ... for attempts 0, 1, 2.
HALF = 0.5
# High enough that the limiter never waits unless a test asks for it.
UNLIMITED_RATE = 1e6
UNLIMITED_BURST = 1_000_000


@dataclass
class Harness:
    """The emulator app, driven directly through its state (the objects its admin API changes)."""

    app: FastAPI
    fake_time: FakeTime
    registry: RateLimiterRegistry
    events: list[RequestEvent] = field(default_factory=list)
    clients: list[MixpeekClient] = field(default_factory=list)

    @property
    def emulator(self) -> Emulator:
        emulator: Emulator = self.app.state.emulator
        return emulator

    def client(self, api_key: str = DEFAULT_API_KEY, **overrides: Any) -> MixpeekClient:
        options: dict[str, Any] = {
            "base_url": BASE_URL,
            "transport": httpx.ASGITransport(app=self.app),
            "rate_limiters": self.registry,
            "on_request": self.events.append,
            "sleep": self.fake_time.sleep,
            "clock": self.fake_time.clock,
            "now": self.fake_time.now,
            "random": lambda: HALF,
            "rate_per_second": UNLIMITED_RATE,
            "burst": UNLIMITED_BURST,
            **overrides,
        }
        client = MixpeekClient(api_key, NAMESPACE, **options)
        self.clients.append(client)
        return client

    def set_faults(self, *rules: dict[str, Any]) -> None:
        self.emulator.faults.rules = [FaultRule.model_validate(rule) for rule in rules]

    def counts(self, endpoint: str) -> int:
        return int(self.emulator.stats.counts()["endpoints"][endpoint])


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(seed=SEED, time_scale=0)


@pytest.fixture
async def harness(emulator_config: EmulatorConfig) -> AsyncIterator[Harness]:
    fake_time = FakeTime()
    registry = RateLimiterRegistry(clock=fake_time.clock, sleep=fake_time.sleep)
    harness = Harness(create_app(emulator_config), fake_time, registry)
    yield harness
    for client in harness.clients:
        await client.aclose()


@pytest.fixture
def client(harness: Harness) -> MixpeekClient:
    return harness.client()


def create_request(**fields: Any) -> SyncCreateRequest:
    return SyncCreateRequest.model_validate(
        {"connection_id": CONNECTION, "source_path": "demo-bucket/videos", **fields}
    )


# --- typed success responses -------------------------------------------------------------


async def test_every_endpoint_returns_its_typed_model(client: MixpeekClient) -> None:
    created = await client.create_sync(BUCKET, create_request(batch_size=20, metadata={"team": "media"}))
    assert isinstance(created, SyncConfiguration)
    assert (created.bucket_id, created.connection_id, created.batch_size) == (BUCKET, CONNECTION, 20)
    sync_id = created.sync_config_id
    assert sync_id is not None

    assert await client.get_sync(BUCKET, sync_id) == created

    listed = await client.list_syncs(BUCKET, include_total=True)
    assert isinstance(listed, SyncListResponse)
    assert [sync.sync_config_id for sync in listed.results] == [sync_id]
    assert listed.pagination.total == 1

    updated = await client.update_sync(BUCKET, sync_id, SyncUpdateRequest(polling_interval_seconds=60))
    assert (updated.polling_interval_seconds, updated.batch_size) == (60, 20)

    paused = await client.pause_sync(BUCKET, sync_id)
    assert paused.paused
    resumed = await client.resume_sync(BUCKET, sync_id)
    assert not resumed.paused

    triggered = await client.trigger_sync(BUCKET, sync_id)
    assert isinstance(triggered, TriggerResponse)
    assert triggered.sync_job_id

    deleted = await client.delete_sync(BUCKET, sync_id)
    assert isinstance(deleted, DeleteResponse)
    with pytest.raises(NotFoundError):
        await client.get_sync(BUCKET, sync_id)


def test_the_user_agent_names_the_replica_when_there_is_one() -> None:
    base = f"mixpeek-operator/{__version__}"
    assert (user_agent(), user_agent(""), user_agent("shard-1")) == (base, base, f"{base} (shard-1)")
    # Still one valid header comment, whatever the identity is spelled with.
    assert user_agent("pod (a)\nb\u00e9") == f"{base} (pod__a__b_)"


async def test_the_user_agent_reaches_the_remote(harness: Harness) -> None:
    await harness.client(replica="shard-3").list_syncs(BUCKET)
    (entry,) = harness.emulator.stats.log()
    assert entry["user_agent"] == f"mixpeek-operator/{__version__} (shard-3)"


async def test_update_sends_only_the_fields_that_were_set(client: MixpeekClient) -> None:
    created = await client.create_sync(BUCKET, create_request(batch_size=20, metadata={"team": "media"}))
    assert created.sync_config_id is not None

    updated = await client.update_sync(BUCKET, created.sync_config_id, SyncUpdateRequest(metadata={}))

    assert updated.metadata == {}  # an explicitly empty mapping clears
    assert updated.batch_size == 20  # an unset field is not sent, so it is kept


async def test_list_filters_are_sent_as_the_body(client: MixpeekClient) -> None:
    await client.create_sync(BUCKET, create_request())
    other = await client.create_sync(BUCKET, create_request(connection_id=OTHER_CONNECTION))

    listed = await client.list_syncs(BUCKET, ListSyncConfigurationsRequest(connection_id=OTHER_CONNECTION))

    assert [sync.sync_config_id for sync in listed.results] == [other.sync_config_id]


# --- paging ------------------------------------------------------------------------------


async def test_iter_and_list_all_follow_every_page(harness: Harness, client: MixpeekClient) -> None:
    created = [await client.create_sync(BUCKET, create_request()) for _ in range(25)]
    harness.emulator.stats.clear()

    listing = await client.list_all_syncs(BUCKET, page_size=10)
    iterated = [sync async for sync in client.iter_syncs(BUCKET, page_size=10)]

    newest_first = [sync.sync_config_id for sync in reversed(created)]
    assert [sync.sync_config_id for sync in listing.syncs] == newest_first
    assert [sync.sync_config_id for sync in iterated] == newest_first
    assert listing.pages_fetched == 3
    assert harness.counts("list") == 6


async def test_list_all_of_an_empty_bucket_takes_one_page(client: MixpeekClient) -> None:
    assert await client.list_all_syncs(BUCKET) == ([], 1)


# --- errors ------------------------------------------------------------------------------


async def test_invalid_cursor_raises_bad_request(client: MixpeekClient) -> None:
    with pytest.raises(BadRequestError) as caught:
        await client.list_syncs(BUCKET, cursor="not-a-cursor")

    assert caught.value.error_type == "BadRequestError"
    assert "Invalid cursor" in str(caught.value)


async def test_unknown_key_raises_authentication_error(harness: Harness) -> None:
    client = harness.client(api_key="sk_test_unknown")

    with pytest.raises(AuthenticationError) as caught:
        await client.get_sync(BUCKET, "sync_missing")

    assert str(caught.value) == "401 UnauthorizedError: Invalid API key"


async def test_namespace_the_key_may_not_use_raises_permission_denied(harness: Harness) -> None:
    client = harness.client(api_key=OTHER_API_KEY)

    with pytest.raises(PermissionDeniedError) as caught:
        await client.list_syncs(BUCKET)

    assert caught.value.status_code == 403
    assert caught.value.details == {"resource": "namespace", "id": NAMESPACE}


@pytest.mark.parametrize("bucket", [BUCKET, "bkt_missing"])
async def test_missing_sync_or_bucket_raises_not_found(client: MixpeekClient, bucket: str) -> None:
    with pytest.raises(NotFoundError):
        await client.get_sync(bucket, "sync_missing")


async def test_conflict_is_raised_after_the_retry_budget(harness: Harness, client: MixpeekClient) -> None:
    harness.emulator.behaviour.trigger_when_paused = "conflict"
    created = await client.create_sync(BUCKET, create_request())
    assert created.sync_config_id is not None
    await client.pause_sync(BUCKET, created.sync_config_id)

    with pytest.raises(ConflictError) as caught:
        await client.trigger_sync(BUCKET, created.sync_config_id)

    assert caught.value.error_type == "AlreadyExistsError"
    assert harness.counts("trigger") == 3  # 409 may clear (a lock being released), so it is retried


async def test_validation_error_envelope(harness: Harness, client: MixpeekClient) -> None:
    with pytest.raises(UnprocessableEntityError) as caught:
        await client.list_syncs(BUCKET, limit=0)

    assert [str(error) for error in caught.value.field_errors] == [
        "limit: Input should be greater than or equal to 1"
    ]
    assert str(caught.value) == "422 ValidationError: limit: Input should be greater than or equal to 1"
    assert harness.counts("list") == 1  # a refused request is not retried


@pytest.mark.parametrize(
    "emulator_config", [EmulatorConfig(seed=SEED, time_scale=0, validation_errors="fastapi")]
)
async def test_validation_error_fastapi_shape(client: MixpeekClient) -> None:
    with pytest.raises(UnprocessableEntityError) as caught:
        await client.list_syncs(BUCKET, limit=0)

    assert caught.value.error_type is None
    assert [error.field for error in caught.value.field_errors] == ["limit"]
    assert str(caught.value) == "422 Unprocessable Entity: limit: Input should be greater than or equal to 1"


async def test_rate_limit_error_carries_retry_after(harness: Harness) -> None:
    harness.set_faults({"rate_limit_count": 1, "retry_after_seconds": 7})
    client = harness.client(retry_policy=RetryPolicy(max_retries=0))

    with pytest.raises(RateLimitError) as caught:
        await client.get_sync(BUCKET, "sync_any")

    assert caught.value.retry_after == 7.0
    assert caught.value.error_type == "TooManyRequestsError"


async def test_fractional_retry_after_from_the_emulator_is_slept_to_the_millisecond(harness: Harness) -> None:
    harness.set_faults({"endpoint": "get", "rate_limit_count": 1, "retry_after_seconds": 1.25})
    client = harness.client()
    with pytest.raises(NotFoundError):  # the retried GET reaches the API: an unknown sync
        await client.get_sync(BUCKET, "sync_any")
    assert harness.fake_time.sleeps == [1.25]


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_raise_internal_server_error(harness: Harness, status: int) -> None:
    harness.set_faults({"error_count": 1, "error_status": status})
    client = harness.client(retry_policy=RetryPolicy(max_retries=0))

    with pytest.raises(InternalServerError) as caught:
        await client.list_syncs(BUCKET)

    assert caught.value.status_code == status


async def test_path_segments_are_escaped(harness: Harness, client: MixpeekClient) -> None:
    with pytest.raises(NotFoundError):
        await client.get_sync(BUCKET, "../../other/syncs/x?y=1#z")

    (entry,) = harness.emulator.stats.log()
    # The whole id arrived inside the path: no dot segment resolved, nothing spilled into the query.
    assert entry["path"] == f"/v1/buckets/{BUCKET}/syncs/../../other/syncs/x?y=1#z"
    assert entry["query"] == ""


@pytest.mark.parametrize("bad_id", ["", ".", ".."])
async def test_path_segments_that_would_collapse_are_refused(
    harness: Harness, client: MixpeekClient, bad_id: str
) -> None:
    with pytest.raises(ValueError, match="path segment"):
        await client.get_sync(BUCKET, bad_id)

    assert harness.emulator.stats.counts()["total"] == 0


# --- retries -----------------------------------------------------------------------------


IDEMPOTENT_CALLS: dict[str, Callable[[MixpeekClient, str], Awaitable[object]]] = {
    "get": lambda client, sync_id: client.get_sync(BUCKET, sync_id),
    "update": lambda client, sync_id: client.update_sync(BUCKET, sync_id, SyncUpdateRequest(batch_size=5)),
    "list": lambda client, _: client.list_syncs(BUCKET),
    "delete": lambda client, sync_id: client.delete_sync(BUCKET, sync_id),
}


@pytest.mark.parametrize("endpoint", list(IDEMPOTENT_CALLS))
async def test_server_errors_are_retried_for_idempotent_calls(
    harness: Harness, client: MixpeekClient, endpoint: str
) -> None:
    created = await client.create_sync(BUCKET, create_request())
    assert created.sync_config_id is not None
    harness.set_faults({"endpoint": endpoint, "error_count": 2, "error_status": 503})

    await IDEMPOTENT_CALLS[endpoint](client, created.sync_config_id)

    assert harness.counts(endpoint) == 3
    assert harness.fake_time.sleeps == [0.25, 0.5]  # full jitter at the injected random 0.5


async def test_create_is_not_retried_after_a_server_error(harness: Harness, client: MixpeekClient) -> None:
    harness.set_faults({"endpoint": "create", "error_count": 1, "error_status": 503})

    with pytest.raises(InternalServerError):
        await client.create_sync(BUCKET, create_request())

    assert harness.counts("create") == 1
    assert harness.fake_time.sleeps == []


async def test_create_is_retried_after_rate_limit(harness: Harness, client: MixpeekClient) -> None:
    harness.set_faults({"endpoint": "create", "rate_limit_count": 1, "retry_after_seconds": 2})

    created = await client.create_sync(BUCKET, create_request())

    assert harness.counts("create") == 2
    assert harness.fake_time.sleeps == [2.0]  # Retry-After, exactly
    assert [record.sync_id for record in harness.emulator.all_syncs()] == [created.sync_config_id]


class RefuseFirstConnections(httpx.AsyncBaseTransport):
    """The first `refusals` requests dial a closed local port (a real connection refusal); the rest
    reach the emulator."""

    def __init__(self, app: FastAPI, refusals: int) -> None:
        self.refusals = refusals
        self._emulator = httpx.ASGITransport(app=app)
        self._closed_port = httpx.AsyncHTTPTransport(retries=0)
        with socket.socket() as probe:  # bound, then released: nothing listens there
            probe.bind(("127.0.0.1", 0))
            self._closed_url = httpx.URL(f"http://127.0.0.1:{probe.getsockname()[1]}")

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.refusals:
            self.refusals -= 1
            request.url = request.url.copy_with(host=self._closed_url.host, port=self._closed_url.port)
            return await self._closed_port.handle_async_request(request)
        return await self._emulator.handle_async_request(request)

    async def aclose(self) -> None:
        await self._closed_port.aclose()
        await self._emulator.aclose()


async def test_create_is_retried_after_a_connect_error(harness: Harness) -> None:
    client = harness.client(transport=RefuseFirstConnections(harness.app, refusals=1))

    await client.create_sync(BUCKET, create_request())

    assert harness.counts("create") == 1
    assert harness.fake_time.sleeps == [0.25]
    assert [(event.status_code, event.error_class) for event in harness.events] == [
        (None, "APIConnectionError"),
        (200, None),
    ]


async def test_connect_errors_give_up_after_the_retry_budget(harness: Harness) -> None:
    client = harness.client(transport=RefuseFirstConnections(harness.app, refusals=10))

    with pytest.raises(APIConnectionError) as caught:
        await client.get_sync(BUCKET, "sync_any")

    assert not isinstance(caught.value, APITimeoutError)
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert len(harness.events) == 3


async def test_retries_are_bounded_and_the_last_error_is_raised(
    harness: Harness, client: MixpeekClient
) -> None:
    harness.set_faults(
        {"endpoint": "get", "error_count": 2, "error_status": 500},
        {"endpoint": "get", "error_count": 5, "error_status": 502},
    )

    with pytest.raises(InternalServerError) as caught:
        await client.get_sync(BUCKET, "sync_any")

    assert caught.value.status_code == 502  # the third attempt's error, not the first
    assert harness.counts("get") == 3
    assert len(harness.fake_time.sleeps) == 2


async def test_retry_after_above_the_cap_is_handed_to_the_caller(
    harness: Harness, client: MixpeekClient
) -> None:
    harness.set_faults({"rate_limit_count": 1, "retry_after_seconds": 120})

    with pytest.raises(RateLimitError) as caught:
        await client.list_syncs(BUCKET)

    assert caught.value.retry_after == 120.0
    assert harness.fake_time.sleeps == []
    assert harness.counts("list") == 1


async def test_retry_after_as_http_date_is_honoured(harness: Harness) -> None:
    harness.set_faults({"rate_limit_count": 1, "retry_after_seconds": 30, "retry_after_http_date": True})
    # The emulator dates the header from the real clock; the client reads it against the real clock too.
    client = harness.client(now=time.time)

    await client.list_syncs(BUCKET)

    (slept,) = harness.fake_time.sleeps
    assert 28.0 <= slept <= 30.0  # an HTTP date has whole seconds


# --- timeouts (a served emulator: ASGITransport has no timeouts) --------------------------

SHORT_READ_TIMEOUT = httpx.Timeout(connect=1.0, read=0.02, write=1.0, pool=1.0)


@pytest.fixture
def served_emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(seed=SEED, time_scale=0)) as server:
        yield server


def served_client(server: EmulatorServer, fake_time: FakeTime) -> MixpeekClient:
    """A client over real HTTP with a short read timeout; only its retry sleeps are faked."""
    return MixpeekClient(
        DEFAULT_API_KEY,
        NAMESPACE,
        base_url=server.base_url,
        timeout=SHORT_READ_TIMEOUT,
        rate_limiters=RateLimiterRegistry(),
        sleep=fake_time.sleep,
        rate_per_second=UNLIMITED_RATE,
        burst=UNLIMITED_BURST,
    )


async def test_hung_create_raises_timeout_error_without_retry(
    served_emulator: EmulatorServer,
) -> None:
    fake_time = FakeTime()
    with EmulatorAdmin(served_emulator.base_url) as admin:
        admin.set_faults(endpoint="create", hang_count=1, hang_seconds=0.15)
        async with served_client(served_emulator, fake_time) as client:
            with pytest.raises(APITimeoutError) as caught:
                await client.create_sync(BUCKET, create_request())

        assert admin.request_counts()["endpoints"]["create"] <= 1  # the hung one may not be logged yet
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert fake_time.sleeps == []  # a read timeout on create may have created it: not retried


async def test_hung_idempotent_request_is_retried(
    served_emulator: EmulatorServer,
) -> None:
    fake_time = FakeTime()
    with EmulatorAdmin(served_emulator.base_url) as admin:
        admin.set_faults(endpoint="list", hang_count=1, hang_seconds=0.15)
        async with served_client(served_emulator, fake_time) as client:
            assert (await client.list_syncs(BUCKET)).results == []

    assert len(fake_time.sleeps) == 1


# --- rate limiting -----------------------------------------------------------------------


async def test_clients_with_one_key_share_one_budget(harness: Harness) -> None:
    first = harness.client(rate_per_second=1.0, burst=1)
    second = harness.client(rate_per_second=1.0, burst=1)
    other_key = harness.client(api_key=OTHER_API_KEY, rate_per_second=1.0, burst=1)

    await first.list_syncs(BUCKET)
    await second.list_syncs(BUCKET)  # the shared token is gone: waits a full second
    with pytest.raises(PermissionDeniedError):
        await other_key.list_syncs(BUCKET)  # its own budget: no wait

    assert first.rate_limiter is second.rate_limiter
    assert other_key.rate_limiter is not first.rate_limiter
    assert harness.fake_time.sleeps == [1.0]
    assert first.rate_limiter.wait_seconds_total == 1.0


async def test_every_retry_waits_for_a_token(harness: Harness) -> None:
    harness.set_faults({"endpoint": "list", "error_count": 1})
    client = harness.client(rate_per_second=2.0, burst=1)

    await client.list_syncs(BUCKET)

    # Backoff 0.25 s, then the limiter wants the remaining 0.25 s of its 0.5 s interval.
    assert harness.fake_time.sleeps == [0.25, 0.25]


# --- metrics hook ------------------------------------------------------------------------


async def test_request_hook_sees_every_attempt(harness: Harness, client: MixpeekClient) -> None:
    harness.set_faults({"endpoint": "list", "error_count": 1, "error_status": 503})

    await client.list_syncs(BUCKET)

    assert harness.events == [
        RequestEvent("list", "POST", 503, 0.0, 0, "InternalServerError"),
        RequestEvent("list", "POST", 200, 0.0, 1, None),
    ]


async def test_request_hook_failure_does_not_fail_the_call(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_hook(event: RequestEvent) -> None:
        raise RuntimeError("metrics backend down")

    client = harness.client(on_request=broken_hook)

    assert (await client.list_syncs(BUCKET)).results == []
    assert "request hook failed" in caplog.text


# --- the API key never leaks -------------------------------------------------------------


def test_repr_shows_a_fingerprint_not_the_key(client: MixpeekClient) -> None:
    fingerprint = client.key_fingerprint

    assert (
        repr(client)
        == f"MixpeekClient(base_url='{BASE_URL}', namespace='{NAMESPACE}', key_fingerprint='{fingerprint}')"
    )
    assert len(fingerprint) == 12
    assert DEFAULT_API_KEY not in repr(client)


async def test_api_key_absent_from_errors_and_logs(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = harness.client()
    wrong_key_client = harness.client(api_key="sk_test_wrong_key_value")
    refused_client = harness.client(transport=RefuseFirstConnections(harness.app, refusals=10))
    harness.set_faults(
        {"endpoint": "get", "error_count": 3, "error_status": 500},
        {"endpoint": "pause", "rate_limit_count": 1, "retry_after_seconds": 600},
    )
    failing_calls = [
        client.get_sync(BUCKET, "sync_any"),
        client.pause_sync(BUCKET, "sync_any"),
        client.list_syncs(BUCKET, limit=0),
        client.delete_sync(BUCKET, "sync_missing"),
        wrong_key_client.list_syncs(BUCKET),
        refused_client.list_syncs(BUCKET),
    ]
    errors: list[MixpeekError] = []
    for call in failing_calls:
        with pytest.raises(MixpeekError) as caught:
            await call
        errors.append(caught.value)

    assert len({type(error) for error in errors}) == 6
    texts = [caplog.text, repr(client), repr(wrong_key_client)]
    texts += [text for error in errors for text in (str(error), repr(error), repr(vars(error)))]
    for secret in (DEFAULT_API_KEY, "sk_test_wrong_key_value"):
        assert not [text for text in texts if secret in text]


def test_api_key_that_would_break_the_header_is_refused_without_echo() -> None:
    with pytest.raises(ValueError, match="api_key") as caught:
        MixpeekClient("sk_test_secret\r\nX-Evil: 1", NAMESPACE)

    assert "sk_test_secret" not in str(caught.value)


async def test_context_manager_closes_the_connection_pool(harness: Harness) -> None:
    async with harness.client() as client:
        await client.list_syncs(BUCKET)

    with pytest.raises(RuntimeError, match="closed"):
        await client.list_syncs(BUCKET)
