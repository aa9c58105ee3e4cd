"""The shard assigner: the one replica holding `<ring>-assigner` writes every owner label.

It keeps no cache of the objects. It reads them in full only on a membership change (and every
`resync_period`, to repair what a lost write left), one page at a time and keeping a few strings
per object; between those, two label-selector watches bring it only what needs it: unlabelled
objects (new ones, labelled at once) and objects being drained (to see acknowledgements). The
rules it applies are assignment.py's; every write is a merge patch pinned to the
resourceVersion the decision read, so a stale decision fails (409) and is taken again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from mixpeek_operator.coordination.assignment import (
    DRAIN_LABEL,
    LABEL_MODE,
    MODE_LABEL,
    OWNER_LABEL,
    Action,
    ActionKind,
    Member,
    Membership,
    Placement,
    member_label,
    plan_all,
    plan_group,
)
from mixpeek_operator.coordination.lease import LeaseRecord, LeaseTimings
from mixpeek_operator.coordination.ring import RING_LABEL, MembershipView, shard_key_of
from mixpeek_operator.keys import ObjectKey
from mixpeek_operator.kube import (
    BUCKETSYNCS,
    LEASES,
    KubeClient,
    KubeConflict,
    KubeError,
    KubeInvalid,
    KubeNotFound,
    ListWatch,
)
from mixpeek_operator.secret_index import SecretRef
from mixpeek_operator.supervision import Supervisor

log = logging.getLogger(__name__)

# Label patches in flight at once: few, so the assigner's bulk labelling (40,000 objects on a
# first plan) leaves the API server's queue to the members' reconciles and Lease renewals.
WRITE_CONCURRENCY: Final = 8
# A full pass repairs what a lost write left; events and membership changes do the rest, so it
# is rare: at 40,000 objects each pass reads every object once.
RESYNC_PERIOD: Final = 1800.0


def group_of(body: Mapping[str, Any], default_secret: SecretRef | None) -> str:
    key = shard_key_of(body, default_secret)
    return "\0".join(key) if key is not None else ""


@dataclass
class _MovingGroup:
    """A group on its way to `target`: the objects still to move, the new ones held back."""

    target: str
    pending: set[ObjectKey] = field(default_factory=set)
    held_back: set[ObjectKey] = field(default_factory=set)


class Assigner:
    """Runs while this replica holds the assigner Lease (`run` is cancelled when it stops)."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        lease_namespace: str,
        ring: str,
        namespaces: tuple[str, ...],
        timings: LeaseTimings,
        default_secret: SecretRef | None,
        on_assignments: Callable[[ActionKind, int], None] = lambda kind, n: None,
        on_watch_events: Callable[[int], None] = lambda n: None,
        on_members: Callable[[int], None] = lambda n: None,
        clock: Callable[[], float] = time.monotonic,
        supervisor: Supervisor | None = None,
        resync_period: float = RESYNC_PERIOD,
    ) -> None:
        self.kube, self.lease_namespace, self.ring = kube, lease_namespace, ring
        self.namespaces: tuple[str | None, ...] = namespaces or (None,)
        self.timings, self.default_secret = timings, default_secret
        self._on_assignments, self._on_watch_events = on_assignments, on_watch_events
        self._on_members = on_members
        self._clock = clock
        self._supervisor = supervisor or Supervisor()
        self.resync_period = resync_period
        self.view = MembershipView()
        self._live_since: dict[str, float] = {}
        self._members: frozenset[tuple[str, bool]] = frozenset()
        self.membership = Membership((), clock(), timings.lease_duration)
        self.moving: dict[str, _MovingGroup] = {}
        self._resync_now = asyncio.Event()
        self._todo: asyncio.Queue[ObjectKey] = asyncio.Queue()
        # The write waiting for each queued object, with the membership version it was decided in.
        self._pending: dict[ObjectKey, tuple[Action, int]] = {}
        self._resyncing = True  # until the first plan: new objects wait for it
        self._departed: set[str] = set()  # members gone since the last plan (their labels)
        self._records: dict[str, LeaseRecord] = {}  # the member Leases last listed, by holder
        self._version = 0  # the membership's: a write decided under an older one is decided again
        self._full_resync = True
        self._arrived: set[ObjectKey] = set()

    # --- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        log.info("shard assigner of ring %s started", self.ring)
        watches = [
            ListWatch(
                self.kube,
                BUCKETSYNCS,
                namespace=namespace,
                label_selector=selector,
                on_event=handler,
                name=f"assigner {what} {namespace or 'all'}",
            )
            for namespace in self.namespaces
            for selector, handler, what in (
                (f"!{OWNER_LABEL}", self._unlabelled, "unlabelled"),
                (DRAIN_LABEL, self._draining, "draining"),
            )
        ]
        tasks = [self._supervisor.spawn(watch.name, watch.run, kind="assigner-watch") for watch in watches]
        tasks += [
            self._supervisor.spawn(f"assigner writer {index}", self._writer, kind="assigner-writer")
            for index in range(WRITE_CONCURRENCY)
        ]
        try:
            await self._members_settled()
            self._resync_now.set()
            await asyncio.gather(self._watch_members(), self._resync_loop())
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            log.info("shard assigner of ring %s stopped", self.ring)

    async def _members_settled(self) -> None:
        """Before the first plan, wait until the members stop changing (two retry periods) and
        each was seen renewing its Lease (at most a lease duration): the replicas of a new
        Deployment start seconds apart, and a plan made on the first of them would give it
        everything, to be drained away again a moment later; and a replica killed just before
        leaves a Lease that looks live to a new observer until it expires."""
        started = self._clock()
        await self._refresh_members()
        first = dict(self._records)
        quiet = 0
        while self._clock() - started < self.timings.lease_duration + self.timings.retry_period:
            live = self.view.members(self._clock())
            unconfirmed = [holder for holder in live if first.get(holder) == self._records.get(holder)]
            if quiet >= 2 and not unconfirmed:
                return
            await asyncio.sleep(self.timings.retry_period)
            quiet = 0 if await self._refresh_members() else quiet + 1

    async def _watch_members(self) -> None:
        while True:
            # Every retry period, and at the moment a member's Lease would expire: a killed
            # replica's objects move a lease duration after its last renewal, not a period later.
            expiry, now = self.view.next_expiry(self._clock()), self._clock()
            wait = (
                self.timings.retry_period if expiry is None else min(self.timings.retry_period, expiry - now)
            )
            await asyncio.sleep(max(0.05, wait))
            if await self._refresh_members():
                self._resync_now.set()

    async def _resync_loop(self) -> None:
        while True:
            # A mixed ring waits on join delays: look again once one may have passed.
            period = self.timings.lease_duration if self.membership.mixed else self.resync_period
            try:
                async with asyncio.timeout(period):
                    await self._resync_now.wait()
            except TimeoutError:
                pass
            self._resync_now.clear()
            departed, self._departed = self._departed, set()
            full, self._full_resync = self._full_resync or not departed, False
            try:
                if full:
                    await self.resync()
                else:
                    await self.resync(owners=departed)
            except KubeError as exc:
                self._full_resync = True
                log.warning("shard assigner could not list the objects: %s", exc)
                await asyncio.sleep(self.timings.retry_period)
                self._resync_now.set()

    # --- membership ----------------------------------------------------------------------------

    async def _refresh_members(self) -> bool:
        """List the ring's member Leases; True when the live members (or their modes) changed."""
        try:
            items = await self.kube.list_objects(
                LEASES, self.lease_namespace, label_selector=f"{RING_LABEL}={self.ring}"
            )
        except KubeError as exc:
            log.warning("shard assigner cannot list ring %s: %s", self.ring, exc)
            return False
        now = self._clock()
        records = {item["metadata"]["name"]: LeaseRecord.from_lease(item) for item in items}
        self.view.observe(records, now)
        self._records = {record.holder: record for record in records.values() if record.holder}
        label_mode = {
            LeaseRecord.from_lease(item).holder
            for item in items
            if (item["metadata"].get("labels") or {}).get(MODE_LABEL) == LABEL_MODE
        }
        live = self.view.members(now)
        for identity in live:
            self._live_since.setdefault(identity, now)
        for identity in set(self._live_since) - live:
            del self._live_since[identity]
        members = frozenset((identity, identity in label_mode) for identity in live)
        previous_mixed = self.membership.mixed
        self.membership = Membership(
            (
                Member(identity, member_label(identity), acks, self._live_since[identity])
                for identity, acks in members
            ),
            now,
            self.timings.lease_duration,
            previous=self.membership,
        )
        changed = members != self._members
        before = {member_label(identity) for identity, _ in self._members}
        after = {member_label(identity) for identity, _ in members}
        self._departed |= before - after
        # A member joined or changed mode: groups may move anywhere, so the plan reads everything;
        # members that only left moved nothing but their own objects, read by their label alone.
        # So did the end of an upgrade (the last rendezvous-mode replica gone): the targets are
        # balanced from then on.
        self._full_resync = (
            self._full_resync
            or bool(after - before)
            or (changed and before == after)
            or (previous_mixed and not self.membership.mixed)
        )
        if changed:
            log.info("shard assigner: members of ring %s: %s", self.ring, sorted(live))
            self._on_members(len(live))
        self._members = members
        self._version += changed
        return changed

    # --- full passes ---------------------------------------------------------------------------

    async def resync(self, owners: set[str] | None = None) -> None:
        """Read every object (a page at a time, a few strings each) and apply the plan; with
        `owners`, only the objects labelled for those (departed) members."""
        if owners is not None:
            await self._resync_departed(owners)
            return
        self._resyncing = True
        try:
            placements = await self._placements()
        finally:
            self._resyncing = False
        plan = plan_all(placements, self.membership)
        # The groups still on their way, with the objects each waits for.
        self.moving = {}
        for placement in placements:
            target = self.membership.target(placement.group)
            if placement.group in plan.moving_groups and target is not None:
                moving = self.moving.setdefault(placement.group, _MovingGroup(target.label))
                if placement.owner != target.label:
                    (moving.pending if placement.owner is not None else moving.held_back).add(_key(placement))
        log.info(
            "shard assigner: %d objects, %d writes, %d waiting, %d groups moving",
            len(placements),
            len(plan.actions),
            plan.waiting,
            len(self.moving),
        )
        # Unlabelled objects that arrived while the list ran, and that it may have missed.
        arrived, self._arrived = self._arrived, set()
        listed = {_key(placement) for placement in placements}
        self._supersede(placements)
        await self._apply_all(plan.actions)
        await asyncio.gather(*(self._reconsider(key) for key in arrived - listed))

    async def _resync_departed(self, owners: set[str]) -> None:
        """Move the objects of members that left: a Lease released (after its work stopped) or
        expired (its holder fenced itself). Nothing else moves when a member leaves."""
        placements = await self._placements(f"{OWNER_LABEL} in ({','.join(sorted(owners))})")
        self._supersede(placements)
        plan = plan_all(placements, self.membership, every_object=False)
        log.info(
            "shard assigner: %d objects of departed members %s, %d writes",
            len(placements),
            sorted(owners),
            len(plan.actions),
        )
        await self._apply_all(plan.actions)

    async def _placements(self, label_selector: str | None = None) -> list[Placement]:
        placements: list[Placement] = []
        for namespace in self.namespaces:
            token: str | None = None
            while True:
                page = await self.kube.list_page(
                    BUCKETSYNCS, namespace, label_selector=label_selector, continue_token=token
                )
                placements.extend(self._placement(item) for item in page.get("items") or ())
                if not (token := (page.get("metadata") or {}).get("continue")):
                    break
        return placements

    # --- watch events --------------------------------------------------------------------------

    async def _unlabelled(self, event_type: str, body: Mapping[str, Any]) -> None:
        self._on_watch_events(1)
        if event_type != "DELETED":
            await self._consider(self._placement(body))

    async def _consider(self, placement: Placement) -> None:
        """Label a new object now, or hold it back while its group moves or a plan is made."""
        if placement.owner is None:
            if self._resyncing:
                self._arrived.add(_key(placement))
                return
            moving = self.moving.get(placement.group)
            if moving is not None:
                moving.held_back.add(_key(placement))
                return
        await self._apply_all(plan_group([placement], self.membership).actions)

    async def _draining(self, event_type: str, body: Mapping[str, Any]) -> None:
        self._on_watch_events(1)
        placement = self._placement(body)
        if event_type == "DELETED":  # moved (its drain label went with the move) or deleted
            await self._settled(placement)
            return
        if placement.drained_by is not None and placement.drained_by == placement.owner:
            await self._consider(placement)  # acknowledged: the move

    async def _settled(self, placement: Placement) -> None:
        """`placement` is at its target (or gone): release its group's held-back objects once none waits."""
        moving = self.moving.get(placement.group)
        if moving is None:
            return
        moving.pending.discard(_key(placement))
        if moving.pending:
            return
        del self.moving[placement.group]
        log.info(
            "shard assigner: a group moved to %s; labelling %d new objects",
            moving.target,
            len(moving.held_back),
        )
        await asyncio.gather(*(self._reconsider(key) for key in moving.held_back))

    async def _reconsider(self, key: ObjectKey) -> None:
        """Decide again on an object from what it is now."""
        body = await self._read(key)
        if body is not None:
            await self._consider(self._placement(body))

    def _placement(self, body: Mapping[str, Any]) -> Placement:
        return Placement.of(body, group_of(body, self.default_secret))

    # --- writes --------------------------------------------------------------------------------

    async def _apply_all(self, actions: Iterable[Action]) -> None:
        """Queue the writes, one per object: a decision on a fresher read replaces one on an
        older read still waiting. `WRITE_CONCURRENCY` writers carry them out (a watch event never
        waits for a write, and 40,000 labels are not 40,000 tasks)."""
        for action in actions:
            key = _key(action.placement)
            waiting = self._pending.get(key)
            if waiting is None:
                self._todo.put_nowait(key)
            elif _read_later(waiting[0].placement, action.placement):
                continue
            self._pending[key] = (action, self._version)

    def _supersede(self, placements: Iterable[Placement]) -> None:
        """Drop waiting writes decided on reads older than `placements` (a new plan's list)."""
        for placement in placements:
            waiting = self._pending.get(_key(placement))
            if waiting is not None and not _read_later(waiting[0].placement, placement):
                del self._pending[_key(placement)]

    async def _writer(self) -> None:
        while True:
            key = await self._todo.get()
            try:
                waiting = self._pending.pop(key, None)
                if waiting is None:
                    continue
                action, version = waiting
                if version != self._version:
                    await self._consider(action.placement)  # the members changed: decide again
                else:
                    await self._apply(action)
            finally:
                self._todo.task_done()

    async def _apply(self, action: Action) -> None:
        placement = action.placement
        kind, patch = action.patch()
        try:
            if kind == "merge":
                await self.kube.merge_patch_object(
                    BUCKETSYNCS, placement.namespace, placement.name, patch, write="metadata"
                )
            else:
                await self.kube.json_patch_object(
                    BUCKETSYNCS, placement.namespace, placement.name, patch, write="metadata"
                )
        except KubeNotFound:
            await self._settled(placement)
            return
        except (KubeConflict, KubeInvalid):
            # What the decision read has changed (409: a pinned resourceVersion; 422: a `test`
            # of the shard marks): decide again on what the object is now.
            await self._reconsider(_key(placement))
            return
        except KubeError as exc:
            log.warning("shard assigner could not label %s/%s: %s", placement.namespace, placement.name, exc)
            self._resync_now.set()
            return
        self._on_assignments(action.kind, 1)
        if action.to not in self.membership.by_label:
            # Its new owner left while the write was on its way (a departed member's objects
            # are read once, and may have been read before this landed): decide again.
            await self._reconsider(_key(placement))
        elif action.kind == "move":
            await self._settled(placement)

    async def _read(self, key: ObjectKey) -> dict[str, Any] | None:
        try:
            return await self.kube.get_object(BUCKETSYNCS, key.namespace, key.name)
        except KubeError as exc:
            log.warning("shard assigner could not read %s: %s", key, exc)
            self._resync_now.set()
            return None


def _key(placement: Placement) -> ObjectKey:
    return ObjectKey(placement.namespace, placement.name)


def _read_later(first: Placement, second: Placement) -> bool:
    """Whether `first` was read after `second` (resourceVersions are etcd revisions in practice;
    when one is not a number, neither is taken as later)."""
    a, b = first.resource_version, second.resource_version
    return a.isdigit() and b.isdigit() and int(a) > int(b)
