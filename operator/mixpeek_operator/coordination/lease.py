"""One `coordination.k8s.io/v1` Lease: its record, client-go's rules about it, and reading and writing it.

A Lease names its holder (`spec.holderIdentity`). Whoever wants it reads it every retry
period; the holder renews it, the others take it over only when it was released (empty
holder) or has not changed for `leaseDurationSeconds` as measured by their *own* clock since
they first saw that version (no clock sync between nodes is assumed). Every write carries the
`resourceVersion` just read, so of two candidates racing for an expired lease exactly one
wins (the other gets 409 Conflict).

The decisions (`LeaseTracker`) are pure and tested with an injected clock; `LeaseClient` does
the I/O through `KubeClient`, and `holder.LeaseHolder` runs the acquire/renew/release loop.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

from mixpeek_operator.kube import KubeClient, KubeConflict

LEASE_GROUP: Final = "coordination.k8s.io"
LEASE_VERSION: Final = "v1"
LEASE_PLURAL: Final = "leases"
# Retries are spread by up to this fraction of the retry period, so candidates do not poll
# in lock step (client-go uses 1.2; smaller keeps takeover after a release within ~1 period).
RETRY_JITTER: Final = 0.1


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
class LeaseTimings:
    """How long a Lease lasts, how long its holder may go without renewing it, how often it is read.

    client-go's defaults: lease 15 s, renew deadline 10 s, retry 2 s.
    """

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.retry_period > 0:
            raise ValueError("the retry period must be positive")
        if not self.renew_deadline > self.retry_period * (1 + RETRY_JITTER):
            raise ValueError("the renew deadline must be longer than the retry period (plus its jitter)")
        if not self.lease_duration > self.renew_deadline:
            # The margin between the two is what keeps an old holder from overlapping a new one.
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
        "apiVersion": f"{LEASE_GROUP}/{LEASE_VERSION}",
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
        body = await self.kube.get_object(LEASE_GROUP, LEASE_VERSION, LEASE_PLURAL, self.namespace, self.name)
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
                result = await self.kube.create_object(
                    LEASE_GROUP, LEASE_VERSION, LEASE_PLURAL, self.namespace, body, write="lease"
                )
            else:
                result = await self.kube.replace_object(
                    LEASE_GROUP, LEASE_VERSION, LEASE_PLURAL, self.namespace, body, write="lease"
                )
        except KubeConflict:
            return False
        self.resource_version = (result.get("metadata") or {}).get("resourceVersion")
        return True


async def list_leases(kube: KubeClient, namespace: str, label_selector: str) -> dict[str, LeaseRecord]:
    """The records of the Leases matching a label selector, by name. Raises KubeError."""
    items = await kube.list_objects(
        LEASE_GROUP, LEASE_VERSION, LEASE_PLURAL, namespace, label_selector=label_selector
    )
    return {item["metadata"]["name"]: LeaseRecord.from_lease(item) for item in items}
