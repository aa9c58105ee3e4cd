"""The shard assigner: the one replica holding `<ring>-assigner` writes every owner label.

It reads the objects in full only on a membership change that is not just a departure (and
every `resync_period`, to repair what a lost write left), one page at a time and keeping a few
strings per object; between those, two label-selector watches bring it only what needs it:
unlabelled objects (new ones, labelled at once; this watch starts once the first plan is
written, as until then every unlabelled object is the plan's) and objects being drained (to see
acknowledgements). The rules it applies are assignment.py's; every write is conditional on what
its decision read (a merge patch pinned to the resourceVersion, or a JSON patch testing the
shard marks), so a stale decision fails (409, 422) and is taken again on a fresh read. A write
asks for the object's metadata alone back, as nothing of the answer is read.

Its one cache is `OwnerIndex`: the names each owner label holds, by namespace, with their group
(no bodies, no marks, no resourceVersions; about 80-100 bytes an object). It is built from each
full read and kept current by the assigner's own successful writes and single-object reads, so
a departed member's objects are moved without reading them first: the first move goes out at
once, where the read by owner label took 15 s at 40,000 objects on a loaded API server (which
scans every object to serve a label selector). The index is not exact, and need not be: the
assigner watches no labelled object, so it misses deletions and labels written by anyone else
until the next full read (every member join and every `resync_period`) rebuilds it. A stale
name costs one 404; a stale owner, or drain marks the index cannot know, one refused move (the
patch tests the owner label and the absence of a drain label: 422) and a read of that object.
So a departure still reads the departed members' objects by their label once, after the
index's moves are written, and moves what the index missed. Until a full read has completed (a
new assigner, a full read that failed) there is no index, and a departure is read first as
before; the index is dropped when the assigner stops.
"""

from __future__ import annotations

import asyncio
import logging
import sys
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
    EventHandler,
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
# The assigner's reads come in pages of 100, not the 500 a replica's own watch uses: they parse
# every object of the fleet (on every full read), and a parsed page of 500 is about 10 MB held at
# once in a process whose memory is its share.
PAGE_SIZE: Final = 100
# A full pass repairs what a lost write left; events and membership changes do the rest, so it
# is rare: at 40,000 objects each pass reads every object once.
RESYNC_PERIOD: Final = 1800.0


def group_of(body: Mapping[str, Any], default_secret: SecretRef | None) -> str:
    key = shard_key_of(body, default_secret)
    return "\0".join(key) if key is not None else ""


