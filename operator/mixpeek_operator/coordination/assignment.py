"""Label shards' pure rules: who owns an object, when it may move, and the assigner's plan.

Each `BucketSync` carries its owner in a label (`OWNER_LABEL`); every replica watches only the
objects labelled with its own name. One elected assigner writes the labels. Its plan for a
listing group (credentials Secret x bucket: the ring's shard key, so a bucket is listed by one
replica) follows these rules, and nothing here does I/O:

- The target of a group is `ring.rendezvous_owner` over the live members: the same function
  and key as rendezvous sharding, so replicas of both modes agree during a rolling upgrade.
- An unlabelled object is labelled with its group's target at once, unless the group is
  moving: then it waits, so the new owner never lists the group while the old one still works.
- An object whose owner is a live label-mode member moves in three writes: the assigner sets
  `DRAIN_LABEL` (the handshake's request), the owner stops all work on it and sets
  `DRAINED_ANNOTATION` (the acknowledgement), and only then does the assigner move the owner
  label (pinned to the resourceVersion it read). Never two writers.
- An object whose owner is no longer a live member moves at once: that member's Lease expired
  (it stopped working `lease_duration - renew_deadline` earlier, by its fencing) or was released
  (after its work stopped).
- A rendezvous-mode member (an old replica mid-upgrade, its Lease lacks `MODE_LABEL`)
  ignores labels and never acknowledges; it drops a key as soon as it sees the key's new owner
  among the members. So objects move from it, and while any is live objects are labelled, to a
  label-mode member only once that member has been live for the join delay (the lease
  duration): by then every old replica has seen it and let go, or stopped.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from mixpeek_operator.coordination.ring import rendezvous_ranking

OWNER_LABEL: Final = "shard.mixpeek.com/owner"
DRAIN_LABEL: Final = "shard.mixpeek.com/drain-to"
DRAINED_ANNOTATION: Final = "shard.mixpeek.com/drained-by"
MODE_LABEL: Final = "shard.mixpeek.com/mode"  # on a member Lease: a label-mode replica
LABEL_MODE: Final = "labels"
ASSIGNER_SUFFIX: Final = "-assigner"  # the assigner's Lease: `<ring>-assigner`, not a member
HEADROOM: Final = 0.1  # a joiner's givers keep at least (1 - HEADROOM) of their share

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def member_label(identity: str) -> str:
    """The label value naming a member: its identity when that is a valid label value (a pod
    name of at most 63 characters), else a digest of it."""
    if len(identity) <= 63 and _LABEL_VALUE.match(identity):
        return identity
    return "m-" + hashlib.blake2b(identity.encode(), digest_size=10).hexdigest()


@dataclass(frozen=True, slots=True)
class Member:
    identity: str
    label: str
    acknowledges: bool  # label mode; False for a rendezvous-mode replica
    live_since: float  # the assigner's clock when it first saw this member live


@dataclass(frozen=True, slots=True)
class Placement:
    """What the assigner reads of one object: its key, group and shard labels, nothing else.
    The assigner's owner index makes Placements without a read: no resourceVersion (""), and
    marks it cannot know (None)."""

    namespace: str
    name: str
    resource_version: str
    group: str
    owner: str | None
    drain_to: str | None
    drained_by: str | None

    @classmethod
    def of(cls, body: Mapping[str, Any], group: str) -> Placement:
        meta = body.get("metadata") or {}
        labels = meta.get("labels") or {}
        annotations = meta.get("annotations") or {}
        # Interned: a plan holds one Placement per object (40,000 and more), and namespaces,
        # groups and member names repeat across them.
        return cls(
            namespace=sys.intern(meta.get("namespace", "")),
            name=meta.get("name", ""),
            resource_version=str(meta.get("resourceVersion", "")),
            group=sys.intern(group),
            owner=_shared(labels.get(OWNER_LABEL)),
            drain_to=_shared(labels.get(DRAIN_LABEL)),
            drained_by=_shared(annotations.get(DRAINED_ANNOTATION)),
        )


def _shared(value: str | None) -> str | None:
    return sys.intern(value) if value is not None else None


ActionKind = Literal["label", "drain", "move"]


@dataclass(frozen=True, slots=True)
class Action:
    """One label write of the assigner, pinned to the resourceVersion the plan read."""

    kind: ActionKind
    placement: Placement
    to: str

    def patch(self) -> tuple[Literal["merge", "json"], Any]:
        """The write, refused if what the decision read has changed since.

        Labelling an unlabelled object is a merge patch pinned to the resourceVersion read (its
        only other writers are users). A drain or a move is a JSON patch whose `test`
        operations check the shard marks the decision read (422 if they changed): the owner
        writes status all the while, and a pinned resourceVersion would lose to every one of
        those writes although none changes the decision."""
        placement = self.placement
        if self.kind == "label":
            meta = {"resourceVersion": placement.resource_version, "labels": {OWNER_LABEL: self.to}}
            return "merge", {"metadata": meta}
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": _label_path(OWNER_LABEL), "value": placement.owner}
        ]
        if not placement.resource_version:
            # Not read (the owner index): the drain label must be absent (a `test` for null passes
            # on a missing one), as a move leaving a `drain-to` behind would be wrong. An object
            # mid-drain fails (422) and is read and decided again.
            ops.insert(0, {"op": "test", "path": _label_path(DRAIN_LABEL), "value": None})
        if self.kind == "drain":
            return "json", [*ops, {"op": "add", "path": _label_path(DRAIN_LABEL), "value": self.to}]
        if placement.drained_by is not None:
            ops.append({"op": "test", "path": _annotation_path(), "value": placement.drained_by})
        ops.append({"op": "replace", "path": _label_path(OWNER_LABEL), "value": self.to})
        if placement.drain_to is not None:
            ops.append({"op": "remove", "path": _label_path(DRAIN_LABEL)})
        if placement.drained_by is not None:
            ops.append({"op": "remove", "path": _annotation_path()})
        return "json", ops


def _label_path(label: str) -> str:
    return "/metadata/labels/" + label.replace("~", "~0").replace("/", "~1")


def _annotation_path() -> str:
    return "/metadata/annotations/" + DRAINED_ANNOTATION.replace("~", "~0").replace("/", "~1")


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    waiting: int = 0  # objects that must wait (an acknowledgement, a join delay, a moving group)
    moving_groups: set[str] = field(default_factory=set)


class Membership:
    """The live members as the assigner sees them, and the target each group gets.

    Targets are balanced by objects, not by groups: a group (a bucket's objects) cannot be
    split, and with tens of groups plain rendezvous hashing leaves one replica twice another's
    share (40 groups over 4 replicas: 5, 8, 10 and 17), which would undo what label shards are
    for, memory divided by replicas. `balance` gives each group a target with these rules:

    - sticky: a group stays with its live owner, so a member that leaves moves only its own
      groups, and a plan made again (a new assigner, the periodic pass) moves nothing;
    - a member holding nothing (a joiner) takes groups up to its share, those that rank it
      first (rendezvous) before others, from owners that stay near their share;
    - groups with no live owner (new ones, a departed member's) go, largest first, to the
      first member in their rendezvous ranking whose load stays at or below the mean with the
      group placed: equal groups split evenly (40 over 4: 10 each; with a 10 % headroom here
      they split 9/10/10/11, and the replica holding 11 used 0.38x the memory of one replica
      holding all, against 0.36x at 10).

    With a rendezvous-mode replica among the members (mid-upgrade) the targets are plain
    rendezvous: the old replicas compute it themselves and must agree.
    """

    def __init__(
        self,
        members: Iterable[Member],
        now: float,
        join_delay: float,
        previous: Membership | None = None,
    ) -> None:
        self.by_label = {member.label: member for member in members}
        self._identities = {member.identity: member for member in self.by_label.values()}
        self.now, self.join_delay = now, join_delay
        self.mixed = any(not member.acknowledges for member in self.by_label.values())
        # The balanced targets, and the objects each group holds, as of the last plan.
        self.targets: dict[str, str] = {}
        self.sizes: dict[str, int] = dict(previous.sizes) if previous is not None else {}
        if previous is not None and not self.mixed:
            self.targets = {g: m for g, m in previous.targets.items() if m in self.by_label}

    def ranking(self, group: str) -> list[Member]:
        return [self._identities[identity] for identity in rendezvous_ranking(group, self._identities)]

    def target(self, group: str, objects: int = 1) -> Member | None:
        """The group's target; a group without one is placed now (a new group's first objects)."""
        if not self.by_label:
            return None
        if self.mixed:
            return self.ranking(group)[0]
        label = self.targets.get(group)
        if label is None:
            self.sizes[group] = max(self.sizes.get(group, 0), objects)
            label = self._place(group, self._loads())
        return self.by_label[label]

    def settled(self, member: Member) -> bool:
        """Whether every rendezvous-mode replica has let go of `member`'s keys by now."""
        return member.live_since + self.join_delay <= self.now

    # --- balancing --------------------------------------------------------------------------

    def balance(self, sizes: Mapping[str, int], owners: Mapping[str, str | None]) -> None:
        """Targets for every group of a full read: `sizes` (objects per group) and `owners` (the
        live member holding most of each group's objects, or None)."""
        self.sizes = dict(sizes)
        self.targets = {}
        if self.mixed or not self.by_label:
            return
        share = sum(sizes.values()) / len(self.by_label)
        loads = dict.fromkeys(self.by_label, 0)
        for group in sorted(sizes):  # sticky
            owner = owners.get(group)
            if owner in self.by_label:
                self.targets[group] = owner
                loads[owner] += sizes[group]
        # A member holding nothing (a joiner) takes groups up to its share: those that rank it
        # first, then second, and so on, from owners that keep at least (1 - HEADROOM) of theirs.
        # Members already holding objects never take any: a member leaving moves only its own.
        floor = share * (1 - HEADROOM)
        rankings = {group: [m.label for m in self.ranking(group)] for group in self.targets}
        for member in sorted(label for label, load in loads.items() if load == 0):
            for group in sorted(self.targets, key=lambda g: (rankings[g].index(member), g)):
                giver, size = self.targets[group], sizes[group]
                if loads[member] + size / 2 > share:
                    break
                if giver != member and loads[giver] - size >= floor:
                    self.targets[group] = member
                    loads[giver] -= size
                    loads[member] += size
        for group in sorted((g for g in sizes if g not in self.targets), key=lambda g: (-sizes[g], g)):
            self._place(group, loads)

    def _loads(self) -> dict[str, int]:
        loads = dict.fromkeys(self.by_label, 0)
        for group, label in self.targets.items():
            loads[label] += self.sizes.get(group, 0)
        return loads

    def _place(self, group: str, loads: dict[str, int]) -> str:
        """The first member in the group's ranking with room for it, else the least loaded."""
        size = self.sizes.get(group, 1)
        room = (sum(loads.values()) + size) / len(self.by_label)
        ranking = [member.label for member in self.ranking(group)]
        label = next(
            (m for m in ranking if loads[m] + size <= max(room, size)),
            min(ranking, key=lambda m: (loads[m], m)),
        )
        self.targets[group] = label
        loads[label] += size
        return label


def plan_group(placements: list[Placement], membership: Membership) -> Plan:
    """The label writes that move one listing group toward its target, as far as is safe now."""
    plan = Plan()
    if placements and not membership.mixed and placements[0].group not in membership.targets:
        # Sticky when no plan placed the group yet (a new assigner, the end of an upgrade): its
        # live owner keeps it.
        holder = _holder(placements, membership)
        if holder is not None:
            membership.targets[placements[0].group] = holder
    target = membership.target(placements[0].group, len(placements)) if placements else None
    if target is None:
        plan.waiting = len(placements)
        return plan
    # Objects labelled for a live member other than the target: the group is on its way.
    moving = any(
        p.owner is not None and p.owner != target.label and p.owner in membership.by_label for p in placements
    )
    if moving:
        plan.moving_groups.add(placements[0].group)
    for placement in placements:
        action = _next_step(placement, target, membership, moving)
        if action is None:
            if placement.owner != target.label or placement.drain_to is not None:
                plan.waiting += 1
        else:
            plan.actions.append(action)
    return plan


def _next_step(placement: Placement, target: Member, membership: Membership, moving: bool) -> Action | None:
    owner = membership.by_label.get(placement.owner) if placement.owner is not None else None
    safe_for_target = target.acknowledges is False or not membership.mixed or membership.settled(target)
    if placement.owner == target.label:
        # At the target already; a drain called off (the target came back) is cleared.
        stale = placement.drain_to is not None or placement.drained_by is not None
        return Action("move", placement, target.label) if stale else None
    if placement.owner is None:
        if moving or not safe_for_target:
            return None
        return Action("label", placement, target.label)
    if owner is None:
        # The owner is gone: fenced, or it released its Lease after stopping.
        return Action("move", placement, target.label) if safe_for_target else None
    if not owner.acknowledges:
        # A rendezvous-mode replica lets go by itself once it sees the target among the members.
        return Action("move", placement, target.label) if membership.settled(target) else None
    if placement.drained_by == owner.label:
        return Action("move", placement, target.label)
    if placement.drain_to != target.label:
        return Action("drain", placement, target.label)
    return None  # asked; waiting for the owner's acknowledgement


def plan_all(placements: Iterable[Placement], membership: Membership, *, every_object: bool = True) -> Plan:
    """The plan for every group; `every_object` (a full read) balances the targets over all of
    them first, while a partial read (a departed member's objects) keeps the others' targets."""
    groups: dict[str, list[Placement]] = {}
    for placement in placements:
        groups.setdefault(placement.group, []).append(placement)
    if every_object:
        membership.balance(
            {g: len(ps) for g, ps in groups.items()}, {g: _holder(ps, membership) for g, ps in groups.items()}
        )
    total = Plan()
    for members in groups.values():
        part = plan_group(members, membership)
        total.actions.extend(part.actions)
        total.waiting += part.waiting
        total.moving_groups |= part.moving_groups
    return total


def _holder(placements: list[Placement], membership: Membership) -> str | None:
    """The live member holding most of a group's objects (a group mid-move has two)."""
    held = Counter(p.owner for p in placements if p.owner in membership.by_label)
    return held.most_common(1)[0][0] if held else None
