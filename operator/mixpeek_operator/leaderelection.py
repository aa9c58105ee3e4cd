"""Leader election on a `coordination.k8s.io/v1` Lease, with client-go's leaderelection semantics.

One Lease names the leader (`spec.holderIdentity`). Candidates read it every retry period;
the holder renews it, the others take it over only when it was released (empty holder) or
has not changed for `leaseDurationSeconds` as measured by their *own* clock since they
first saw that version (no clock sync between nodes is assumed). Every write carries the
`resourceVersion` just read, so of two candidates racing for an expired lease exactly one
wins (the other gets 409 Conflict).

Fencing is by time: the leader counts itself leader only until `renew_deadline` after the
start of its last successful renewal, and `renew_deadline < lease_duration`, so it has
stopped working (every write cancelled) before any standby may take over. Released on
shutdown with an empty holder and `leaseDurationSeconds: 1`, as client-go's
`ReleaseOnCancel` does, so a standby takes over at its next retry instead of waiting for
expiry.

The decision logic (`LeaseTracker`) is pure and tested with an injected clock; the loop
(`LeaderElector`) does the I/O through `KubeClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

from mixpeek_operator.kube import LEASES, KubeClient, KubeConflict, KubeError
from mixpeek_operator.supervision import Supervisor

log = logging.getLogger("mixpeek_operator.leaderelection")

DEFAULT_LEASE_NAME: Final = "mixpeek-operator"
# Retries are spread by up to this fraction of the retry period, so candidates do not poll
# in lock step (client-go uses 1.2; smaller keeps takeover after a release within ~1 period).
RETRY_JITTER: Final = 0.1

Clock = Callable[[], float]
WallClock = Callable[[], datetime]
Callback = Callable[[], Awaitable[None]]


def operator_identity(environ: Mapping[str, str] | None = None) -> str:
    """This process's name, for kopf and in Leases: the pod name (downward API `POD_NAME`).

    Outside a pod (or without POD_NAME): the host name (`HOSTNAME`, else the system's) plus a
    random suffix, as controller-runtime does, so two processes on one machine, or pods sharing a
    `spec.hostname`, never share an identity. Never the user name: kopf's default calls
    getpass.getuser(), which raises KeyError for a UID without a passwd entry (the chart's 65532,
    or any UID OpenShift assigns).
    """
    env = os.environ if environ is None else environ
    pod = env.get("POD_NAME", "").strip()
    if pod:
        return pod
    host = env.get("HOSTNAME", "").strip() or socket.gethostname()
    return f"{host}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class ElectionTimings:
    """client-go's defaults: lease 15 s, renew deadline 10 s, retry 2 s."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.retry_period > 0:
            raise ValueError("the retry period must be positive")
        if not self.renew_deadline > self.retry_period * (1 + RETRY_JITTER):
            raise ValueError("the renew deadline must be longer than the retry period (plus its jitter)")
        if not self.lease_duration > self.renew_deadline:
            # The margin between the two is what keeps an old leader from overlapping a new one.
            raise ValueError("the lease duration must be longer than the renew deadline")
        if self.lease_duration != int(self.lease_duration):
            raise ValueError("the lease duration is whole seconds (leaseDurationSeconds)")


def micro_time(moment: datetime) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseRecord:
    """`Lease.spec`: who holds it, for how long, and how often it changed hands."""

    holder: str = ""
    duration_seconds: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def from_lease(cls, lease: Mapping[str, Any]) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def to_spec(self) -> dict[str, Any]:
        return {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.duration_seconds,
            "acquireTime": self.acquire_time,
            "renewTime": self.renew_time,
            "leaseTransitions": self.transitions,
        }


class LeaseTracker:
    """What one candidate knows about a Lease, and what it would write; no I/O.

    `observed_at` is this process's clock when the record last *changed*, which is what
    expiry is measured from (client-go's observedTime): the holder's renewTime comes from
    another machine's clock and is never compared with ours.
    """

    def __init__(self, identity: str, lease_duration: float) -> None:
        self.identity = identity
        self.lease_duration = lease_duration
        self.observed: LeaseRecord | None = None
        self.observed_at: float = 0.0

    def observe(self, record: LeaseRecord, now: float) -> None:
        if record != self.observed:
            self.observed, self.observed_at = record, now

    def expires_at(self) -> float | None:
        """When (our clock) the observed holder's lease expires unless renewed; None if free."""
        record = self.observed
        if record is None or not record.holder:
            return None
        return self.observed_at + record.duration_seconds

    def held_by_other(self, now: float) -> bool:
        """Someone else holds the lease and it has not expired by our clock."""
        record = self.observed
        if record is None or not record.holder or record.holder == self.identity:
            return False
        return self.observed_at + record.duration_seconds > now

    def claim(self, wall: datetime) -> LeaseRecord:
        """The record that acquires or renews the lease for us."""
        stamp = micro_time(wall)
        current = self.observed
        if current is not None and current.holder == self.identity:
            return replace(current, duration_seconds=int(self.lease_duration), renew_time=stamp)
        return LeaseRecord(
            holder=self.identity,
            duration_seconds=int(self.lease_duration),
            acquire_time=stamp,
            renew_time=stamp,
            transitions=current.transitions + 1 if current is not None else 0,
        )

    def released(self, wall: datetime) -> LeaseRecord:
        """client-go's release: empty holder, 1 s duration, transitions kept."""
        stamp = micro_time(wall)
        transitions = self.observed.transitions if self.observed is not None else 0
        return LeaseRecord(
            holder="", duration_seconds=1, acquire_time=stamp, renew_time=stamp, transitions=transitions
        )


def lease_body(
    namespace: str,
    name: str,
    record: LeaseRecord,
    resource_version: str | None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        metadata["labels"] = dict(labels)
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    return {
        "apiVersion": LEASES.api_version,
        "kind": "Lease",
        "metadata": metadata,
        "spec": record.to_spec(),
    }


class LeaseClient:
    """Read and optimistically write one Lease; every failure is reported as "did not win"."""

    def __init__(
        self, kube: KubeClient, namespace: str, name: str, labels: Mapping[str, str] | None = None
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.labels = dict(labels or {})
        self.resource_version: str | None = None  # of the version we last read or wrote

    async def read(self) -> LeaseRecord | None:
        """The current record, or None when the Lease does not exist. Raises KubeError."""
        body = await self.kube.get_object(LEASES, self.namespace, self.name)
        if body is None:
            self.resource_version = None
            return None
        self.resource_version = (body.get("metadata") or {}).get("resourceVersion")
        return LeaseRecord.from_lease(body)

    async def write(self, record: LeaseRecord, *, create: bool) -> bool:
        """Create, or replace the version last read; False when someone else wrote first."""
        body = lease_body(
            self.namespace, self.name, record, None if create else self.resource_version, self.labels
        )
        try:
            if create:
                result = await self.kube.create_object(LEASES, self.namespace, body, write="lease")
            else:
                result = await self.kube.replace_object(LEASES, self.namespace, body, write="lease")
        except KubeConflict:
            return False
        self.resource_version = (result.get("metadata") or {}).get("resourceVersion")
        return True


class LeaderElector:
    """Campaign for a Lease, run `on_started_leading` while holding it, step down when it cannot be renewed.

    After losing the lease the elector campaigns again (the process keeps its caches warm);
    `stop()` ends the campaign and releases the lease if held, after `on_stopped_leading`
    has returned (so no write of ours can follow the release).
    """

    def __init__(
        self,
        kube: KubeClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        timings: ElectionTimings | None = None,
        labels: Mapping[str, str] | None = None,
        on_started_leading: Callback,
        on_stopped_leading: Callback,
        on_transition: Callable[[bool], None] | None = None,
        clock: Clock = time.monotonic,
        wall: WallClock = lambda: datetime.now(UTC),
        supervisor: Supervisor | None = None,
        task_kind: str = "leader-election",
    ) -> None:
        self.identity = identity
        self.timings = timings or ElectionTimings()
        self.lease = LeaseClient(kube, namespace, name, labels)
        self.tracker = LeaseTracker(identity, self.timings.lease_duration)
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._on_transition = on_transition
        self._clock = clock
        self._wall = wall
        self._leading = False
        self._valid_until = 0.0
        self._task: asyncio.Task[None] | None = None
        # An unexpected exception (in a callback, or parsing a Lease) restarts the campaign
        # after a backoff instead of ending it for good.
        self._supervisor = supervisor or Supervisor()
        self._task_kind = task_kind

    @property
    def lease_name(self) -> str:
        return f"{self.lease.namespace}/{self.lease.name}"

    def is_leader(self) -> bool:
        """True while we hold the lease and are within the renew deadline of the last renewal."""
        return self._leading and self._clock() < self._valid_until

    def start(self) -> None:
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
        """One attempt (client-go's tryAcquireOrRenew); True when we hold the lease afterwards."""
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
        """Hand the lease back at once if we hold it (a no-op otherwise)."""
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
            self._set_leading(True)
            try:
                await self._on_started()
                await self._renew_until_lost()
            finally:
                self._set_leading(False)
                # Shielded: a stop() arriving now must still wait for the work to end.
                await asyncio.shield(self._on_stopped())

    def _set_leading(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        if leading:
            log.info(
                "became leader of %s as %s", self.lease_name, self.identity, extra={"lease": self.lease_name}
            )
        else:
            log.warning("stopped leading %s", self.lease_name, extra={"lease": self.lease_name})
        if self._on_transition is not None:
            self._on_transition(leading)

    def _retry_delay(self) -> float:
        return self.timings.retry_period * (1 + RETRY_JITTER * random.random())

    async def _acquire(self) -> None:
        announced = False
        while not await self.try_acquire_or_renew():
            holder = self.tracker.observed.holder if self.tracker.observed else ""
            if not announced:
                log.info(
                    "standing by: lease %s is held by %s",
                    self.lease_name,
                    holder or "nobody",
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
            while True:
                remaining = self._valid_until - self._clock()
                if remaining <= 0:
                    log.error(
                        "could not renew lease %s within %.0fs: stepping down",
                        self.lease_name,
                        self.timings.renew_deadline,
                        extra={"lease": self.lease_name},
                    )
                    return
                try:
                    # asyncio.timeout, not wait_for, which can drop a cancellation on Python 3.11.
                    async with asyncio.timeout(remaining):
                        renewed = await self.try_acquire_or_renew()
                except TimeoutError:
                    renewed = False
                if renewed:
                    break
                if self.tracker.held_by_other(self._clock()):
                    holder = self.tracker.observed.holder if self.tracker.observed else ""
                    log.error(
                        "lease %s was taken by %s", self.lease_name, holder, extra={"lease": self.lease_name}
                    )
                    return
                await asyncio.sleep(
                    min(self.timings.retry_period, max(0.0, self._valid_until - self._clock()))
                )
