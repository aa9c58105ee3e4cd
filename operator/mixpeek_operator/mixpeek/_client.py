"""`MixpeekClient`: the async client of the Mixpeek bucket-sync API.

One httpx client, one request loop (`_request`) that applies the rate limit, the retry
policy and the error mapping to every call, and one typed method per endpoint.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random as _random
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, NamedTuple, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

from mixpeek_operator import __version__
from mixpeek_operator.constants import DEFAULT_MIXPEEK_BASE_URL

from ._errors import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    make_connection_error,
    make_status_error,
)
from ._ratelimit import (
    DEFAULT_REGISTRY,
    Clock,
    RateLimiterRegistry,
    Sleep,
    TokenBucket,
    credential_fingerprint,
)
from ._retry import Endpoint, RetryPolicy, backoff_delay, retry_delay, should_retry
from .models import (
    DeleteResponse,
    ListSyncConfigurationsRequest,
    SyncConfiguration,
    SyncCreateRequest,
    SyncListResponse,
    SyncUpdateRequest,
    TriggerResponse,
)

logger = logging.getLogger(__name__)

# An operator makes small JSON calls: a stuck one must fail fast and go back to scheduling.
DEFAULT_TIMEOUT: Final = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=5.0)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context shared by every client. httpx builds one per client otherwise
    (about 1 MB with the CA bundle, kept by the allocator after the client closes), and every
    API key rotation makes a new client: months of rotations would grow the process."""
    return httpx.create_ssl_context()


# Keep every connection the pool may open: with fewer kept than opened, a busy pool closes a
# connection after each request and opens a new one for the next (a bulk delete, all remote
# calls, spent a third of its time connecting).
DEFAULT_LIMITS: Final = httpx.Limits(max_connections=20, max_keepalive_connections=20, keepalive_expiry=30.0)
# The documented Free tier (10 requests/s, burst 20); the operator's --rate-limit and --rate-burst
# default to these too (settings.py), and 429s with Retry-After still hold every request.
DEFAULT_RATE_PER_SECOND: Final = 10.0
DEFAULT_BURST: Final = 20
DEFAULT_PAGE_SIZE: Final = 100
# Statuses whose Retry-After stops every request with the key (Mixpeek limits per key).
KEY_HOLD_STATUS_CODES: Final = frozenset({429, 503})
# Shown in repr and logs to tell credentials apart without revealing anything about them.
FINGERPRINT_LENGTH: Final = 12
# Printable ASCII without spaces: anything else would break the header, and httpx's error
# for an illegal header value quotes the value.
_API_KEY_PATTERN: Final = re.compile(r"[\x21-\x7e]+")

ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class RequestEvent:
    """One HTTP attempt, reported to the metrics hook after it finishes."""

    endpoint: str
    method: str
    status_code: int | None  # None when no response arrived
    latency_seconds: float
    attempt: int  # 0 for the first try, n for the n-th retry
    error_class: str | None  # the client's error class name, None on success


RequestHook = Callable[[RequestEvent], None]


class SyncListing(NamedTuple):
    syncs: list[SyncConfiguration]
    pages_fetched: int


def user_agent(replica: str | None = None) -> str:
    """The operator's User-Agent; with a replica identity (leader election, sharding) it names
    the replica, so the remote side (and the emulator's request log) can tell replicas apart."""
    base = f"mixpeek-operator/{__version__}"
    if not replica:
        return base
    # A header value is printable ASCII; parentheses would end the comment early.
    name = "".join(c if " " < c <= "~" and c not in "()\\" else "_" for c in replica)
    return f"{base} ({name})"


