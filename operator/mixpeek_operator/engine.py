"""The controller engine: the thin loop between kopf's watch events, the work queue
(workqueue.py), the remote cache (observer.py) and the reconcile (reconcile.py).

kopf delivers watch events (see handlers.py); the rest has the shape of controller-runtime:

- Events update one record per `BucketSync` (its body and what its last reconcile acted
  on) and enqueue the object only when something the reconcile acts on changed
  (generation, deletion, the request annotations): our own status writes never wake it.
- Workers take keys from the queue (one reconcile per object at a time); a failure goes
  back to the queue rate-limited, a success makes the queue forget the failures.
- The observer enqueues the objects whose remote sync changed.

The engine owns its parts and wires them; each lives in its own module: the object records
(object_cache.py), the reconcile's Kubernetes writes (writer.py), the Mixpeek clients per
credential (client_pool.py), and which Secret each object names (secret_index.py, shared by
the credential store and the Secret guard).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from mixpeek_operator.client_pool import MixpeekClientPool
from mixpeek_operator.credentials import CredentialStore
from mixpeek_operator.keys import ObjectKey, key_of
from mixpeek_operator.kube import KubeError, is_kube_outage
from mixpeek_operator.metrics import OperatorMetrics, ReconcileResult
from mixpeek_operator.mixpeek import RateLimiterRegistry
from mixpeek_operator.object_cache import ObjectCache, uid_of
from mixpeek_operator.observer import Observer, ObserverSettings
from mixpeek_operator.reconcile import ObjectState, Outcome, ReconcileContext, reconcile
from mixpeek_operator.secret_guard import SecretUseGuard
from mixpeek_operator.secret_index import SecretIndex
from mixpeek_operator.settings import DEFAULTS
from mixpeek_operator.supervision import Supervisor
from mixpeek_operator.workqueue import Backoff, WorkQueue
from mixpeek_operator.writer import KubeApi, ObjectWriter

log = logging.getLogger("mixpeek_operator.engine")

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
    # This replica's identity (leader election, sharding), named in the Mixpeek User-Agent.
    replica: str | None = None


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
        # Which Secret each object names, shared by the credential store and the Secret guard.
        self.secrets = SecretIndex()
        credentials.use_index(self.secrets)
        if secret_guard is not None:
            secret_guard.use_index(self.secrets)
        self.secret_guard = secret_guard
        self.credentials = credentials
        self.metrics = metrics
        self.settings = settings
        self._clock = clock
        self._now = now
        # Sharding: whether this replica reconciles an object (always, without sharding).
        self.owns = owns or (lambda body: True)
        self.supervisor = supervisor or Supervisor(on_restart=metrics.count_task_restart, sleep=sleep)
        self.objects = ObjectCache()
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
        self.clients = MixpeekClientPool(
            settings=lambda: self.settings,
            metrics=metrics,
            on_release=self.observer.leave,  # its listings poll through the client
            rate_limiters=rate_limiters,
            transport=mixpeek_transport,
        )
        self._workers: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._kube_outage: set[ObjectKey] = set()  # objects whose last reconcile hit an outage
        # Taken from the queue but not reconciled because not owned then: stop_work (ownership
        # changed) or pause (a label shard's Lease lapsed) queues them again.
        self._skipped: set[ObjectKey] = set()
        self.context = ReconcileContext(
            writer=ObjectWriter(kube, self.objects, metrics),
            credentials=credentials,
            client_for=self.clients.client_for,
            remote=self.observer,
            now=now,
            on_drift_corrected=metrics.count_drift_correction,
        )

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start reconciling (and with it remote calls and writes); events only fill the queue before."""
        if self._workers:
            return
        self.observer.resume()
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
        await self._cancel_workers()
        await self.observer.close()
        self._skipped.clear()
        for key, record in list(self.objects.items()):
            record.handled = None
            await self.queue.add(key)

    async def pause(self) -> None:
        """Stop reconciling for a while (a label shard whose Lease lapsed), keeping what stays
        true: the objects are still ours unless the watch says otherwise, so only the
        reconciles cut short (and those skipped while not owning) are queued again, and the
        remote listings are suspended, then made afresh by `start`, which enqueues only the
        objects whose sync changed. After `stop_work` every object is reconciled again; after
        `pause` a lapse of a replica holding 10,000 objects costs what changed, not 10,000."""
        interrupted = self.queue.active()
        await self._cancel_workers()
        await self.observer.suspend()
        skipped, self._skipped = self._skipped | interrupted, set()
        for key in skipped:
            record = self.objects.get(key)
            if record is not None:
                record.handled = None
                await self.queue.add(key)

    async def _cancel_workers(self) -> None:
        workers, self._workers = self._workers, []
        while workers:
            for task in workers:
                task.cancel()
            # Cancel again what is still running: a library's asyncio.wait_for (Python 3.11)
            # can drop a cancellation, and no reconcile may outlive this call.
            _, pending = await asyncio.wait(workers, timeout=1.0)
            workers = list(pending)

    async def stop(self) -> None:
        await self.stop_work()
        await self.clients.aclose()

    # --- inputs ----------------------------------------------------------------------------------

    async def on_object_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        key = key_of(body)
        if event_type == "DELETED":
            await self._drop(key)
            return
        if self.objects.put(body).needs_reconcile(body):
            await self.queue.add(key)

    # --- label shards: an object handed over to another replica ------------------------------

    async def drain(self, key: ObjectKey) -> bool:
        """Stop all work on `key` here: no new reconcile starts, one under way finishes, and what
        it registered (listing membership, Secret use, client share) is forgotten. True once the
        object is drained (the old owner's acknowledgement may be written), False if unknown."""
        record = self.objects.get(key)
        if record is None:
            return False
        record.draining = True
        await self.queue.discard(key)
        await self.queue.wait_idle(key)
        self._forget_registrations(key)
        self._kube_outage.discard(key)
        self.context.create_attempts.discard(uid_of(record.body))
        return True

    async def resume(self, key: ObjectKey) -> None:
        """A drain was called off (the object stays here): reconcile it again."""
        record = self.objects.get(key)
        if record is not None and record.draining:
            record.draining, record.handled = False, None
            await self.queue.add(key)

    def draining(self) -> int:
        return sum(1 for record in list(self.objects.values()) if record.draining)

    async def moved_away(self, key: ObjectKey) -> None:
        """A drained object left this replica's watch: drop its record. Unlike a deletion this
        releases no Secret: the object still exists and still names it."""
        self.objects.pop(key, None)
        self._forget_registrations(key)
        await self.queue.discard(key)
        self._skipped.discard(key)

    async def _drop(self, key: ObjectKey) -> None:
        """The object is gone: its record, listing membership, Secret dependency and queue entry."""
        record = self.objects.pop(key, None)
        self._forget_registrations(key)
        await self.queue.discard(key)
        self._skipped.discard(key)
        self._kube_outage.discard(key)
        if record is not None:
            self.context.create_attempts.discard(uid_of(record.body))
        if self.secret_guard is not None:
            await self.secret_guard.object_gone(key, record.body if record else None)

    def _forget_registrations(self, key: ObjectKey) -> None:
        """What a reconcile registers for its object: listing membership, the Secret it names,
        its share of a Mixpeek client."""
        self.observer.leave(key)
        self.secrets.forget(key)
        self.clients.release(key)

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

    def sizes(self) -> dict[str, int]:
        """How many entries each internal map holds, for the soak benchmark (hack/bench/soak.py):
        every one must return to what the live objects need once objects and Secrets go."""
        return {
            "engine.objects": len(self.objects),
            "engine.kube_outage": len(self._kube_outage),
            "engine.background": len(self._background),
            "create_attempts": len(self.context.create_attempts),
            **self.clients.sizes(),
            **self.secrets.sizes(),
            **self.queue.sizes(),
            **self.observer.sizes(),
            **self.credentials.sizes(),
            **(self.secret_guard.sizes() if self.secret_guard is not None else {}),
        }

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
        if record.draining:
            return
        if not self.owns(record.body):
            # Another replica's, or ours while a label shard's Lease lapses (see _skipped).
            self._skipped.add(key)
            return
        record.mark_handled()
        try:
            if self.secret_guard is not None:  # before any remote create
                await self.secret_guard.protect(key, record.body)
            obj = ObjectState.from_body(record.body)
            started = self._clock()
            with self.clients.used_by(key):
                outcome = await reconcile(obj, self.context)
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
                self.context.create_attempts.discard(uid_of(record.body))

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
            if (age := record.age(self._now())) is not None:
                self.metrics.observe_time_to_ready(age)
        if outcome.requeue_after is not None:
            await self.queue.add(key, outcome.requeue_after)

    # --- for metrics and probes --------------------------------------------------------------------

    def readiness_summary(self) -> Iterable[tuple[str, str]]:
        """(Ready status, reason) of each object this replica reconciles: a standby, or a shard
        that does not own an object, leaves it out, so summed over replicas each counts once."""
        return self.objects.readiness(self.owns)
