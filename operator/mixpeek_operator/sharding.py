"""Sharding (active/active): the live replicas split the objects between them by listing group.

Membership comes from one Lease per replica (`<ring>-<identity>`, labelled with the ring),
each held and renewed by its replica through the same `LeaderElector` that runs leader
election, so a replica's fencing is the same: it stops all work when it cannot renew for
the renew deadline. A replica's view of the members is the set of ring Leases that are held
and have changed within their duration by its own clock (client-go's expiry rule).

Assignment is rendezvous (highest-random-weight) hashing of a shard key over the live
members. The shard key is (credentials Secret, bucket), so one listing group (credential x
Mixpeek namespace x bucket) is always owned by one replica and listed once per interval
fleet-wide. Rendezvous hashing moves only what must move: when a member leaves, only its
keys move; when one joins, only the keys it now wins move to it.

Handover rules, so that two replicas never reconcile one object at once:
- A departed member's keys are taken only once its Lease expired (so, by its fencing, it
  stopped working at least `lease_duration - renew_deadline` earlier) or was released (it
  releases only after its work stopped).
- A joining member owns nothing until `join_delay` (the lease duration) after it first
  holds its Lease. Every other member lists the ring every retry period and drops the keys
  the joiner wins at once; a member that could not list the ring for the join delay (less a
  retry period) owns nothing until it can, so by the end of the join delay every previous owner has
  either let go or stopped.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from mixpeek_operator.kube import KubeClient, KubeError
from mixpeek_operator.leaderelection import (
    LEASE_GROUP,
    LEASE_PLURAL,
    LEASE_VERSION,
    ElectionTimings,
    LeaderElector,
    LeaseRecord,
)
from mixpeek_operator.secret_index import named_secret_of
from mixpeek_operator.supervision import Supervisor

log = logging.getLogger("mixpeek_operator.sharding")

RING_LABEL: Final = "mixpeek.com/shard-ring"
ShardKey = tuple[str, str, str]  # (Secret namespace, Secret name, bucket id)
Clock = Callable[[], float]


def rendezvous_owner(key: str, members: Iterable[str]) -> str | None:
    """The member with the highest hash of (member, key); None when there is no member."""
    best: tuple[int, str] | None = None
    for member in members:
        digest = hashlib.blake2b(f"{member}\0{key}".encode(), digest_size=8).digest()
        score = (int.from_bytes(digest, "big"), member)
        if best is None or score > best:
            best = score
    return best[1] if best is not None else None


def shard_key_of(body: Mapping[str, Any], default_secret: tuple[str, str] | None) -> ShardKey | None:
    """The object's shard key from its spec alone (no Secret read), or None when it has none.

    Keyed by the Secret, not by the API key inside it, so that rotating a key never moves
    objects between replicas.
    """
    secret = named_secret_of(body) or default_secret or ("", "")
    return (secret[0], secret[1], str((body.get("spec") or {}).get("bucketId", "")))


def lease_name_for(ring: str, identity: str) -> str:
    """A valid Lease name for a replica: lower case, `-` for anything else, at most 253 chars."""
    name = re.sub(r"[^a-z0-9.-]+", "-", f"{ring}-{identity}".lower()).strip("-.")
    return name[:253]


@dataclass
class _Seen:
    record: LeaseRecord
    since: float  # our clock when this version was first seen


class MembershipView:
    """Which replicas are live, by our clock; pure (tested with an injected clock)."""

    def __init__(self) -> None:
        self._seen: dict[str, _Seen] = {}  # lease name -> last version seen

    def observe(self, leases: Mapping[str, LeaseRecord], now: float) -> None:
        for name in list(self._seen):
            if name not in leases:
                del self._seen[name]  # deleted: its holder is gone
        for name, record in leases.items():
            seen = self._seen.get(name)
            if seen is None or seen.record != record:
                self._seen[name] = _Seen(record, now)

    def members(self, now: float) -> set[str]:
        return {
            seen.record.holder
            for seen in self._seen.values()
            if seen.record.holder and seen.since + seen.record.duration_seconds > now
        }


class Ownership:
    """The handover rules as a pure state machine over our clock (tested without I/O).

    A replica owns keys only while all hold: it has held its own Lease for `join_delay`
    (so every previous owner has seen it and let go, or stopped), its Lease is still valid
    (fencing), and its view of the ring is fresher than `view_ttl` (it would otherwise miss
    a joiner and keep keys the joiner is about to take).
    """

    def __init__(self, identity: str, join_delay: float, view_ttl: float) -> None:
        self.identity = identity
        self.join_delay = join_delay
        self.view_ttl = view_ttl
        self.joined_at: float | None = None
        self.viewed_at: float | None = None
        self.members: frozenset[str] = frozenset()

    def join(self, now: float) -> None:
        self.joined_at = now

    def leave(self) -> None:
        self.joined_at = None

    def view(self, members: Iterable[str], now: float) -> bool:
        """Record a fresh view of the ring; True when the members changed."""
        members = frozenset(members)
        changed = members != self.members
        self.members, self.viewed_at = members, now
        return changed

    def view_expiry(self) -> float | None:
        """When the current view goes stale (and with it all ownership), or None before the first."""
        return None if self.viewed_at is None else self.viewed_at + self.view_ttl

    def lapsed(self, now: float) -> bool:
        """Whether the current view has gone stale by `now`. Until a fresh one, this replica owned
        nothing and another may have owned (and created syncs in) its groups, so even with the
        same members it must restart its work: what it listed before is not to be trusted."""
        expiry = self.view_expiry()
        return expiry is not None and now >= expiry

    def active(self, now: float, lease_valid: bool) -> bool:
        return (
            lease_valid
            and self.joined_at is not None
            and now >= self.joined_at + self.join_delay
            and self.viewed_at is not None
            and now - self.viewed_at < self.view_ttl
        )

    def owns(self, key: ShardKey, now: float, lease_valid: bool) -> bool:
        if not self.active(now, lease_valid):
            return False
        return rendezvous_owner("\0".join(key), self.members | {self.identity}) == self.identity


class ShardCoordinator:
    """This replica's Lease, its view of the ring, and the keys it owns.

    `on_change` is awaited whenever the owned key space may have changed (members joined
    or left, this replica started or stopped owning anything); the engine then restarts its
    work, which cancels what it no longer owns and queues everything again.
    """

    def __init__(
        self,
        kube: KubeClient,
        *,
        namespace: str,
        ring: str,
        identity: str,
        timings: ElectionTimings,
        on_change: Callable[[], Awaitable[None]],
        on_members: Callable[[int], None] | None = None,
        clock: Clock = time.monotonic,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.ring = ring
        self.identity = identity
        self.timings = timings
        self._on_change = on_change
        self._on_members = on_members
        self._clock = clock
        self.view = MembershipView()
        # A view older than the join delay could miss a joiner that already owns its keys; one
        # retry period of margin for clock-rate differences.
        self.ownership = Ownership(
            identity,
            join_delay=timings.lease_duration,
            view_ttl=timings.lease_duration - timings.retry_period,
        )
        self._was_active = False
        self._skipped = False  # an object was skipped because we owned nothing at the time
        self._tasks: list[asyncio.Task[None]] = []
        self._join: asyncio.Task[None] | None = None
        self._supervisor = supervisor or Supervisor()
        self.lease = LeaderElector(
            kube,
            namespace=namespace,
            name=lease_name_for(ring, identity),
            identity=identity,
            timings=timings,
            labels={RING_LABEL: ring},
            on_started_leading=self._joined,
            on_stopped_leading=self._left,
            clock=clock,
            supervisor=self._supervisor,
            task_kind="shard-lease",
        )

    # --- ownership -------------------------------------------------------------------------

    @property
    def members(self) -> frozenset[str]:
        return self.ownership.members

    def active(self) -> bool:
        """Owning anything at all (see `Ownership`)."""
        return self.ownership.active(self._clock(), self.lease.is_leader())

    def owns(self, key: ShardKey) -> bool:
        now, lease_valid = self._clock(), self.lease.is_leader()
        if not self.ownership.active(now, lease_valid):
            # The engine drops what it skips: queue everything again once we own keys again,
            # even if the pause was too short for the ring loop to see it.
            self._skipped = True
            return False
        return self.ownership.owns(key, now, lease_valid)

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        self.lease.start()
        self._tasks.append(
            self._supervisor.spawn(f"shard-ring {self.ring}", self._watch_ring, kind="shard-ring")
        )

    async def stop(self) -> None:
        for task in [*self._tasks, *([self._join] if self._join else [])]:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.lease.stop()  # stops our work, then releases our lease: the others take over

    async def _joined(self) -> None:
        delay = self.ownership.join_delay
        log.info("joined shard ring %s as %s; owning keys after %.0fs", self.ring, self.identity, delay)
        self.ownership.join(self._clock())
        self._join = self._supervisor.spawn(
            f"shard-join {self.ring}", lambda: self._settle_after(delay), kind="shard-join"
        )

    async def _settle_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._skipped = False
        await self._on_change()

    async def _left(self) -> None:
        if self._join is not None:
            self._join.cancel()
        self.ownership.leave()
        log.warning("left shard ring %s", self.ring)
        await self._on_change()

    async def _watch_ring(self) -> None:
        while True:
            # A view that went stale while we slept stops the work now, not after the next list.
            await self._restart_if_changed(False)
            now = self._clock()
            budget = 2 * self.timings.retry_period
            expiry = self.ownership.view_expiry()
            if expiry is not None and expiry > now:
                budget = min(budget, expiry - now)
            try:
                # Bounded (by the view's expiry too), so that a view going stale is noticed and
                # the work stopped in time: before a joiner we could not see owns our groups.
                async with asyncio.timeout(budget):
                    items = await self.kube.list_objects(
                        LEASE_GROUP,
                        LEASE_VERSION,
                        LEASE_PLURAL,
                        self.namespace,
                        label_selector=f"{RING_LABEL}={self.ring}",
                    )
            except (KubeError, TimeoutError) as exc:
                log.warning("cannot list shard ring %s: %s", self.ring, exc)
                changed = False
            else:
                lapsed = self.ownership.lapsed(self._clock())
                self.view.observe(
                    {item["metadata"]["name"]: LeaseRecord.from_lease(item) for item in items}, now
                )
                members = self.view.members(now)
                changed = self.ownership.view(members, now)
                if changed:
                    log.info("shard ring %s members: %s", self.ring, sorted(members))
                    if self._on_members is not None:
                        self._on_members(len(members))
                # After a stale view, restart even with the same members: the restart drops our
                # listings, which could miss a sync another replica created in the meantime.
                changed = changed or lapsed
            await self._restart_if_changed(changed)
            pause = self.timings.retry_period
            expiry = self.ownership.view_expiry()
            if expiry is not None and expiry > self._clock():
                pause = min(pause, expiry - self._clock())
            await asyncio.sleep(pause)

    async def _restart_if_changed(self, changed: bool) -> None:
        """Restart the work when the owned key space may have changed."""
        # Objects skipped while we owned nothing (a stale view) are queued again once we do.
        active = self.active()
        if changed or active != self._was_active or (active and self._skipped):
            self._was_active = active
            self._skipped = False
            await self._on_change()
