"""The remote cache: one paged listing per listing scope (credential, Mixpeek namespace,
bucket), refreshed on a jittered interval, shared by every object in that scope.

An idle fleet costs one list per bucket per interval and no Kubernetes writes: after each
listing only the objects whose remote sync changed (by a digest of the fields status and
drift depend on) are enqueued. Reconciles read the cache (`lookup`, `listing`) and write
through it (`remember`, `forget`), so a listing that was in flight while we wrote never
rolls our write back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

from mixpeek_operator.desired import owner_of
from mixpeek_operator.keys import ListingScope, ObjectKey
from mixpeek_operator.mixpeek import MixpeekError, SyncListing
from mixpeek_operator.mixpeek.models import SyncConfiguration
from mixpeek_operator.supervision import Supervisor
from mixpeek_operator.workqueue import Backoff

log = logging.getLogger("mixpeek_operator.observer")

# How long a reconcile waits for its scope's first listing before falling back to a GET.
PRIME_WAIT_SECONDS = 30.0
# Backoff between failed listings of one scope.
_LISTING_BACKOFF = Backoff(base=1.0, cap=60.0)
# The remote fields that status or drift depend on (not locks or cursors).
_PROJECTED_FIELDS = {
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
}


class Lister(Protocol):
    """What the observer needs of a Mixpeek client."""

    async def list_all_syncs(self, bucket_id: str, /, *, page_size: int) -> SyncListing: ...


@dataclass(frozen=True)
class ObserverSettings:
    interval: float = 60.0
    jitter: float = 0.1
    page_size: int = 1000


def remote_projection(sync: SyncConfiguration | None) -> str | None:
    """A digest of the remote fields that status or drift depend on."""
    return None if sync is None else _digest(sync)


def _digest(sync: SyncConfiguration) -> str:
    data = sync.model_dump(mode="json", include=_PROJECTED_FIELDS)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _projection(listing: Listing, sync_id: str) -> str | None:
    """remote_projection() of the listing's sync, reusing the last one while the sync is equal.

    Observation cost per interval grows with the fleet (10,000 syncs every pass); dumping and
    hashing each one was most of it, and most are unchanged from the previous pass.
    """
    current = listing.syncs.get(sync_id)
    if current is None:
        return None
    memo = listing.projections.get(sync_id)
    equal = memo is not None and (memo[0] is current or memo[0] == current)
    projection = memo[1] if memo is not None and equal else _digest(current)
    listing.projections[sync_id] = (current, projection)  # holds the current model, not the old
    return projection


def _owner_keys(sync: SyncConfiguration) -> list[str]:
    """The index entries of a sync's ownership marker: its uid, and its namespace/name when it has
    a uid (what reconcile's ownership test matches on)."""
    uid, ref = owner_of(sync)
    if uid is None:
        return []
    return [f"uid:{uid}"] if ref is None else [f"uid:{uid}", f"ref:{ref}"]


def _newest_first(syncs: list[SyncConfiguration]) -> list[SyncConfiguration]:
    return sorted(syncs, key=lambda s: s.created_at or datetime.min.replace(tzinfo=UTC), reverse=True)


@dataclass
class _Member:
    sync_id: str | None = None  # the object's remote sync, once a reconcile found it
    seen: str | None = None  # projection of that sync the object was last reconciled against


@dataclass
class Listing:
    """One scope's cache and the state of its polling loop."""

    scope: ListingScope
    client: Lister
    members: dict[ObjectKey, _Member] = field(default_factory=dict)
    syncs: dict[str, SyncConfiguration] = field(default_factory=dict)
    # sync id -> (the model a projection was computed from, the projection): an unchanged sync
    # is compared (==, a few µs) instead of dumped and hashed again on every pass
    projections: dict[str, tuple[SyncConfiguration, str]] = field(default_factory=dict)
    touched: dict[str, float] = field(default_factory=dict)  # sync id -> when we last wrote it
    # ownership marker ("uid:…", "ref:ns/name") -> sync ids: finding an object's sync costs the
    # few syncs it owns, not a sort and scan of the bucket (a bulk create would be quadratic)
    owners: dict[str, set[str]] = field(default_factory=dict)
    fetched_at: float | None = None
    primed: asyncio.Event = field(default_factory=asyncio.Event)
    error: MixpeekError | None = None
    failures: int = 0
    task: asyncio.Task[None] | None = None
    lists: int = 0
    pages: int = 0


class Observer:
    """The remote cache (one listing per scope) and the polling loops that refresh it."""

    def __init__(
        self,
        settings: ObserverSettings,
        enqueue: Callable[[ObjectKey], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        supervisor: Supervisor | None = None,
    ) -> None:
        self._settings = settings
        self._enqueue = enqueue
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        # A listing loop that crashes on something unexpected is restarted, never silently lost.
        self._supervisor = supervisor or Supervisor(clock=clock, sleep=sleep)
        self.listings: dict[ListingScope, Listing] = {}
        self._membership: dict[ObjectKey, ListingScope] = {}
        self._suspended = False  # between suspend() and resume(): members kept, nothing listed

    def sizes(self) -> dict[str, int]:
        """How many entries each internal map holds (the soak benchmark checks they stay bounded)."""
        listings = self.listings.values()
        return {
            "observer.listings": len(self.listings),
            "observer.membership": len(self._membership),
            "observer.members": sum(len(listing.members) for listing in listings),
            "observer.syncs": sum(len(listing.syncs) for listing in listings),
            "observer.owner_index": sum(len(listing.owners) for listing in listings),
            "observer.touched": sum(len(listing.touched) for listing in listings),
        }

    # --- membership ------------------------------------------------------------------------

    def join(self, obj: ObjectKey, scope: ListingScope, client: Lister) -> None:
        previous = self._membership.get(obj)
        if previous is not None and previous != scope:
            self.leave(obj)
        listing = self.listings.get(scope)
        if listing is None:
            listing = self.listings[scope] = Listing(scope=scope, client=client)
            if not self._suspended:
                self._start_polling(listing)
        listing.client = client
        listing.members.setdefault(obj, _Member())
        self._membership[obj] = scope

    def _start_polling(self, listing: Listing) -> None:
        scope = listing.scope
        listing.task = self._supervisor.spawn(
            f"observe {scope.mixpeek_namespace}/{scope.bucket}",
            lambda: self._poll(listing),
            kind="observer",
        )

    def leave(self, obj: ObjectKey) -> None:
        scope = self._membership.pop(obj, None)
        listing = self.listings.get(scope) if scope else None
        if listing is None:
            return
        listing.members.pop(obj, None)
        if not listing.members:
            if listing.task is not None:
                listing.task.cancel()
            del self.listings[listing.scope]

    def settle(self, obj: ObjectKey, scope: ListingScope, sync_id: str | None) -> None:
        """After a reconcile: the object's remote sync as it now is counts as seen."""
        listing = self.listings.get(scope)
        member = listing.members.get(obj) if listing else None
        if listing is None or member is None:
            return
        member.sync_id = sync_id
        member.seen = _projection(listing, sync_id) if sync_id else None

    # --- the cache (reconcile.RemoteCache) -------------------------------------------------

    async def _wait_primed(self, listing: Listing) -> None:
        if not listing.primed.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PRIME_WAIT_SECONDS):  # not wait_for: see WorkQueue.get
                    await listing.primed.wait()

    def _fresh(self, listing: Listing) -> bool:
        return (
            listing.fetched_at is not None
            and self._clock() - listing.fetched_at < 2 * self._settings.interval
        )

    async def lookup(
        self, scope: ListingScope, sync_id: str
    ) -> SyncConfiguration | Literal["unknown"] | None:
        listing = self.listings.get(scope)
        if listing is None:
            return "unknown"
        await self._wait_primed(listing)
        sync = listing.syncs.get(sync_id)
        # Absent from a listing is not proof of deletion (it may be newer): let the caller GET.
        return sync if sync is not None and self._fresh(listing) else "unknown"

    async def owned(self, scope: ListingScope, uid: str, ref: str) -> list[SyncConfiguration] | None:
        listing = self.listings.get(scope)
        if listing is None:
            return None
        await self._wait_primed(listing)
        if listing.fetched_at is None:
            # Not listed yet (failing or slow): the caller lists what it needs itself, and must
            # not take "absent" for "never created".
            return None
        ids = listing.owners.get(f"uid:{uid}", set()) | listing.owners.get(f"ref:{ref}", set())
        return _newest_first([listing.syncs[sync_id] for sync_id in ids])

    def remember(self, scope: ListingScope, sync: SyncConfiguration) -> None:
        listing = self.listings.get(scope)
        if listing is None or not sync.sync_config_id:
            return
        self._unindex(listing, sync.sync_config_id)
        listing.syncs[sync.sync_config_id] = sync
        self._index(listing, sync)
        listing.touched[sync.sync_config_id] = self._clock()

    def forget(self, scope: ListingScope, sync_id: str) -> None:
        listing = self.listings.get(scope)
        if listing is None:
            return
        self._unindex(listing, sync_id)
        listing.syncs.pop(sync_id, None)
        listing.touched[sync_id] = self._clock()

    @staticmethod
    def _index(listing: Listing, sync: SyncConfiguration) -> None:
        for key in _owner_keys(sync):
            listing.owners.setdefault(key, set()).add(sync.sync_config_id or "")

    @staticmethod
    def _unindex(listing: Listing, sync_id: str) -> None:
        old = listing.syncs.get(sync_id)
        for key in _owner_keys(old) if old is not None else []:
            ids = listing.owners[key]
            ids.discard(sync_id)
            if not ids:
                del listing.owners[key]

    # --- polling -----------------------------------------------------------------------------

    async def _poll(self, listing: Listing) -> None:
        while True:
            await self._sleep(await self.refresh(listing))

    async def refresh(self, listing: Listing) -> float:
        """List the scope once, enqueue the members whose sync changed; the delay to the next list."""
        started = self._clock()
        try:
            result = await listing.client.list_all_syncs(
                listing.scope.bucket, page_size=self._settings.page_size
            )
        except MixpeekError as exc:
            listing.failures += 1
            listing.error = exc
            listing.primed.set()  # waiters fall back to GETs and see the error there
            log.warning(
                "listing bucket %s failed: %s",
                listing.scope.bucket,
                exc,
                extra={"bucket": listing.scope.bucket},
            )
            retry_after = getattr(exc, "retry_after", None) or 0.0
            return max(retry_after, _LISTING_BACKOFF.delay(listing.failures, self._jitter()))
        listing.failures, listing.error = 0, None
        listing.lists += 1
        listing.pages += result.pages_fetched
        self._store(listing, result.syncs, started)
        listing.projections = {k: v for k, v in listing.projections.items() if k in listing.syncs}
        for obj, member in list(listing.members.items()):
            if member.sync_id is None:
                continue
            projection = _projection(listing, member.sync_id)
            if member.seen != projection:
                member.seen = projection
                self._enqueue(obj)
        spread = self._settings.jitter * (2 * self._jitter() - 1)
        return self._settings.interval * (1 + spread)

    def _store(self, listing: Listing, syncs: list[SyncConfiguration], started: float) -> None:
        listed = {sync.sync_config_id: sync for sync in syncs if sync.sync_config_id}
        # Keep what we wrote while the list was in flight; the listing may predate it.
        for sync_id, when in listing.touched.items():
            if when >= started:
                if sync_id in listing.syncs:
                    listed[sync_id] = listing.syncs[sync_id]
                else:
                    listed.pop(sync_id, None)
        listing.syncs = listed
        listing.owners = {}
        for sync in listed.values():
            self._index(listing, sync)
        listing.touched = {k: v for k, v in listing.touched.items() if v >= started}
        listing.fetched_at = started
        listing.primed.set()

    async def close(self) -> None:
        await self._cancel_polling()
        self.listings.clear()
        self._membership.clear()
        self._suspended = False

    async def suspend(self) -> None:
        """Stop listing (no remote call until `resume`) but keep who is a member of which scope
        and what each last saw. The cached syncs are dropped: the listing that `resume` starts
        is made afresh, so a sync another replica created meanwhile cannot be missed, and the
        first pass enqueues only the members whose sync changed."""
        await self._cancel_polling()
        self.listings = {
            scope: Listing(scope=scope, client=listing.client, members=listing.members)
            for scope, listing in self.listings.items()
        }
        self._suspended = True

    def resume(self) -> None:
        """List every scope that still has members again (after `suspend`; a no-op otherwise)."""
        self._suspended = False
        for listing in self.listings.values():
            if listing.task is None:
                self._start_polling(listing)

    async def _cancel_polling(self) -> None:
        tasks = [listing.task for listing in self.listings.values() if listing.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for listing in self.listings.values():
            listing.task = None
