"""Sharding (active/active): the live replicas split the objects between them by listing group.

Each replica holds its own member Lease through `LeaseHolder`, so its fencing is the leader's:
it stops all work when it cannot renew for the renew deadline. It lists the ring's Leases
every retry period and applies the rules of `ring` (membership, rendezvous assignment, the
join delay and the view's freshness) to decide which keys it owns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from mixpeek_operator.coordination.holder import Clock, LeaseHolder, LeaseHook
from mixpeek_operator.coordination.lease import LeaseTimings, list_leases
from mixpeek_operator.coordination.ring import (
    RING_LABEL,
    MembershipView,
    Ownership,
    ShardKey,
    lease_name_for,
)
from mixpeek_operator.kube import KubeClient, KubeError
from mixpeek_operator.supervision import Supervisor

log = logging.getLogger(__name__)


class ShardCoordinator:
    """This replica's member Lease, its view of the ring, and the keys it owns.

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
        timings: LeaseTimings,
        on_change: Callable[[], Awaitable[None]],
        on_members: Callable[[int], None] | None = None,
        on_lease: LeaseHook | None = None,
        clock: Clock = time.monotonic,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.kube, self.namespace, self.ring, self.identity = kube, namespace, ring, identity
        self.timings = timings
        self._on_change, self._on_members = on_change, on_members
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
        self.lease = LeaseHolder(
            kube,
            namespace=namespace,
            name=lease_name_for(ring, identity),
            identity=identity,
            timings=timings,
            labels={RING_LABEL: ring},
            on_acquired=self._joined,
            on_lost=self._left,
            on_lease=on_lease,
            clock=clock,
            supervisor=self._supervisor,
            task_kind="shard-lease",
        )

    # --- ownership -------------------------------------------------------------------------

    @property
    def members(self) -> frozenset[str]:
        return self.ownership.members

    def active(self) -> bool:
        """Owning anything at all (see `ring.Ownership`)."""
        return self.ownership.active(self._clock(), self.lease.held())

    def owns(self, key: ShardKey) -> bool:
        now, lease_valid = self._clock(), self.lease.held()
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

    # --- the ring --------------------------------------------------------------------------

    async def _watch_ring(self) -> None:
        while True:
            # A view that went stale while we slept stops the work now, not after the next list.
            await self._restart_if_changed(False)
            await self._restart_if_changed(await self._refresh_view())
            await asyncio.sleep(self._until_view_expiry(self.timings.retry_period))

    def _until_view_expiry(self, at_most: float) -> float:
        """`at_most` seconds, or fewer if the current view goes stale sooner."""
        expiry, now = self.ownership.view_expiry(), self._clock()
        return min(at_most, expiry - now) if expiry is not None and expiry > now else at_most

    async def _refresh_view(self) -> bool:
        """List the ring and update the view; True when the owned key space may have changed."""
        now = self._clock()
        try:
            # Bounded (by the view's expiry too), so that a view going stale is noticed and
            # the work stopped in time: before a joiner we could not see owns our groups.
            async with asyncio.timeout(self._until_view_expiry(2 * self.timings.retry_period)):
                leases = await list_leases(self.kube, self.namespace, f"{RING_LABEL}={self.ring}")
        except (KubeError, TimeoutError) as exc:
            log.warning("cannot list shard ring %s: %s", self.ring, exc)
            return False
        lapsed = self.ownership.lapsed(self._clock())
        self.view.observe(leases, now)
        members = self.view.members(now)
        changed = self.ownership.view(members, now)
        if changed:
            log.info("shard ring %s members: %s", self.ring, sorted(members))
            if self._on_members is not None:
                self._on_members(len(members))
        # After a stale view, restart even with the same members: the restart drops our
        # listings, which could miss a sync another replica created in the meantime.
        return changed or lapsed

    async def _restart_if_changed(self, changed: bool) -> None:
        """Restart the work when the owned key space may have changed."""
        # Objects skipped while we owned nothing (a stale view) are queued again once we do.
        active = self.active()
        if changed or active != self._was_active or (active and self._skipped):
            self._was_active = active
            self._skipped = False
            await self._on_change()