class OwnerIndex:
    """The objects each owner label holds: owner -> namespace -> name -> group.

    Compact on purpose (it lives in a replica whose memory is its share): nothing but the names,
    which are the strings a full read parsed (shared with its Placements while the plan runs);
    namespaces, groups and owners are interned, and the groups are the strings the membership
    keeps anyway (`Membership.sizes`). One dict per owner and namespace, so an object costs the
    same whatever the groups: measured with tracemalloc, 3.1 MB for 40,000 objects named like
    `bs-00001`, 4.2 MB with 34-character names."""

    __slots__ = ("_owners",)

    def __init__(self, placements: Iterable[Placement] = ()) -> None:
        self._owners: dict[str, dict[str, dict[str, str]]] = {}
        for placement in placements:
            if placement.owner is not None:
                names = self._owners.setdefault(placement.owner, {}).setdefault(placement.namespace, {})
                names[placement.name] = placement.group

    def __len__(self) -> int:
        return sum(len(names) for namespaces in self._owners.values() for names in namespaces.values())

    def record(self, key: ObjectKey, group: str, owner: str | None) -> None:
        """`key` (of `group`) is held by `owner` now; None: by no one (unlabelled, or deleted)."""
        for label, namespaces in list(self._owners.items()):  # a handful of members
            names = namespaces.get(key.namespace)
            if label != owner and names is not None and names.pop(key.name, None) is not None:
                if not names:
                    del namespaces[key.namespace]
                if not namespaces:
                    del self._owners[label]
        if owner is not None:
            namespaces = self._owners.setdefault(sys.intern(owner), {})
            namespaces.setdefault(sys.intern(key.namespace), {})[key.name] = sys.intern(group)

    def held_by(self, owners: Iterable[str]) -> list[Placement]:
        """What the index says `owners` hold, as Placements without a resourceVersion or marks."""
        return [
            Placement(namespace, name, "", group, owner, None, None)
            for owner in owners
            for namespace, names in self._owners.get(owner, {}).items()
            for name, group in names.items()
        ]


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
        self._first_plan = asyncio.Event()  # a full read's writes are queued (see `run`)
        self._reading_all = False  # a full read's list is under way
        self._departed: set[str] = set()  # members gone since the last plan (their labels)
        self._records: dict[str, LeaseRecord] = {}  # the member Leases last listed, by holder
        self._version = 0  # the membership's: a write decided under an older one is decided again
        self._full_resync = True
        self._arrived: set[ObjectKey] = set()
        # Who holds what, as of the last full read and this assigner's writes since; None until a
        # full read completed (a departure then reads the departed members' objects first).
        self.index: OwnerIndex | None = None
        # The moves a departure queued from the index, until each was written (or failed).
        self._index_moves: set[ObjectKey] = set()
        self._index_moves_done = asyncio.Event()

    # --- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        log.info("shard assigner of ring %s started", self.ring)
        tasks = [
            self._watch(namespace, DRAIN_LABEL, self._draining, "draining") for namespace in self.namespaces
        ]
        tasks += [
            self._supervisor.spawn(f"assigner writer {index}", self._writer, kind="assigner-writer")
            for index in range(WRITE_CONCURRENCY)
        ]

        async def watch_unlabelled() -> None:
            # Only once the first plan is written: until then every unlabelled object is the
            # plan's (its list has it, or it was created after that list and this watch's own
            # list has it), and a watch started before would parse each of them twice more at
            # startup (in its list, then as a DELETED when its label lands), for nothing.
            await self._first_plan.wait()
            await self._todo.join()
            tasks.extend(
                self._watch(namespace, f"!{OWNER_LABEL}", self._unlabelled, "unlabelled")
                for namespace in self.namespaces
            )

        try:
            await self._members_settled()
            self._resync_now.set()
            await asyncio.gather(self._watch_members(), self._resync_loop(), watch_unlabelled())
        finally:
            self.index = None  # the memory, while this replica runs no assigner (or a new one)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            log.info("shard assigner of ring %s stopped", self.ring)

    def _watch(
        self, namespace: str | None, selector: str, handler: EventHandler, what: str
    ) -> asyncio.Task[None]:
        watch = ListWatch(
            self.kube,
            BUCKETSYNCS,
            namespace=namespace,
            label_selector=selector,
            on_event=handler,
            page_size=PAGE_SIZE,
            name=f"assigner {what} {namespace or 'all'}",
        )
        return self._supervisor.spawn(watch.name, watch.run, kind="assigner-watch")

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
        self._resyncing = self._reading_all = True
        self.index = None  # complete again only once this read is
        try:
            placements = await self._placements()
        finally:
            self._resyncing = self._reading_all = False
        self.index = OwnerIndex(placements)
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
        self._supersede(placements)
        await self._apply_all(plan.actions)
        self._first_plan.set()
        if arrived:
            arrived -= {_key(placement) for placement in placements}
            await asyncio.gather(*(self._reconsider(key) for key in arrived))

    async def _resync_departed(self, owners: set[str]) -> None:
        """Move the objects of members that left: a Lease released (after its work stopped) or
        expired (its holder fenced itself). Nothing else moves when a member leaves.

        With an index, the objects it lists for them are moved first, without a read; once those
        writes are done, one read by their label moves what the index did not know (its
        decisions replace any index move still waiting: `_supersede`)."""
        if self.index is not None and await self._move_from_index(owners):
            written = await self._index_moved()
            if not written and self._full_resync:
                return  # a member joined meanwhile: the full read that comes next reads these too
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

    async def _move_from_index(self, owners: set[str]) -> int:
        """Queue the moves of what the index says `owners` held; the number queued.

        Left to the read: groups moving (their objects may be mid-drain, with marks the move
        must clear) and objects with a write waiting (decided on a read, and decided again
        since the members changed)."""
        assert self.index is not None
        placements = [
            placement
            for placement in self.index.held_by(owners)
            if placement.group not in self.moving and _key(placement) not in self._pending
        ]
        plan = plan_all(placements, self.membership, every_object=False)
        log.info(
            "shard assigner: %d objects of departed members %s in the index, %d writes",
            len(placements),
            sorted(owners),
            len(plan.actions),
        )
        self._index_moves = {_key(action.placement) for action in plan.actions}
        if not self._index_moves:
            return 0
        self._index_moves_done.clear()
        await self._apply_all(plan.actions)
        return len(self._index_moves)

    async def _index_moved(self) -> bool:
        """Wait until the index's moves are written; False if another pass is asked for first
        (a member joined or left again, a write failed): then the read comes at once."""
        written = asyncio.ensure_future(self._index_moves_done.wait())
        asked = asyncio.ensure_future(self._resync_now.wait())
        try:
            await asyncio.wait((written, asked), return_when=asyncio.FIRST_COMPLETED)
        finally:
            written.cancel()
            asked.cancel()
        return self._index_moves_done.is_set()

    async def _placements(self, label_selector: str | None = None) -> list[Placement]:
        placements: list[Placement] = []
        for namespace in self.namespaces:
            token: str | None = None
            while True:
                page = await self.kube.list_page(
                    BUCKETSYNCS,
                    namespace,
                    label_selector=label_selector,
                    continue_token=token,
                    limit=PAGE_SIZE,
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
                # Only what arrives while the list runs may be missed by it; what arrived before
                # it began is listed by it (a plan made on a join reads 40,000 objects, and
                # their keys are not kept twice).
                if self._reading_all:
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
        try:
            body = await self.kube.get_object(BUCKETSYNCS, key.namespace, key.name)
        except KubeError as exc:
            log.warning("shard assigner could not read %s: %s", key, exc)
            self._resync_now.set()
            return
        if body is None:  # deleted
            if self.index is not None:
                self.index.record(key, "", None)
            return
        placement = self._placement(body)
        if self.index is not None:
            self.index.record(key, placement.group, placement.owner)
        await self._consider(placement)

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
                if not self._pending:
                    self._pending = {}  # a dict keeps its largest table (a first plan's 40,000)
                if waiting is None:
                    continue
                action, version = waiting
                if version != self._version:
                    await self._consider(action.placement)  # the members changed: decide again
                else:
                    await self._apply(action)
            finally:
                self._todo.task_done()
                if key in self._index_moves:
                    self._index_moves.discard(key)
                    if not self._index_moves:
                        self._index_moves_done.set()

    async def _apply(self, action: Action) -> None:
        placement = action.placement
        kind, patch = action.patch()
        # The answer is not read: it is asked for as metadata alone, so the server encodes, and
        # this replica parses, no spec or status (40,000 times over on a first plan).
        namespace, name = placement.namespace, placement.name
        try:
            if kind == "merge":
                await self.kube.merge_patch_object(
                    BUCKETSYNCS, namespace, name, patch, write="metadata", metadata_only=True
                )
            else:
                await self.kube.json_patch_object(
                    BUCKETSYNCS, namespace, name, patch, write="metadata", metadata_only=True
                )
        except KubeNotFound:
            if self.index is not None:
                self.index.record(_key(placement), placement.group, None)
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
        if self.index is not None and action.kind != "drain":
            self.index.record(_key(placement), placement.group, action.to)
        if action.to not in self.membership.by_label:
            # Its new owner left while the write was on its way (a departed member's objects
            # are read once, and may have been read before this landed): decide again.
            await self._reconsider(_key(placement))
        elif action.kind == "move":
            await self._settled(placement)


def _key(placement: Placement) -> ObjectKey:
    return ObjectKey(placement.namespace, placement.name)


def _read_later(first: Placement, second: Placement) -> bool:
    """Whether `first` was read after `second` (resourceVersions are etcd revisions in practice;
    when one is not a number, neither is taken as later)."""
    a, b = first.resource_version, second.resource_version
    return a.isdigit() and b.isdigit() and int(a) > int(b)
