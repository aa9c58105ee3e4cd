"""The shard ring's pure rules: who is a member, which member owns a key, when a member owns anything.

Membership comes from one Lease per replica (`<ring>-<identity>`, labelled with the ring): a
replica's view of the members is the set of ring Leases that are held and have changed within
their duration by its own clock (client-go's expiry rule).

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

All of it is tested with an injected clock and no I/O; `sharding.ShardCoordinator` runs it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from mixpeek_operator.coordination.lease import LeaseRecord
from mixpeek_operator.secret_index import named_secret_of

RING_LABEL: Final = "mixpeek.com/shard-ring"
ShardKey = tuple[str, str, str]  # (Secret namespace, Secret name, bucket id)


def rendezvous_owner(key: str, members: Iterable[str]) -> str | None:
    """The member with the highest hash of (member, key); None when there is no member."""
    best: tuple[int, str] | None = None
    for member in members:
        score = (_score(member, key), member)
        if best is None or score > best:
            best = score
    return best[1] if best is not None else None


def rendezvous_ranking(key: str, members: Iterable[str]) -> list[str]:
    """The members by their hash of (member, key), highest first: `rendezvous_owner` is the first."""
    return sorted(members, key=lambda member: (_score(member, key), member), reverse=True)


def _score(member: str, key: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{member}\0{key}".encode(), digest_size=8).digest(), "big")


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

    def next_expiry(self, now: float) -> float | None:
        """When (our clock) the first live member's Lease expires unless renewed, or None."""
        expiries = [
            seen.since + seen.record.duration_seconds
            for seen in self._seen.values()
            if seen.record.holder and seen.since + seen.record.duration_seconds > now
        ]
        return min(expiries, default=None)

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
