"""The shard map of `kubectl mixpeek status` under label shards: who is a member, who holds the
assigner Lease, how many objects each member owns, and which objects nobody reconciles.

Read from the cluster in two LISTs: the ring's Leases (by the ring label; the assigner Lease is
`<ring>-assigner`) and the BucketSyncs the status view lists anyway. Counting and rendering are
pure (tested with plain data). A member is live when its Lease is held and its renewTime plus
its duration is still ahead of this machine's clock: a one-shot reader cannot use the
operator's own rule (expiry measured from when it saw the Lease change), so clock skew between
this machine and the replicas shifts the verdict by the skew.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from mixpeek_operator.coordination.lease import LeaseRecord
from mixpeek_operator.coordination.ring import RING_LABEL
from mixpeek_operator.kube import LEASES, JsonObject, KubeForbidden
from mixpeek_operator.plugin.session import Session, age, table

# The label-shard names of the shared design (issue 21). TODO(integrator): import OWNER_LABEL,
# DRAIN_LABEL, the mode annotation and member_label from coordination.assignment once it lands.
OWNER_LABEL: Final = "shard.mixpeek.com/owner"
DRAIN_LABEL: Final = "shard.mixpeek.com/drain-to"
MODE_ANNOTATION: Final = "shard.mixpeek.com/mode"
LABEL_MODE: Final = "labels"
ASSIGNER_SUFFIX: Final = "-assigner"
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def member_label(identity: str) -> str:
    """The owner label value of a member: its identity when that is a valid label value."""
    if len(identity) <= 63 and _LABEL_VALUE.match(identity):
        return identity
    return "m-" + hashlib.blake2b(identity.encode(), digest_size=10).hexdigest()


@dataclass(frozen=True)
class Member:
    """One member Lease of the ring, as this machine's clock judges it."""

    lease: str
    identity: str  # the holder; "" once released
    mode: str  # "labels", or "rendezvous" for a replica of the earlier mode (mid-upgrade)
    renewed: str | None
    live: bool

    @property
    def label(self) -> str:
        return member_label(self.identity) if self.identity else ""

    @property
    def state(self) -> str:
        return "live" if self.live else ("released" if not self.identity else "expired")


@dataclass
class ShardMap:
    """A ring's members and how the counted objects are spread over them."""

    namespace: str
    ring: str
    scope: str  # which objects were counted, in words
    members: list[Member]
    assigner: Member | None = None  # the `<ring>-assigner` Lease, if any
    owned: Counter[str] = field(default_factory=Counter)  # owner label value -> objects
    draining: Counter[str] = field(default_factory=Counter)  # owner label value -> objects told to move
    incoming: Counter[str] = field(default_factory=Counter)  # drain-to value -> objects
    unassigned: int = 0
    total: int = 0

    @property
    def live_labels(self) -> set[str]:
        return {m.label for m in self.members if m.live}

    @property
    def without_live_owner(self) -> int:
        """Objects labelled with an owner that is not a live member: nobody reconciles them."""
        live = self.live_labels
        return sum(count for owner, count in self.owned.items() if owner not in live)

    @property
    def owners_without_lease(self) -> list[str]:
        """Owner labels that name no member Lease at all (a replica long gone, a hand-written label)."""
        return sorted(set(self.owned) - {m.label for m in self.members})

    @property
    def healthy(self) -> bool:
        return self.unassigned == 0 and self.without_live_owner == 0


def is_live(lease: Mapping[str, Any], now: datetime) -> bool:
    record = LeaseRecord.from_lease(lease)
    if not record.holder or not record.renew_time:
        return False
    try:
        renewed = datetime.fromisoformat(record.renew_time.replace("Z", "+00:00"))
    except ValueError:
        return False
    if renewed.tzinfo is None:
        renewed = renewed.replace(tzinfo=UTC)
    return renewed + timedelta(seconds=record.duration_seconds) > now


def in_label_mode(lease: Mapping[str, Any]) -> bool:
    return ((lease.get("metadata") or {}).get("annotations") or {}).get(MODE_ANNOTATION) == LABEL_MODE


def member_of(lease: Mapping[str, Any], now: datetime) -> Member:
    meta = lease.get("metadata") or {}
    record = LeaseRecord.from_lease(lease)
    return Member(
        lease=str(meta.get("name", "")),
        identity=record.holder,
        mode=LABEL_MODE if in_label_mode(lease) else "rendezvous",
        renewed=record.renew_time,
        live=is_live(lease, now),
    )


def rings_of(leases: Iterable[JsonObject]) -> dict[tuple[str, str], list[JsonObject]]:
    """Member Leases by (namespace, ring); only rings with a label-mode member (others have no
    owner labels to show, and the view stays as it was)."""
    rings: dict[tuple[str, str], list[JsonObject]] = {}
    for lease in leases:
        meta = lease.get("metadata") or {}
        ring = (meta.get("labels") or {}).get(RING_LABEL)
        if ring and meta.get("name") != ring + ASSIGNER_SUFFIX:
            rings.setdefault((str(meta.get("namespace", "")), ring), []).append(lease)
    return {key: members for key, members in rings.items() if any(in_label_mode(m) for m in members)}