class MixpeekClient:
    """Async client of the Mixpeek bucket-sync API for one credential and namespace.

    Time, randomness and the transport are injectable so tests run on fake time against
    the in-process emulator (`httpx.ASGITransport`).
    """

    def __init__(
        self,
        api_key: str | SecretStr,
        namespace: str,
        *,
        base_url: str = DEFAULT_MIXPEEK_BASE_URL,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        limits: httpx.Limits = DEFAULT_LIMITS,
        retry_policy: RetryPolicy = RetryPolicy(),  # noqa: B008 -- frozen, so sharing it is safe
        rate_per_second: float = DEFAULT_RATE_PER_SECOND,
        burst: int = DEFAULT_BURST,
        rate_limiters: RateLimiterRegistry = DEFAULT_REGISTRY,
        transport: httpx.AsyncBaseTransport | None = None,
        on_request: RequestHook | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        now: Clock = time.time,
        random: Callable[[], float] = _random.random,
        replica: str | None = None,
    ) -> None:
        secret = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        if not _API_KEY_PATTERN.fullmatch(secret.get_secret_value()):
            raise ValueError("api_key must be non-empty printable ASCII without whitespace")
        if not namespace:
            raise ValueError("namespace must not be empty")
        self._api_key = secret
        self.namespace = namespace
        self.base_url = base_url.rstrip("/")
        self.retry_policy = retry_policy
        fingerprint = credential_fingerprint(secret.get_secret_value(), self.base_url)
        self.key_fingerprint = fingerprint[:FINGERPRINT_LENGTH]
        self.rate_limiter: TokenBucket = rate_limiters.get(fingerprint, rate_per_second, burst)
        self._on_request = on_request
        self._sleep = sleep
        self._clock = clock
        self._now = now
        self._random = random
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={
                "Authorization": f"Bearer {secret.get_secret_value()}",
                "X-Namespace": namespace,
                "Accept": "application/json",
                "User-Agent": user_agent(replica),
            },
            timeout=timeout,
            limits=limits,
            transport=transport,
            follow_redirects=False,
            verify=_tls_context(),
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, namespace={self.namespace!r}, "
            f"key_fingerprint={self.key_fingerprint!r})"
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # --- endpoints ----------------------------------------------------------------------

    async def create_sync(self, bucket_id: str, body: SyncCreateRequest) -> SyncConfiguration:
        payload = body.model_dump(mode="json", exclude_none=True)
        data = await self._request(Endpoint.CREATE, "POST", _syncs_path(bucket_id), json=payload)
        return _parse(SyncConfiguration, data)

    async def list_syncs(
        self,
        bucket_id: str,
        filters: ListSyncConfigurationsRequest | None = None,
        *,
        limit: int | None = None,
        offset: int | None = None,
        cursor: str | None = None,
        include_total: bool = False,
    ) -> SyncListResponse:
        """One page of the bucket's syncs, newest first; see `iter_syncs` for all of them."""
        params: dict[str, str | int | bool] = {
            name: value
            for name, value in (("limit", limit), ("offset", offset), ("cursor", cursor))
            if value is not None
        }
        if include_total:
            params["include_total"] = True
        payload = filters.model_dump(mode="json", exclude_none=True) if filters is not None else None
        data = await self._request(
            Endpoint.LIST, "POST", _syncs_path(bucket_id, "list"), json=payload, params=params
        )
        return _parse(SyncListResponse, data)

    async def iter_syncs(
        self,
        bucket_id: str,
        filters: ListSyncConfigurationsRequest | None = None,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> AsyncIterator[SyncConfiguration]:
        """Every sync of the bucket matching `filters`, fetching pages as needed."""
        async for page in self._iter_pages(bucket_id, filters, page_size):
            for sync in page:
                yield sync

    async def list_all_syncs(
        self,
        bucket_id: str,
        filters: ListSyncConfigurationsRequest | None = None,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> SyncListing:
        """Every sync of the bucket matching `filters`, and how many pages it took."""
        syncs: list[SyncConfiguration] = []
        pages_fetched = 0
        async for page in self._iter_pages(bucket_id, filters, page_size):
            syncs.extend(page)
            pages_fetched += 1
        return SyncListing(syncs, pages_fetched)

    async def get_sync(self, bucket_id: str, sync_config_id: str) -> SyncConfiguration:
        data = await self._request(Endpoint.GET, "GET", _syncs_path(bucket_id, sync_config_id))
        return _parse(SyncConfiguration, data)

    async def update_sync(
        self, bucket_id: str, sync_config_id: str, body: SyncUpdateRequest
    ) -> SyncConfiguration:
        """PATCH only the fields set on `body`, so `metadata={}` clears while omitted fields stay."""
        payload = body.model_dump(mode="json", exclude_unset=True)
        data = await self._request(
            Endpoint.UPDATE, "PATCH", _syncs_path(bucket_id, sync_config_id), json=payload
        )
        return _parse(SyncConfiguration, data)

    async def delete_sync(self, bucket_id: str, sync_config_id: str) -> DeleteResponse:
        data = await self._request(Endpoint.DELETE, "DELETE", _syncs_path(bucket_id, sync_config_id))
        return _parse(DeleteResponse, {} if data is None else data)

    async def pause_sync(self, bucket_id: str, sync_config_id: str) -> SyncConfiguration:
        data = await self._request(Endpoint.PAUSE, "POST", _syncs_path(bucket_id, sync_config_id, "pause"))
        return _parse(SyncConfiguration, data)

    async def resume_sync(self, bucket_id: str, sync_config_id: str) -> SyncConfiguration:
        data = await self._request(Endpoint.RESUME, "POST", _syncs_path(bucket_id, sync_config_id, "resume"))
        return _parse(SyncConfiguration, data)

    async def trigger_sync(self, bucket_id: str, sync_config_id: str) -> TriggerResponse:
        data = await self._request(
            Endpoint.TRIGGER, "POST", _syncs_path(bucket_id, sync_config_id, "trigger")
        )
        return _parse(TriggerResponse, data)

    # --- machinery ----------------------------------------------------------------------

    async def _iter_pages(
        self, bucket_id: str, filters: ListSyncConfigurationsRequest | None, page_size: int
    ) -> AsyncIterator[list[SyncConfiguration]]:
        """Pages of not-yet-seen syncs: follows `next_cursor`, or offsets if the server gives none.

        Offsets shift when syncs are created meanwhile (the list is newest first), so a
        sync already yielded is skipped rather than reported twice.
        """
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        cursor: str | None = None
        seen_cursors: set[str] = set()
        seen_ids: set[str] = set()
        offset = 0
        while True:
            if cursor is None:
                page = await self.list_syncs(bucket_id, filters, limit=page_size, offset=offset or None)
            else:
                page = await self.list_syncs(bucket_id, filters, limit=page_size, cursor=cursor)
            fresh = [sync for sync in page.results if sync.sync_config_id not in seen_ids]
            seen_ids.update(sync.sync_config_id for sync in fresh if sync.sync_config_id is not None)
            yield fresh
            if not page.results:
                return
            next_cursor = page.pagination.next_cursor
            if next_cursor:
                # A cursor is followed even after a short page: the server says more exist.
                if next_cursor in seen_cursors:
                    raise APIResponseValidationError(f"list of bucket {bucket_id!r} repeated a page cursor")
                seen_cursors.add(next_cursor)
                cursor = next_cursor
            elif cursor is not None:
                return  # a cursor-paging server ends the list by giving no cursor
            else:
                offset += len(page.results)
                if len(page.results) < page_size or (page.total is not None and offset >= page.total):
                    return

    async def _request(
        self,
        endpoint: Endpoint,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str | int | bool] | None = None,
    ) -> Any:
        """Send one API call with rate limiting and bounded retries; returns the decoded JSON body."""
        policy = self.retry_policy
        secrets = (self._api_key.get_secret_value(),)
        attempt = 0
        while True:
            await self.rate_limiter.acquire()
            started = self._clock()
            error: APIStatusError | APIConnectionError
            delay: float | None
            try:
                response = await self._http.request(method, path, json=json, params=params)
            except httpx.TransportError as exc:
                error = make_connection_error(exc, method=method, path=path, secrets=secrets)
                self._report(endpoint, method, None, started, attempt, error)
                if attempt == policy.max_retries or not should_retry(method, endpoint, exc):
                    raise error from exc
                delay = backoff_delay(attempt, policy, self._random())
            else:
                if response.is_success:
                    self._report(endpoint, method, response.status_code, started, attempt, None)
                    return _decode_success(response, method, path)
                error = make_status_error(response, now=self._now(), secrets=secrets)
                self._report(endpoint, method, response.status_code, started, attempt, error)
                held = self._hold_key(response.status_code, error.retry_after)
                if attempt == policy.max_retries or not should_retry(method, endpoint, response.status_code):
                    raise error
                delay = retry_delay(attempt, policy, error.retry_after, self._random())
                if delay is None:
                    raise error  # the server asked for a longer wait than we sleep on; the caller schedules
                if held:
                    delay = 0.0  # the key's hold makes the next acquire() wait the Retry-After
            logger.warning(
                "Mixpeek %s %s failed (attempt %d of %d), retrying in %.3f s: %s",
                method, path, attempt + 1, policy.max_retries + 1,
                max(delay, self.rate_limiter.held_for()), error,
            )  # fmt: skip
            if delay > 0.0:
                await self._sleep(delay)
            attempt += 1

    def _hold_key(self, status_code: int, retry_after: float | None) -> bool:
        """A Retry-After on 429 (or 503) is about the key, not this request: hold every user of it."""
        if retry_after is None or status_code not in KEY_HOLD_STATUS_CODES:
            return False
        self.rate_limiter.hold(retry_after)
        return True

    def _report(
        self,
        endpoint: Endpoint,
        method: str,
        status_code: int | None,
        started: float,
        attempt: int,
        error: Exception | None,
    ) -> None:
        if self._on_request is None:
            return
        event = RequestEvent(
            endpoint=str(endpoint),
            method=method,
            status_code=status_code,
            latency_seconds=self._clock() - started,
            attempt=attempt,
            error_class=None if error is None else type(error).__name__,
        )
        try:
            self._on_request(event)
        except Exception:
            # A broken metrics hook must not fail the API call it reports on.
            logger.exception("Mixpeek request hook failed")


def _syncs_path(bucket_id: str, *segments: str) -> str:
    return "/v1/buckets/" + "/".join(_path_segment(part) for part in (bucket_id, "syncs", *segments))


def _path_segment(value: str) -> str:
    """Percent-encode one path segment (ids are user input); refuse ones URL parsing would collapse."""
    if value in {"", ".", ".."}:
        raise ValueError(f"invalid path segment {value!r}")
    return quote(value, safe="")


def _decode_success(response: httpx.Response, method: str, path: str) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError as exc:
        raise APIResponseValidationError(
            f"{method} {path} answered {response.status_code} with a non-JSON body"
        ) from exc


def _parse(model: type[ModelT], data: Any) -> ModelT:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise APIResponseValidationError(f"unexpected {model.__name__} from Mixpeek: {exc}") from exc
