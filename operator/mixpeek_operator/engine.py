"""The controller engine: the thin loop between kopf's watch events, the work queue
(workqueue.py), the remote cache (observer.py) and the reconcile (reconcile.py).

kopf delivers watch events (see handlers.py); the rest has the shape of controller-runtime:

- Events update one record per `BucketSync` (its body and what its last reconcile acted
  on) and enqueue the object only when something the reconcile acts on changed
  (generation, deletion, the request annotations): our own status writes never wake it.
- Workers take keys from the queue (one reconcile per object at a time); a failure goes
  back to the queue rate-limited, a success makes the queue forget the failures.
- The observer enqueues the objects whose remote sync changed.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, Protocol

import httpx

from mixpeek_operator.constants import (
    API_VERSION,
    FINALIZER,
    KIND,
    ConditionType,
)
from mixpeek_operator.credentials import Credentials, CredentialStore
from mixpeek_operator.keys import ObjectKey
from mixpeek_operator.kube import (
    BUCKETSYNCS,
    EventType,
    JsonObject,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    ObjectReference,
    Resource,
    is_kube_outage,
)
from mixpeek_operator.leancache import READ_ANNOTATIONS, lean_body
from mixpeek_operator.metrics import OperatorMetrics, ReconcileResult
from mixpeek_operator.mixpeek import MixpeekClient, RateLimiterRegistry, RequestEvent
from mixpeek_operator.observer import Observer, ObserverSettings
from mixpeek_operator.reconcile import (
    ObjectGone,
    ObjectState,
    Outcome,
    ReconcileContext,
    StatusWriteError,
    reconcile,
)
from mixpeek_operator.secret_guard import FinalizerApi, SecretUseGuard
from mixpeek_operator.settings import DEFAULTS
from mixpeek_operator.supervision import Supervisor
from mixpeek_operator.workqueue import Backoff, WorkQueue

log = logging.getLogger("mixpeek_operator.engine")

# The object the current reconcile is for: `client_for` records it as a user of its client.
_reconciling: contextvars.ContextVar[ObjectKey | None] = contextvars.ContextVar("reconciling", default=None)

# reconcile outcome -> the `result` label of bucketsync_reconcile_total
_RESULTS: dict[str, ReconcileResult] = {
    "success": "success",
    "paused": "success",
    "deleted": "success",
    "stalled": "stalled",
    "error": "error",
}


@dataclass(frozen=True)
class EngineSettings:
    workers: int = DEFAULTS.workers
    observe_interval: float = DEFAULTS.observe_interval
    observe_jitter: float = 0.1
    list_page_size: int = 1000
    backoff_base: float = 1.0
    backoff_cap: float = DEFAULTS.backoff_cap
    rate_per_second: float = DEFAULTS.rate_limit
    burst: int = DEFAULTS.rate_burst
    # A Mixpeek client no object uses any more (its key was rotated out, its objects are gone)
    # is closed after this long: a request already under way on it finishes first.
    idle_client_seconds: float = 60.0


class KubeApi(FinalizerApi, Protocol):
    """The Kubernetes calls the engine makes (kube.KubeClient)."""

    async def patch_status(
        self, resource: Resource, namespace: str | None, name: str, patch: JsonObject
    ) -> JsonObject: ...

    async def create_event(
        self, involved: ObjectReference, *, type: EventType, reason: str, message: str
    ) -> JsonObject: ...

    async def get_object(self, resource: Resource, namespace: str | None, name: str) -> JsonObject | None: ...


def key_of(body: Mapping[str, Any]) -> ObjectKey:
    meta = body.get("metadata") or {}
    return ObjectKey(meta.get("namespace", ""), meta.get("name", ""))


def _resource_version(body: Mapping[str, Any]) -> int | None:
    # Opaque by contract, etcd revisions in practice; when it is not a number, do not order.
    value = str((body.get("metadata") or {}).get("resourceVersion") or "")
    return int(value) if value.isdigit() else None


class TriggerSnapshot(NamedTuple):
    """What a reconcile acts on; an event that leaves it unchanged needs no reconcile."""

    uid: Any
    generation: Any
    deleting: bool
    # A finalizer someone removed is restored by a reconcile, so its removal triggers one.
    has_finalizer: bool
    # The request annotations: a change means "reconcile now"; the lean cache keeps only these.
    annotations: tuple[Any, ...]


def trigger_snapshot(body: Mapping[str, Any]) -> TriggerSnapshot:
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return TriggerSnapshot(
        meta.get("uid"),
        meta.get("generation"),
        bool(meta.get("deletionTimestamp")),
        FINALIZER in (meta.get("finalizers") or ()),
        tuple(annotations.get(name) for name in READ_ANNOTATIONS),
    )


def _ready_condition(body: Mapping[str, Any]) -> Mapping[str, Any]:
    # Read straight from the JSON: this runs for every object at every metrics scrape.
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition.get("type") == ConditionType.READY:
            found: Mapping[str, Any] = condition
            return found
    return {}


@dataclass
class TrackedObject:
    """Everything the engine keeps about one `BucketSync`."""

    body: dict[str, Any]
    handled: TriggerSnapshot | None = None  # trigger_snapshot() of the last reconcile
    ready_reported: bool = False  # time to Ready is observed once per object

    def newer_than(self, body: Mapping[str, Any]) -> bool:
        held, incoming = _resource_version(self.body), _resource_version(body)
        return held is not None and incoming is not None and incoming < held


class _Writer:
    """reconcile.KubeWriter over the Kubernetes API, keeping the object records current."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @property
    def _kube(self) -> KubeApi:
        return self._engine.kube

    async def add_finalizer(self, obj: ObjectState) -> None:
        record = self._engine.objects.get(obj.key)
        try:
            body = await self._kube.add_finalizer(
                BUCKETSYNCS,
                obj.namespace,
                obj.name,
                FINALIZER,
                current=record.body if record else None,
            )
        except KubeNotFound as exc:
            raise ObjectGone(str(exc)) from exc  # deleted meanwhile: its DELETED event drops the record
        if FINALIZER not in ((body.get("metadata") or {}).get("finalizers") or ()):
            raise ObjectGone("being deleted; no finalizer can be added")
        self._engine.cache_body(body)

    async def remove_finalizer(self, obj: ObjectState) -> None:
        body = await self._kube.remove_finalizer(BUCKETSYNCS, obj.namespace, obj.name, FINALIZER)
        if body is not None:
            self._engine.cache_body(body)

    async def patch_status(self, obj: ObjectState, patch: dict[str, Any]) -> None:
        try:
            body = await self._kube.patch_status(BUCKETSYNCS, obj.namespace, obj.name, {"status": patch})
        except KubeNotFound:
            return  # deleted meanwhile: no status to report; its DELETED event drops the record
        except KubeError as exc:
            if is_kube_outage(exc):
                raise  # the engine reports an outage once per object, not once per failed write
            raise StatusWriteError(str(exc)) from exc
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
            # During an outage the reconcile's own failed write reports it, once.
            level = logging.DEBUG if isinstance(exc, KubeError) and is_kube_outage(exc) else logging.WARNING
            log.log(level, "could not post event %s: %s", reason, exc, extra={"object": obj.ref})

    async def owner_exists(self, namespace: str, name: str, uid: str) -> bool:
        cached = self._engine.objects.get(ObjectKey(namespace, name))
        if cached is not None:
            return bool((cached.body.get("metadata") or {}).get("uid") == uid)
        try:
            body = await self._kube.get_object(BUCKETSYNCS, namespace, name)
        except KubeForbidden:
            # A namespace we may not read: assume the owner lives rather than take its sync.
            return True
        return body is not None and (body.get("metadata") or {}).get("uid") == uid


