"""The controller engine: object cache, keyed work queue, workers, backoff, and the observer.

kopf delivers watch events (see handlers.py); everything else is plain asyncio here, in
the shape of controller-runtime:

- Events update an in-memory cache of `BucketSync` bodies and enqueue the object only
  when something the reconcile acts on changed (generation, deletion, the request
  annotations): our own status writes never wake it again.
- A keyed queue with per-key exclusivity: one reconcile per object at a time, an
  object enqueued while it is being reconciled runs once more afterwards, and failures
  back off exponentially with full jitter (capped; `Retry-After` never undercut).
- The observer reads remote state with one paged list per (credential, Mixpeek
  namespace, bucket) per interval (jittered) and enqueues only the objects whose remote
  sync changed, so an idle fleet costs one list per bucket and no Kubernetes writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import itertools
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from mixpeek_operator.constants import (
    API_VERSION,
    FINALIZER,
    GROUP,
    KIND,
    PLURAL,
    RECONCILE_PAUSED,
    RECONCILE_REQUESTED_AT,
    TRIGGER_REQUESTED_AT,
    VERSION,
    ConditionType,
)
from mixpeek_operator.credentials import Credentials, CredentialStore
from mixpeek_operator.kube import KubeClient, KubeForbidden, ObjectReference
from mixpeek_operator.metrics import OperatorMetrics, ReconcileResult
from mixpeek_operator.mixpeek import (
    MixpeekClient,
    MixpeekError,
    RateLimiterRegistry,
    RequestEvent,
    RetryPolicy,
    backoff_delay,
)
from mixpeek_operator.mixpeek.models import SyncConfiguration
from mixpeek_operator.reconcile import GroupKey, ObjectKey, ObjectState, Outcome, ReconcileContext, reconcile
from mixpeek_operator.status import find_condition

log = logging.getLogger("mixpeek_operator.engine")

K = TypeVar("K")

# Annotations whose change means "reconcile now"; anything else in metadata does not.
_WATCHED_ANNOTATIONS = (RECONCILE_REQUESTED_AT, TRIGGER_REQUESTED_AT, RECONCILE_PAUSED)
# reconcile outcome -> the `result` label of bucketsync_reconcile_total
_RESULTS: dict[str, ReconcileResult] = {
    "success": "success",
    "paused": "success",
    "deleted": "success",
    "stalled": "stalled",
    "error": "error",
}
# How long a reconcile waits for its bucket's first listing before falling back to a GET.
_PRIME_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class EngineSettings:
    workers: int = 32
    observe_interval: float = 60.0
    observe_jitter: float = 0.1
    list_page_size: int = 1000
    backoff_base: float = 1.0
    backoff_cap: float = 300.0
    rate_per_second: float = 10.0
    burst: int = 20


class WorkQueue(Generic[K]):
    """Delayed, de-duplicated keys; a key is handed to one worker at a time."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, K]] = []
        self._due: dict[K, float] = {}
        self._active: set[K] = set()
        self._deferred: dict[K, float] = {}  # re-added while active: runs after done()
        self._seq = itertools.count()
        self._changed = asyncio.Condition()

    def __len__(self) -> int:
        return len(self._due) + len(self._deferred)

    async def add(self, key: K, delay: float = 0.0) -> None:
        due = self._clock() + max(0.0, delay)
        async with self._changed:
            if key in self._active:
                self._deferred[key] = min(due, self._deferred.get(key, due))
                return
            if key in self._due and self._due[key] <= due:
                return
            self._push(key, due)
            self._changed.notify_all()

    def _push(self, key: K, due: float) -> None:
        self._due[key] = due
        heapq.heappush(self._heap, (due, next(self._seq), key))

    async def get(self) -> K:
        async with self._changed:
            while True:
                while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                    heapq.heappop(self._heap)  # superseded by an earlier add
                now = self._clock()
                if self._heap and self._heap[0][0] <= now:
                    _, _, key = heapq.heappop(self._heap)
                    del self._due[key]
                    self._active.add(key)
                    return key
                timeout = self._heap[0][0] - now if self._heap else None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout)

    async def done(self, key: K) -> None:
        async with self._changed:
            self._active.discard(key)
            due = self._deferred.pop(key, None)
            if due is not None:
                self._push(key, due)
            self._changed.notify_all()

    async def discard(self, key: K) -> None:
        async with self._changed:
            self._due.pop(key, None)
            self._deferred.pop(key, None)


