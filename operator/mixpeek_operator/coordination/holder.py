"""Hold one Lease: acquire it, keep it renewed, hand it back; client-go's leaderelection loop.

Both users of a Lease run this loop: leader election (one Lease all replicas want; its holder
is the leader) and sharding (one Lease per replica; holding it is membership of the ring).

Fencing is by time: the holder counts the Lease as its own only until `renew_deadline` after
the start of its last successful renewal, and `renew_deadline < lease_duration`, so it has
stopped working (every write cancelled) before anyone else may take the Lease over. Released
on shutdown with an empty holder and `leaseDurationSeconds: 1`, as client-go's
`ReleaseOnCancel` does, so a standby takes over at its next retry instead of waiting for
expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

from mixpeek_operator.coordination.lease import RETRY_JITTER, LeaseClient, LeaseTimings, LeaseTracker
from mixpeek_operator.kube import KubeClient, KubeError
from mixpeek_operator.supervision import Supervisor

log = logging.getLogger(__name__)

Clock = Callable[[], float]
WallClock = Callable[[], datetime]
Callback = Callable[[], Awaitable[None]]
# (lease "namespace/name", held): told on every change, for the lease_held metric.
LeaseHook = Callable[[str, bool], None]


class LeaseHolder:
    """Campaign for a Lease, run `on_acquired` while holding it, `on_lost` once it cannot be renewed.

    After losing the Lease the holder campaigns again (the process keeps its caches warm);
    `stop()` ends the campaign and releases the Lease if held, after `on_lost` has returned
    (so no write of ours can follow the release).
    """

    def __init__(
        self,
        kube: KubeClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        timings: LeaseTimings,
        on_acquired: Callback,
        on_lost: Callback,
        on_transition: Callable[[bool], None] | None = None,
        on_lease: LeaseHook | None = None,
        labels: Mapping[str, str] | None = None,
        clock: Clock = time.monotonic,
        wall: WallClock = lambda: datetime.now(UTC),
        supervisor: Supervisor | None = None,
        task_kind: str = "lease",
    ) -> None:
        self.identity = identity
        self.timings = timings
        self.lease = LeaseClient(kube, namespace, name, labels)
        self.tracker = LeaseTracker(identity, timings.lease_duration)
        self._on_acquired, self._on_lost = on_acquired, on_lost
        self._on_transition, self._on_lease = on_transition, on_lease
        self._clock, self._wall = clock, wall
        self._held = False
        self._valid_until = 0.0
        self._task: asyncio.Task[None] | None = None
        # An unexpected exception (in a callback, or parsing a Lease) restarts the campaign
        # after a backoff instead of ending it for good.
        self._supervisor = supervisor or Supervisor()
        self._task_kind = task_kind

    @property
    def lease_name(self) -> str:
        return f"{self.lease.namespace}/{self.lease.name}"

    def held(self) -> bool:
        """True while we hold the Lease and are within the renew deadline of the last renewal."""
        return self._held and self._clock() < self._valid_until

    def start(self) -> None:
        if self._on_lease is not None:
            self._on_lease(self.lease_name, False)  # exported at 0 while standing by, not absent
        self._task = self._supervisor.spawn(
            f"{self._task_kind} {self.lease_name}", self.run, kind=self._task_kind
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.release()

    async def try_acquire_or_renew(self) -> bool:
        """One attempt (client-go's tryAcquireOrRenew); True when we hold the Lease afterwards."""
        started = self._clock()
        try:
            current = await self.lease.read()
            if current is not None:
                self.tracker.observe(current, started)
                if self.tracker.held_by_other(started):
                    return False
            claim = self.tracker.claim(self._wall())
            won = await self.lease.write(claim, create=current is None)
        except KubeError as exc:
            log.warning("lease %s: %s", self.lease_name, exc, extra={"lease": self.lease_name})
            return False
        if won:
            self.tracker.observe(claim, started)
            # Measured from before the read: any other candidate saw our write later than this.
            self._valid_until = started + self.timings.renew_deadline
        return won

    async def release(self) -> None:
        """Hand the Lease back at once if we hold it (a no-op otherwise)."""
        record = self.tracker.observed
        if record is None or record.holder != self.identity:
            return
        released = self.tracker.released(self._wall())
        try:
            # Bounded: an unreachable API server must not hold up shutdown (the lease expires anyway).
            async with asyncio.timeout(self.timings.renew_deadline):
                released_ok = await self.lease.write(released, create=False)
            if released_ok:
                self.tracker.observe(released, self._clock())
                log.info("released lease %s", self.lease_name, extra={"lease": self.lease_name})
        except (KubeError, TimeoutError) as exc:
            log.warning(
                "could not release lease %s: %s", self.lease_name, exc, extra={"lease": self.lease_name}
            )

    async def run(self) -> None:
        while True:
            await self._acquire()
            self._set_held(True)
            try:
                await self._on_acquired()
                await self._renew_until_lost()
            finally:
                self._set_held(False)
                # Shielded: a stop() arriving now must still wait for the work to end.
                await asyncio.shield(self._on_lost())

    def _set_held(self, held: bool) -> None:
        if held == self._held:
            return
        self._held = held
        if self._on_transition is not None:
            self._on_transition(held)
        if self._on_lease is not None:
            self._on_lease(self.lease_name, held)

    def _retry_delay(self) -> float:
        return self.timings.retry_period * (1 + RETRY_JITTER * random.random())

    def _holder_seen(self) -> str:
        return self.tracker.observed.holder if self.tracker.observed else ""

    async def _acquire(self) -> None:
        announced = False
        while not await self.try_acquire_or_renew():
            if not announced:
                log.info(
                    "standing by: lease %s is held by %s",
                    self.lease_name,
                    self._holder_seen() or "nobody",
                    extra={"lease": self.lease_name},
                )
                announced = True
            # Try again at the next retry, or the moment the holder's lease expires if sooner.
            delay = self._retry_delay()
            expiry = self.tracker.expires_at()
            if expiry is not None:
                delay = min(delay, max(0.0, expiry - self._clock()) + 0.01)
            await asyncio.sleep(delay)

    async def _renew_until_lost(self) -> None:
        while True:
            await asyncio.sleep(self.timings.retry_period)
            if not await self._renew_within_deadline():
                return

    async def _renew_within_deadline(self) -> bool:
        """Retry the renewal until it succeeds (True), the deadline passes or another holder took over."""
        while True:
            remaining = self._valid_until - self._clock()
            if remaining <= 0:
                log.error(
                    "could not renew lease %s within %.0fs: stepping down",
                    self.lease_name,
                    self.timings.renew_deadline,
                    extra={"lease": self.lease_name},
                )
                return False
            try:
                # asyncio.timeout, not wait_for, which can drop a cancellation on Python 3.11.
                async with asyncio.timeout(remaining):
                    if await self.try_acquire_or_renew():
                        return True
            except TimeoutError:
                pass
            if self.tracker.held_by_other(self._clock()):
                log.error(
                    "lease %s was taken by %s",
                    self.lease_name,
                    self._holder_seen(),
                    extra={"lease": self.lease_name},
                )
                return False
            await asyncio.sleep(min(self.timings.retry_period, max(0.0, self._valid_until - self._clock())))