class Engine:
    def __init__(
        self,
        *,
        kube: KubeApi,
        credentials: CredentialStore,
        metrics: OperatorMetrics,
        settings: EngineSettings,
        rate_limiters: RateLimiterRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        mixpeek_transport: httpx.AsyncBaseTransport | None = None,
        secret_guard: SecretUseGuard | None = None,
        owns: Callable[[Mapping[str, Any]], bool] | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.kube = kube
        self.secret_guard = secret_guard
        self.credentials = credentials
        self.metrics = metrics
        self.settings = settings
        self._clock = clock
        self._now = now
        # Sharding: whether this replica reconciles an object (always, without sharding).
        self.owns = owns or (lambda body: True)
        self.supervisor = supervisor or Supervisor(on_restart=metrics.count_task_restart, sleep=sleep)
        self.objects: dict[ObjectKey, TrackedObject] = {}
        self.queue: WorkQueue[ObjectKey] = WorkQueue(
            Backoff(settings.backoff_base, settings.backoff_cap), clock=clock
        )
        self.observer = Observer(
            ObserverSettings(settings.observe_interval, settings.observe_jitter, settings.list_page_size),
            self._enqueue_soon,
            clock=clock,
            sleep=sleep,
            supervisor=self.supervisor,
        )
        self._rate_limiters = rate_limiters or RateLimiterRegistry(
            on_wait=metrics.observe_ratelimiter_wait, on_hold=metrics.observe_key_hold
        )
        self._mixpeek_transport = mixpeek_transport
        # One Mixpeek client (HTTP pool + rate limiter) per credential and namespace, kept while
        # an object uses it: a key rotation moves every user to a new one and the old one closes.
        self._clients: dict[tuple[str, str], MixpeekClient] = {}
        self._client_users: dict[tuple[str, str], set[ObjectKey]] = {}
        self._client_of: dict[ObjectKey, tuple[str, str]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._workers: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._kube_outage: set[ObjectKey] = set()  # objects whose last reconcile hit an outage
        self.context = ReconcileContext(
            writer=_Writer(self),
            credentials=credentials,
            client_for=self.client_for,
            remote=self.observer,
            now=now,
            on_drift_corrected=metrics.count_drift_correction,
        )

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start reconciling (and with it remote calls and writes); events only fill the queue before."""
        if self._workers:
            return
        for index in range(self.settings.workers):
            self._workers.append(
                self.supervisor.spawn(f"reconcile-worker-{index}", self._worker, kind="reconcile-worker")
            )
        if self.secret_guard is not None:
            # Secret releases another replica was to make (seen while standing by); part of the
            # work, so stop_work cancels it too.
            self._workers.append(
                self.supervisor.spawn(
                    "secret-releases", self.secret_guard.release_deferred, kind="secret-releases"
                )
            )

    async def stop_work(self) -> None:
        """Cancel every reconcile and listing; the object caches stay, and every object is queued
        again, so the next start (e.g. after regaining leadership) reconciles each once.

        Every remote listing is dropped: a group this replica owns again is listed anew after it
        acquired it. A listing from before could miss a sync the previous owner created, and a
        create deduplicated against it would make a second one."""
        workers, self._workers = self._workers, []
        while workers:
            for task in workers:
                task.cancel()
            # Cancel again what is still running: a library's asyncio.wait_for (Python 3.11)
            # can drop a cancellation, and no reconcile may outlive this call.
            _, pending = await asyncio.wait(workers, timeout=1.0)
            workers = list(pending)
        await self.observer.close()
        for key, record in list(self.objects.items()):
            record.handled = None
            await self.queue.add(key)

    async def stop(self) -> None:
        await self.stop_work()
        for task in self._closing:
            task.cancel()
        await asyncio.gather(*self._closing, return_exceptions=True)
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    # --- inputs ----------------------------------------------------------------------------------

    def cache_body(self, body: Mapping[str, Any]) -> TrackedObject:
        key = key_of(body)
        record = self.objects.get(key)
        if record is None:
            record = self.objects[key] = TrackedObject(lean_body(body))
        elif not record.newer_than(body):  # else a late watch event older than what we hold
            record.body = lean_body(body)
        return record

    async def on_object_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        key = key_of(body)
        if event_type == "DELETED":
            await self._drop(key)
            return
        record = self.cache_body(body)
        snapshot, handled = trigger_snapshot(body), record.handled
        if handled is not None and snapshot.has_finalizer and not handled.has_finalizer:
            # A finalizer added (by our reconcile, or at admission) is no reason to reconcile; its
            # removal is, and is compared against this from now on.
            handled = record.handled = handled._replace(has_finalizer=True)
        if handled != snapshot:
            await self.queue.add(key)

    async def _drop(self, key: ObjectKey) -> None:
        """The object is gone: its record, listing membership, Secret dependency and queue entry."""
        record = self.objects.pop(key, None)
        self._forget_registrations(key)
        await self.queue.discard(key)
        self._kube_outage.discard(key)
        if record is not None:
            self.context.create_attempts.discard(str((record.body.get("metadata") or {}).get("uid")))
        if self.secret_guard is not None:
            await self.secret_guard.object_gone(key, record.body if record else None)

    def _forget_registrations(self, key: ObjectKey) -> None:
        """What a reconcile registers for its object: listing membership, credential dependency,
        its share of a Mixpeek client."""
        self.observer.leave(key)
        self.credentials.forget(key)
        self._release_client(key)

    async def on_secret_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        if self.secret_guard is not None:
            await self.secret_guard.secret_event(event_type, body)
        dependents = self.credentials.secret_changed(key_of(body), None if event_type == "DELETED" else body)
        for key in dependents:
            self.queue.forget(key)  # new credentials deserve an immediate try
            await self.queue.add(key)

    def _enqueue_soon(self, key: ObjectKey) -> None:
        task = asyncio.create_task(self.queue.add(key))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def wait_background(self) -> None:
        """Wait for the enqueues the observer started (for tests)."""
        await asyncio.gather(*self._background)

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
                transport=self._mixpeek_transport,
            )
            self._clients[key] = client
        user = _reconciling.get()
        if user is not None and self._client_of.get(user) != key:
            self._release_client(user)
            self._client_of[user] = key
            self._client_users.setdefault(key, set()).add(user)
        return client

    def _release_client(self, obj: ObjectKey) -> None:
        """`obj` no longer uses its client (gone, or moved to other credentials); the last user
        closes it. Its listings go with it: they poll through that client."""
        key = self._client_of.pop(obj, None)
        if key is None:
            return
        self.observer.leave(obj)  # the reconcile after a move joins the new scope again
        users = self._client_users[key]
        users.discard(obj)
        if users:
            return
        del self._client_users[key]
        client = self._clients.get(key)
        if client is not None:
            task = asyncio.create_task(self._close_when_idle(key, client), name="close-mixpeek-client")
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _close_when_idle(self, key: tuple[str, str], client: MixpeekClient) -> None:
        await asyncio.sleep(self.settings.idle_client_seconds)
        if key not in self._client_users and self._clients.get(key) is client:  # not taken up again
            del self._clients[key]
            await client.aclose()

    def sizes(self) -> dict[str, int]:
        """How many entries each internal map holds, for the soak benchmark (hack/bench/soak.py):
        every one must return to what the live objects need once objects and Secrets go."""
        return {
            "engine.objects": len(self.objects),
            "engine.clients": len(self._clients),
            "engine.client_users": len(self._client_users),
            "engine.client_of": len(self._client_of),
            "engine.kube_outage": len(self._kube_outage),
            "engine.background": len(self._background),
            "engine.closing_clients": len(self._closing),
            "create_attempts": len(self.context.create_attempts),
            **self.queue.sizes(),
            **self.observer.sizes(),
            **self.credentials.sizes(),
            **(self.secret_guard.sizes() if self.secret_guard is not None else {}),
        }

    def _observe_request(self, event: RequestEvent) -> None:
        self.metrics.observe_request(event.endpoint, event.method, event.status_code, event.latency_seconds)

    # --- the work loop ---------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            await self._handle(await self.queue.get())

    async def step(self) -> ObjectKey | None:
        """Reconcile one due key now, as a worker would; None when nothing is due (for tests)."""
        key = self.queue.pop_ready()
        if key is not None:
            await self._handle(key)
        return key

    async def _handle(self, key: ObjectKey) -> None:
        try:
            await self._process(key)
            if key in self._kube_outage:
                self._kube_outage.discard(key)
                log.info("Kubernetes API reachable again", extra={"object": str(key)})
        except asyncio.CancelledError:
            raise
        except KubeError as exc:
            if not is_kube_outage(exc):
                log.exception("reconcile crashed", extra={"object": str(key)})
            elif key not in self._kube_outage:
                # An apiserver restart or overload, not a bug: once per object and outage,
                # no traceback; the retries back off like any failed reconcile.
                self._kube_outage.add(key)
                log.warning(
                    "Kubernetes API unavailable, retrying with backoff: %s", exc, extra={"object": str(key)}
                )
            await self.queue.add_rate_limited(key)
        except Exception:
            log.exception("reconcile crashed", extra={"object": str(key)})
            await self.queue.add_rate_limited(key)
        finally:
            await self.queue.done(key)

    async def _process(self, key: ObjectKey) -> None:
        record = self.objects.get(key)
        if record is None:
            self.queue.forget(key)  # deleted while a failed reconcile was requeued: no count kept
            return
        if not self.owns(record.body):
            return  # another replica's; requeued when ownership changes (stop_work)
        record.handled = trigger_snapshot(record.body)
        try:
            if self.secret_guard is not None:  # before any remote create
                await self.secret_guard.protect(key, record.body)
            obj = ObjectState.from_body(record.body)
            started = self._clock()
            token = _reconciling.set(key)
            try:
                outcome = await reconcile(obj, self.context)
            finally:
                _reconciling.reset(token)
            self.metrics.observe_reconcile(_RESULTS[outcome.result], self._clock() - started)
            if self.objects.get(key) is record:
                await self._after(key, outcome)
        finally:
            if self.objects.get(key) is not record:
                # Deleted while this reconcile awaited (the Secret guard, credentials, Mixpeek):
                # _drop ran before the reconcile registered the object again. Undo that, or the
                # dead key would keep a listing polling, a Secret's dependents set, a client and
                # a create mark forever.
                self._forget_registrations(key)
                self.context.create_attempts.discard(str((record.body.get("metadata") or {}).get("uid")))

    async def _after(self, key: ObjectKey, outcome: Outcome) -> None:
        record = self.objects.get(key)
        if outcome.result in ("paused", "deleted"):
            self.observer.leave(key)
        if outcome.group is not None:
            sync_id = (record.body.get("status") or {}).get("syncConfigId") if record else None
            self.observer.settle(key, outcome.group, sync_id)
        if outcome.result == "error":
            await self.queue.add_rate_limited(key, outcome.retry_after)
            return
        self.queue.forget(key)
        if outcome.ready and record is not None and not record.ready_reported:
            record.ready_reported = True
            self._observe_time_to_ready(record)
        if outcome.requeue_after is not None:
            await self.queue.add(key, outcome.requeue_after)

    def _observe_time_to_ready(self, record: TrackedObject) -> None:
        created = (record.body.get("metadata") or {}).get("creationTimestamp")
        if created:
            age = self._now() - datetime.fromisoformat(created.replace("Z", "+00:00"))
            self.metrics.observe_time_to_ready(max(0.0, age.total_seconds()))

    # --- for metrics and probes --------------------------------------------------------------------

    def readiness_summary(self) -> Iterable[tuple[str, str]]:
        """(Ready status, reason) of each object this replica reconciles: a standby, or a shard
        that does not own an object, leaves it out, so summed over replicas each counts once."""
        for record in list(self.objects.values()):
            if not self.owns(record.body):
                continue
            ready = _ready_condition(record.body)
            yield (str(ready.get("status", "Unknown")), str(ready.get("reason", "")))