def backoff(failures: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter after the n-th consecutive failure."""
    return backoff_delay(max(0, failures - 1), RetryPolicy(base_delay=base, max_delay=cap), random.random())


def _resource_version(body: Mapping[str, Any]) -> int | None:
    # Opaque by contract, etcd revisions in practice; when it is not a number, do not order.
    value = str((body.get("metadata") or {}).get("resourceVersion") or "")
    return int(value) if value.isdigit() else None


def _trigger_snapshot(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a reconcile acts on; an event that leaves it unchanged needs no reconcile."""
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return (
        meta.get("uid"),
        meta.get("generation"),
        bool(meta.get("deletionTimestamp")),
        tuple(annotations.get(name) for name in _WATCHED_ANNOTATIONS),
    )


def remote_projection(sync: SyncConfiguration | None) -> str | None:
    """A digest of the remote fields that status or drift depend on (not locks or cursors)."""
    if sync is None:
        return None
    data = sync.model_dump(
        mode="json",
        include={
            "sync_config_id",
            "connection_id",
            "source_path",
            "file_filters",
            "schema_mapping",
            "sync_mode",
            "polling_interval_seconds",
            "batch_size",
            "skip_batch_submission",
            "status",
            "is_active",
            "total_files_discovered",
            "total_files_synced",
            "total_files_failed",
            "total_bytes_synced",
            "last_sync_at",
            "next_sync_at",
            "last_error",
            "consecutive_failures",
            "metadata",
            "paused",
            "sync_run_counter",
            "batches_created",
        },
    )
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@dataclass
class _Group:
    key: GroupKey
    client: MixpeekClient
    members: dict[ObjectKey, str | None] = field(default_factory=dict)  # object -> its sync id
    seen: dict[ObjectKey, str | None] = field(default_factory=dict)  # object -> last projection
    syncs: dict[str, SyncConfiguration] = field(default_factory=dict)
    touched: dict[str, float] = field(default_factory=dict)  # sync id -> when we last wrote it
    fetched_at: float | None = None
    primed: asyncio.Event = field(default_factory=asyncio.Event)
    error: MixpeekError | None = None
    task: asyncio.Task[None] | None = None
    lists: int = 0
    pages: int = 0


class Observer:
    """The remote cache (one listing per group) and the polling loop that refreshes it."""

    def __init__(
        self,
        settings: EngineSettings,
        enqueue: Callable[[ObjectKey], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._enqueue = enqueue
        self._clock = clock
        self.groups: dict[GroupKey, _Group] = {}
        self._membership: dict[ObjectKey, GroupKey] = {}

    # --- membership ------------------------------------------------------------------------

    def join(self, obj: ObjectKey, group: GroupKey, client: MixpeekClient) -> None:
        previous = self._membership.get(obj)
        if previous is not None and previous != group:
            self.leave(obj)
        state = self.groups.get(group)
        if state is None:
            state = self.groups[group] = _Group(key=group, client=client)
            state.task = asyncio.create_task(self._observe(state), name=f"observe {group[1]}/{group[2]}")
        state.client = client
        state.members.setdefault(obj, None)
        self._membership[obj] = group

    def leave(self, obj: ObjectKey) -> None:
        group = self._membership.pop(obj, None)
        state = self.groups.get(group) if group else None
        if state is None:
            return
        state.members.pop(obj, None)
        state.seen.pop(obj, None)
        if not state.members:
            if state.task is not None:
                state.task.cancel()
            del self.groups[state.key]

    def settle(self, obj: ObjectKey, group: GroupKey, sync_id: str | None) -> None:
        """After a reconcile: the object's remote sync as it now is counts as seen."""
        state = self.groups.get(group)
        if state is None or obj not in state.members:
            return
        state.members[obj] = sync_id
        state.seen[obj] = remote_projection(state.syncs.get(sync_id)) if sync_id else None

    # --- the cache (reconcile.RemoteCache) -------------------------------------------------

    async def _wait_primed(self, state: _Group) -> None:
        if not state.primed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.primed.wait(), _PRIME_WAIT_SECONDS)

    def _fresh(self, state: _Group) -> bool:
        return (
            state.fetched_at is not None
            and self._clock() - state.fetched_at < 2 * self._settings.observe_interval
        )

    async def lookup(self, group: GroupKey, sync_id: str) -> SyncConfiguration | Literal["unknown"] | None:
        state = self.groups.get(group)
        if state is None:
            return "unknown"
        await self._wait_primed(state)
        sync = state.syncs.get(sync_id)
        # Absent from a listing is not proof of deletion (it may be newer): let the caller GET.
        return sync if sync is not None and self._fresh(state) else "unknown"

    async def listing(self, group: GroupKey) -> list[SyncConfiguration] | None:
        state = self.groups.get(group)
        if state is None:
            return None
        await self._wait_primed(state)
        if state.error is not None and state.fetched_at is None:
            raise state.error
        return sorted(
            state.syncs.values(), key=lambda s: s.created_at or datetime.min.replace(tzinfo=UTC), reverse=True
        )

    def remember(self, group: GroupKey, sync: SyncConfiguration) -> None:
        state = self.groups.get(group)
        if state is None or not sync.sync_config_id:
            return
        state.syncs[sync.sync_config_id] = sync
        state.touched[sync.sync_config_id] = self._clock()

    def forget(self, group: GroupKey, sync_id: str) -> None:
        state = self.groups.get(group)
        if state is None:
            return
        state.syncs.pop(sync_id, None)
        state.touched[sync_id] = self._clock()

    # --- polling -----------------------------------------------------------------------------

    async def _observe(self, state: _Group) -> None:
        failures = 0
        delay = 0.0
        while True:
            await asyncio.sleep(delay)
            started = self._clock()
            try:
                listing = await state.client.list_all_syncs(
                    state.key[2], page_size=self._settings.list_page_size
                )
            except MixpeekError as exc:
                failures += 1
                state.error = exc
                state.primed.set()  # waiters fall back to GETs and see the error there
                delay = max(getattr(exc, "retry_after", None) or 0.0, backoff(failures, 1.0, 60.0))
                log.warning("listing bucket %s failed: %s", state.key[2], exc, extra={"bucket": state.key[2]})
                continue
            failures, state.error = 0, None
            state.lists += 1
            state.pages += listing.pages_fetched
            listed = {sync.sync_config_id: sync for sync in listing.syncs if sync.sync_config_id}
            # Keep what we wrote while the list was in flight; the listing may predate it.
            for sync_id, when in state.touched.items():
                if when >= started:
                    if sync_id in state.syncs:
                        listed[sync_id] = state.syncs[sync_id]
                    else:
                        listed.pop(sync_id, None)
            state.syncs = listed
            state.touched = {k: v for k, v in state.touched.items() if v >= started}
            state.fetched_at = started
            state.primed.set()
            for obj, member_sync in list(state.members.items()):
                if member_sync is None:
                    continue
                projection = remote_projection(listed.get(member_sync))
                if state.seen.get(obj) != projection:
                    state.seen[obj] = projection
                    self._enqueue(obj)
            interval = self._settings.observe_interval
            delay = interval * random.uniform(
                1 - self._settings.observe_jitter, 1 + self._settings.observe_jitter
            )

    async def close(self) -> None:
        tasks = [state.task for state in self.groups.values() if state.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.groups.clear()


class _Writer:
    """reconcile.KubeWriter over the Kubernetes API, keeping the object cache current."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @property
    def _kube(self) -> KubeClient:
        return self._engine.kube

    async def add_finalizer(self, obj: ObjectState) -> None:
        body = await self._kube.add_finalizer(
            GROUP,
            VERSION,
            PLURAL,
            obj.namespace,
            obj.name,
            FINALIZER,
            current=self._engine.objects.get(obj.key),
        )
        self._engine.cache_body(body)

    async def remove_finalizer(self, obj: ObjectState) -> None:
        body = await self._kube.remove_finalizer(GROUP, VERSION, PLURAL, obj.namespace, obj.name, FINALIZER)
        if body is not None:
            self._engine.cache_body(body)

    async def patch_status(self, obj: ObjectState, patch: dict[str, Any]) -> None:
        body = await self._kube.patch_status(
            GROUP, VERSION, PLURAL, obj.namespace, obj.name, {"status": patch}
        )
        self._engine.cache_body(body)

    async def event(
        self, obj: ObjectState, kind: Literal["Normal", "Warning"], reason: str, message: str
    ) -> None:
        self._engine.metrics.count_event(reason)
        log.info("%s: %s", reason, message, extra={"object": obj.ref, "reason": reason})
        reference = ObjectReference(
            api_version=API_VERSION, kind=KIND, namespace=obj.namespace, name=obj.name, uid=obj.uid
        )
        try:
            await self._kube.create_event(reference, type=kind, reason=reason, message=message)
        except Exception as exc:  # an Event is best effort; never fail a reconcile for it
            log.warning("could not post event %s: %s", reason, exc, extra={"object": obj.ref})

    async def owner_exists(self, namespace: str, name: str, uid: str) -> bool:
        cached = self._engine.objects.get((namespace, name))
        if cached is not None:
            return bool((cached.get("metadata") or {}).get("uid") == uid)
        try:
            body = await self._kube.get_object(GROUP, VERSION, PLURAL, namespace, name)
        except KubeForbidden:
            # A namespace we may not read: assume the owner lives rather than take its sync.
            return True
        return body is not None and (body.get("metadata") or {}).get("uid") == uid


class Engine:
    def __init__(
        self,
        *,
        kube: KubeClient,
        credentials: CredentialStore,
        metrics: OperatorMetrics,
        settings: EngineSettings,
        rate_limiters: RateLimiterRegistry | None = None,
    ) -> None:
        self.kube = kube
        self.credentials = credentials
        self.metrics = metrics
        self.settings = settings
        self.objects: dict[ObjectKey, dict[str, Any]] = {}
        self._handled: dict[ObjectKey, tuple[Any, ...]] = {}
        self._failures: dict[ObjectKey, int] = {}
        self._ready_since: set[ObjectKey] = set()
        self.queue: WorkQueue[ObjectKey] = WorkQueue()
        self.observer = Observer(settings, self._enqueue_soon)
        self._rate_limiters = rate_limiters or RateLimiterRegistry(on_wait=metrics.observe_ratelimiter_wait)
        self._clients: dict[tuple[str, str], MixpeekClient] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self.context = ReconcileContext(
            writer=_Writer(self),
            credentials=credentials,
            client_for=self.client_for,
            remote=self.observer,
            now=lambda: datetime.now(UTC),
            on_drift_corrected=metrics.count_drift_correction,
        )
        self.reconciles = 0

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        for index in range(self.settings.workers):
            self._workers.append(asyncio.create_task(self._worker(), name=f"reconcile-worker-{index}"))

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()
        await self.observer.close()
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    # --- inputs ----------------------------------------------------------------------------------

    def cache_body(self, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        current = self.objects.get(key)
        if current is not None:
            old_rv, new_rv = _resource_version(current), _resource_version(body)
            if old_rv is not None and new_rv is not None and new_rv < old_rv:
                return  # a late watch event older than what we already hold
        self.objects[key] = dict(body)

    async def on_object_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if event_type == "DELETED":
            self.objects.pop(key, None)
            self._handled.pop(key, None)
            self._failures.pop(key, None)
            self._ready_since.discard(key)
            self.observer.leave(key)
            self.credentials.forget(key)
            await self.queue.discard(key)
            return
        self.cache_body(body)
        if self._handled.get(key) != _trigger_snapshot(body):
            await self.queue.add(key)

    async def on_secret_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        ref = (meta.get("namespace", ""), meta.get("name", ""))
        dependents = self.credentials.secret_changed(ref, None if event_type == "DELETED" else body)
        for key in dependents:
            self._failures.pop(key, None)  # new credentials deserve an immediate try
            await self.queue.add(key)

    def _enqueue_soon(self, key: ObjectKey) -> None:
        task = asyncio.create_task(self.queue.add(key))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- Mixpeek clients -------------------------------------------------------------------------

    def client_for(self, creds: Credentials) -> MixpeekClient:
        key = creds.group_key
        client = self._clients.get(key)
        if client is None:
            client = MixpeekClient(
                creds.api_key,
                creds.namespace,
                base_url=creds.base_url,
                rate_per_second=self.settings.rate_per_second,
                burst=self.settings.burst,
                rate_limiters=self._rate_limiters,
                on_request=self._observe_request,
            )
            self._clients[key] = client
        return client

    def _observe_request(self, event: RequestEvent) -> None:
        self.metrics.observe_request(event.endpoint, event.method, event.status_code, event.latency_seconds)

    # --- the work loop ---------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self._process(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconcile crashed", extra={"object": f"{key[0]}/{key[1]}"})
                await self._requeue_after_failure(key, None)
            finally:
                await self.queue.done(key)

    async def _process(self, key: ObjectKey) -> None:
        body = self.objects.get(key)
        if body is None:
            return
        self._handled[key] = _trigger_snapshot(body)
        obj = ObjectState.from_body(body)
        started = time.monotonic()
        outcome = await reconcile(obj, self.context)
        self.reconciles += 1
        self.metrics.observe_reconcile(_RESULTS[outcome.result], time.monotonic() - started)
        await self._after(key, obj, outcome)

    async def _after(self, key: ObjectKey, obj: ObjectState, outcome: Outcome) -> None:
        if outcome.result in ("paused", "deleted"):
            self.observer.leave(key)
        if outcome.group is not None:
            body = self.objects.get(key) or {}
            self.observer.settle(key, outcome.group, (body.get("status") or {}).get("syncConfigId"))
        if outcome.result == "error":
            await self._requeue_after_failure(key, outcome.retry_after)
            return
        self._failures.pop(key, None)
        if outcome.ready and key not in self._ready_since:
            self._ready_since.add(key)
            created = (self.objects.get(key) or {}).get("metadata", {}).get("creationTimestamp")
            if created:
                age = datetime.now(UTC) - datetime.fromisoformat(created.replace("Z", "+00:00"))
                self.metrics.observe_time_to_ready(max(0.0, age.total_seconds()))
        if outcome.requeue_after is not None:
            await self.queue.add(key, outcome.requeue_after)

    async def _requeue_after_failure(self, key: ObjectKey, retry_after: float | None) -> None:
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        delay = backoff(failures, self.settings.backoff_base, self.settings.backoff_cap)
        await self.queue.add(key, max(delay, retry_after or 0.0))

    # --- for metrics and probes --------------------------------------------------------------------

    def readiness_summary(self) -> Iterable[tuple[str, str]]:
        for body in list(self.objects.values()):
            ready = find_condition(body.get("status"), ConditionType.READY) or {}
            yield (str(ready.get("status", "Unknown")), str(ready.get("reason", "")))