def count(shard_map: ShardMap, objects: Iterable[Mapping[str, Any]]) -> ShardMap:
    """Add the objects' owner and drain labels to the map (labels only; nothing else is read)."""
    for obj in objects:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        shard_map.total += 1
        owner = labels.get(OWNER_LABEL)
        if not owner:
            shard_map.unassigned += 1
            continue
        shard_map.owned[owner] += 1
        target = labels.get(DRAIN_LABEL)
        if target:
            shard_map.draining[owner] += 1
            shard_map.incoming[target] += 1
    return shard_map


def build(
    namespace: str,
    ring: str,
    member_leases: Iterable[Mapping[str, Any]],
    assigner_lease: Mapping[str, Any] | None,
    objects: Iterable[Mapping[str, Any]],
    scope: str,
    now: datetime,
) -> ShardMap:
    members = sorted((member_of(lease, now) for lease in member_leases), key=lambda m: (m.identity, m.lease))
    assigner = member_of(assigner_lease, now) if assigner_lease else None
    return count(ShardMap(namespace, ring, scope, members, assigner), objects)


# --- reading the cluster ----------------------------------------------------------------------


async def read_rings(
    session: Session, ring: str | None, ring_namespace: str | None
) -> list[tuple[str, str, list[JsonObject], JsonObject | None]]:
    """(namespace, ring, member Leases, assigner Lease) of every label-shard ring in view.

    Without --ring-namespace the Leases are listed cluster-wide; a user who may not do that
    gets no map unless a ring was asked for by name (then the refusal is the answer).
    """
    selector = f"{RING_LABEL}={ring}" if ring else RING_LABEL
    try:
        leases = await session.kube.list_objects(LEASES, ring_namespace, label_selector=selector)
    except KubeForbidden:
        if ring or ring_namespace:
            raise
        return []
    found = []
    for (namespace, name), members in sorted(rings_of(leases).items()):
        assigner = await session.kube.get_object(LEASES, namespace, name + ASSIGNER_SUFFIX)
        found.append((namespace, name, members, assigner))
    return found


# --- output -----------------------------------------------------------------------------------


def render(shard_map: ShardMap, now: datetime | None = None) -> str:
    assigner = shard_map.assigner
    rows = []
    for member in shard_map.members:
        label = member.label
        holds_assigner = assigner is not None and assigner.live and assigner.identity == member.identity
        rows.append(
            [
                member.identity or f"({member.lease})",
                member.state,
                age(member.renewed, now),
                member.mode,
                str(shard_map.owned.get(label, 0)) if label else "-",
                str(shard_map.draining.get(label, 0)) if label else "-",
                str(shard_map.incoming.get(label, 0)) if label else "-",
                "yes" if holds_assigner else "",
            ]
        )
    for owner in shard_map.owners_without_lease:
        owned, draining = str(shard_map.owned[owner]), str(shard_map.draining[owner])
        rows.append([owner, "no member", "-", "-", owned, draining, "0", ""])
    headers = ["MEMBER", "LEASE", "RENEWED", "MODE", "OBJECTS", "DRAINING", "INCOMING", "ASSIGNER"]
    if assigner is None:
        who = "none (no assigner Lease yet)"
    elif assigner.live:
        lease = shard_map.ring + ASSIGNER_SUFFIX
        who = f"{assigner.identity} (Lease {lease}, renewed {age(assigner.renewed, now)} ago)"
    else:
        who = f"none live (Lease {shard_map.ring}{ASSIGNER_SUFFIX} {assigner.state})"
    lines = [
        f"Shard ring {shard_map.ring} (Leases in namespace {shard_map.namespace}), label shards;"
        f" objects counted: {shard_map.scope}",
        table(headers, rows).rstrip("\n"),
        f"Assigner: {who}",
        f"Objects: {shard_map.total}; unassigned (no owner label) {shard_map.unassigned};"
        f" owner not a live member {shard_map.without_live_owner};"
        f" draining {sum(shard_map.draining.values())}",
    ]
    return "\n".join(lines) + "\n"


def data(shard_map: ShardMap) -> dict[str, Any]:
    """The map for `-o yaml|json`."""
    assigner = shard_map.assigner
    return {
        "ring": shard_map.ring,
        "namespace": shard_map.namespace,
        "scope": shard_map.scope,
        "assigner": assigner.identity if assigner is not None and assigner.live else None,
        "members": [
            {
                "identity": m.identity,
                "lease": m.lease,
                "state": m.state,
                "renewTime": m.renewed,
                "mode": m.mode,
                "ownerLabel": m.label,
                "objects": shard_map.owned.get(m.label, 0) if m.label else 0,
                "draining": shard_map.draining.get(m.label, 0) if m.label else 0,
                "incoming": shard_map.incoming.get(m.label, 0) if m.label else 0,
            }
            for m in shard_map.members
        ],
        "ownersWithoutLease": {owner: shard_map.owned[owner] for owner in shard_map.owners_without_lease},
        "objects": shard_map.total,
        "unassigned": shard_map.unassigned,
        "withoutLiveOwner": shard_map.without_live_owner,
        "draining": sum(shard_map.draining.values()),
    }
