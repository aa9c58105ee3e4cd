"""The shard assigner's owner index (coordination/assigner.py): a departure moves what the index
knows without reading first, then reads the departed members' objects once.

The real `Assigner` against a fake API server that keeps BucketSyncs and Leases in memory,
applies merge and JSON patches as kube-apiserver does (a failing `test`: 422; a stale
resourceVersion: 409) and records every call in order."""

from __future__ import annotations

import asyncio
import copy
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, cast

import pytest

from mixpeek_operator.coordination.assigner import WRITE_CONCURRENCY, Assigner, OwnerIndex
from mixpeek_operator.coordination.assignment import (
    DRAIN_LABEL,
    DRAINED_ANNOTATION,
    LABEL_MODE,
    MODE_LABEL,
    OWNER_LABEL,
    Placement,
)
from mixpeek_operator.coordination.lease import LeaseTimings
from mixpeek_operator.coordination.ring import RING_LABEL
from mixpeek_operator.keys import ObjectKey
from mixpeek_operator.kube import (
    BUCKETSYNCS,
    LEASES,
    KubeConflict,
    KubeError,
    KubeInvalid,
    KubeNotFound,
    Resource,
)

NS = "ns"
TIMINGS = LeaseTimings()  # lease 15 s


def bucketsync(name: str, bucket: str, owner: str | None, **marks: str) -> dict[str, Any]:
    labels = {OWNER_LABEL: owner} if owner is not None else {}
    meta: dict[str, Any] = {"namespace": NS, "name": name, "resourceVersion": "1", "labels": labels}
    if "drain_to" in marks:
        labels[DRAIN_LABEL] = marks["drain_to"]
    if "drained_by" in marks:
        meta["annotations"] = {DRAINED_ANNOTATION: marks["drained_by"]}
    return {"metadata": meta, "spec": {"bucketId": bucket}}


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


class FakeKube:
    """The calls the assigner makes, against objects in memory; `calls` in the order made."""

    def __init__(self, objects: list[dict[str, Any]], members: list[str]) -> None:
        self.objects = {obj["metadata"]["name"]: obj for obj in objects}
        self.leases = dict.fromkeys(members, 0)  # holder -> renewals
        self.dead: set[str] = set()  # holders that renew no more
        self.calls: list[tuple[str, str]] = []
        self.revision = 1
        self.fail_lists = False
        self.renewing = False  # every live member renews its Lease between two lists of them
        self.full_answers = 0  # writes that asked for the whole object back

    # --- reads

    async def list_objects(self, resource: Resource, namespace: str | None = None, **_: Any) -> list[Any]:
        assert resource is LEASES
        if self.renewing:
            self.leases = {holder: n + (holder not in self.dead) for holder, n in self.leases.items()}
        return [
            {
                "metadata": {"name": f"r-{holder}", "labels": {RING_LABEL: "r", MODE_LABEL: LABEL_MODE}},
                "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": str(renewals)},
            }
            for holder, renewals in self.leases.items()
        ]

    async def list_page(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        continue_token: str | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        assert resource is BUCKETSYNCS
        self.calls.append(("list", label_selector or ""))
        await asyncio.sleep(0)
        if self.fail_lists:
            raise KubeError(500, "InternalError", "etcd is away")
        if label_selector is None:
            items = list(self.objects.values())
        elif label_selector == f"!{OWNER_LABEL}":
            items = [obj for obj in self.objects.values() if self.owner(obj["metadata"]["name"]) is None]
        elif label_selector == DRAIN_LABEL:
            items = [obj for obj in self.objects.values() if DRAIN_LABEL in obj["metadata"]["labels"]]
        else:
            prefix = f"{OWNER_LABEL} in ("
            assert label_selector.startswith(prefix), label_selector
            owners = set(label_selector[len(prefix) : -1].split(","))
            items = [obj for obj in self.objects.values() if self.owner(obj["metadata"]["name"]) in owners]
        return {"items": copy.deepcopy(items), "metadata": {"resourceVersion": str(self.revision)}}

    async def watch(self, resource: Resource, namespace: str | None = None, **_: Any) -> AsyncIterator[Any]:
        """A stream that stays silent (what these tests look at is the lists)."""
        await asyncio.Event().wait()
        yield {}

    async def get_object(self, resource: Resource, namespace: str | None, name: str) -> Any:
        self.calls.append(("get", name))
        await asyncio.sleep(0)
        return copy.deepcopy(self.objects.get(name))

    # --- writes

    async def merge_patch_object(
        self, resource: Resource, namespace: str | None, name: str, patch: Any, *, write: str, **how: bool
    ) -> Any:
        self.calls.append(("merge", name))
        self.full_answers += not how.get("metadata_only")
        await asyncio.sleep(0)
        obj = self._existing(name)
        if patch["metadata"].get("resourceVersion") not in (None, obj["metadata"]["resourceVersion"]):
            raise KubeConflict(409, "Conflict", "the object has been modified")
        for key, value in patch["metadata"].get("labels", {}).items():
            obj["metadata"]["labels"][key] = value
        return self._commit(obj)

    async def json_patch_object(
        self, resource: Resource, namespace: str | None, name: str, patch: Any, *, write: str, **how: bool
    ) -> Any:
        self.calls.append(("json", name))
        self.full_answers += not how.get("metadata_only")
        await asyncio.sleep(0)
        obj = self._existing(name)
        for op in patch:
            _, _, field, key = op["path"].split("/", 3)
            container = obj["metadata"].get(field)
            key = _unescape(key)
            if op["op"] == "test":
                value = container.get(key) if container is not None else None
                if container is None or value != op["value"]:
                    raise KubeInvalid(422, "Invalid", f"testing value {op['path']} failed")
            elif op["op"] in ("add", "replace"):
                if op["op"] == "replace" and key not in container:
                    raise KubeInvalid(422, "Invalid", f"replace: missing path {op['path']}")
                container[key] = op["value"]
            elif op["op"] == "remove":
                if container is None or key not in container:
                    raise KubeInvalid(422, "Invalid", f"remove: missing path {op['path']}")
                del container[key]
        return self._commit(obj)

    def _existing(self, name: str) -> dict[str, Any]:
        if name not in self.objects:
            raise KubeNotFound(404, "NotFound", f"{name} not found")
        return copy.deepcopy(self.objects[name])

    def _commit(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)
        self.objects[obj["metadata"]["name"]] = obj
        return copy.deepcopy(obj)

    # --- what tests look at

    def owner(self, name: str) -> str | None:
        return cast(str | None, self.objects[name]["metadata"]["labels"].get(OWNER_LABEL))

    def since(self, mark: int) -> list[tuple[str, str]]:
        return self.calls[mark:]


class Ring:
    """The real assigner with its writers and its resync loop running, and a clock to kill with
    (`real_time`: the monotonic clock, for `Assigner.run` and its waits)."""

    def __init__(self, kube: FakeKube, timings: LeaseTimings = TIMINGS, *, real_time: bool = False) -> None:
        self.kube, self.now = kube, 1000.0
        self.assigner = Assigner(
            cast(Any, kube),
            lease_namespace="ops",
            ring="r",
            namespaces=(NS,),
            timings=timings,
            default_secret=None,
            clock=time.monotonic if real_time else lambda: self.now,
        )
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.assigner._refresh_members()
        loops = [self.assigner._writer for _ in range(WRITE_CONCURRENCY)] + [self.assigner._resync_loop]
        self.tasks = [asyncio.create_task(loop()) for loop in loops]
        self.assigner._resync_now.set()
        await until(lambda: self.assigner.index is not None)
        await self.idle()

    async def kill(self, member: str) -> int:
        """`member` is SIGKILLed: its Lease stays but expires (the others renew theirs), and the
        assigner sees that as its `_watch_members` would. Returns the number of calls before."""
        await self.idle()
        expire(self, member)
        mark = len(self.kube.calls)
        assert await self.assigner._refresh_members()
        self.assigner._resync_now.set()
        return mark

    async def idle(self) -> None:
        """Until nothing happens any more: no write waits, and no call was made for a while."""
        async with asyncio.timeout(5):
            while True:
                calls = len(self.kube.calls)
                for _ in range(50):
                    await asyncio.sleep(0)
                if (
                    len(self.kube.calls) == calls
                    and not self.assigner._pending
                    and self.assigner._todo.empty()
                ):
                    return

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def expire(ring: Ring, member: str) -> None:
    ring.kube.dead.add(member)
    ring.kube.leases = {
        holder: renewals + (holder not in ring.kube.dead) for holder, renewals in ring.kube.leases.items()
    }
    ring.now += TIMINGS.lease_duration + 1


async def until(condition: Callable[[], bool], poll: float = 0.001) -> None:
    for _ in range(5000):
        if condition():
            return
        await asyncio.sleep(poll)
    raise AssertionError("never came true")


@pytest.fixture
def objects() -> list[dict[str, Any]]:
    """Four groups (buckets): a holds g0, b holds g1 and g2, c holds g3; three objects each."""
    holders = {"g0": "a", "g1": "b", "g2": "b", "g3": "c"}
    return [bucketsync(f"{g}-{i}", g, owner) for g, owner in holders.items() for i in range(3)]


@pytest.fixture
async def started() -> AsyncIterator[Callable[[list[dict[str, Any]]], Awaitable[Ring]]]:
    rings: list[Ring] = []

    async def start(objects: list[dict[str, Any]]) -> Ring:
        rings.append(Ring(FakeKube(objects, ["a", "b", "c"])))
        await rings[-1].start()
        return rings[-1]

    yield start
    for ring in rings:
        await ring.stop()


@pytest.fixture
async def ring(
    objects: list[dict[str, Any]], started: Callable[[list[dict[str, Any]]], Awaitable[Ring]]
) -> Ring:
    return await started(objects)


def b_objects(kube: FakeKube) -> list[str]:
    return sorted(name for name in kube.objects if name.startswith(("g1-", "g2-")))


async def test_the_first_full_read_builds_the_index_and_writes_nothing_when_all_are_placed(
    ring: Ring,
) -> None:
    assert ring.kube.calls == [("list", "")]
    index = ring.assigner.index
    assert index is not None
    assert len(index) == 12
    assert sorted(p.name for p in index.held_by(["b"])) == b_objects(ring.kube)


async def test_a_departure_moves_the_index_s_objects_before_any_read_then_reads_once(ring: Ring) -> None:
    kube = ring.kube
    mark = await ring.kill("b")
    await until(lambda: all(kube.owner(name) in ("a", "c") for name in kube.objects))
    await ring.idle()
    calls = kube.since(mark)
    moves = [name for kind, name in calls if kind == "json"]
    assert sorted(moves) == b_objects(kube)  # each of b's six objects moved once
    assert calls[0][0] == "json"  # the first thing the departure did: a move, no read before it
    # Then one read of what b still holds, once every move from the index was written.
    reads = [i for i, (kind, _) in enumerate(calls) if kind == "list"]
    assert [calls[i] for i in reads] == [("list", f"{OWNER_LABEL} in (b)")]
    assert reads[0] > max(i for i, (kind, _) in enumerate(calls) if kind == "json")
    # A group moves whole; the index follows the writes.
    assert (
        len({kube.owner(f"g1-{i}") for i in range(3)}) == len({kube.owner(f"g2-{i}") for i in range(3)}) == 1
    )
    index = ring.assigner.index
    assert index is not None
    assert index.held_by(["b"]) == []
    assert sorted(p.name for p in index.held_by(["a", "c"])) == sorted(kube.objects)


async def test_what_the_index_did_not_know_is_re_read_and_decided_again(ring: Ring) -> None:
    kube = ring.kube
    # Behind the assigner's back (it watches no labelled object): g1-0 was handed to a by hand,
    # g1-1 is mid-drain (marks the index does not hold), g2-0 was deleted, and someone labelled
    # a new object for b.
    kube.objects["g1-0"]["metadata"]["labels"][OWNER_LABEL] = "a"
    kube.objects["g1-1"]["metadata"]["labels"][DRAIN_LABEL] = "c"
    kube.objects["g1-1"]["metadata"]["annotations"] = {DRAINED_ANNOTATION: "b"}
    del kube.objects["g2-0"]
    kube.objects["g2-9"] = bucketsync("g2-9", "g2", "b")
    mark = await ring.kill("b")
    await until(lambda: all(kube.owner(name) in ("a", "c") for name in kube.objects))
    await ring.idle()
    calls = kube.since(mark)
    assert calls[0][0] == "json"
    # Each index move whose `test` failed (422) was followed by a read of that object alone.
    assert ("get", "g1-0") in calls
    assert ("get", "g1-1") in calls
    assert calls.index(("get", "g1-1")) > calls.index(("json", "g1-1"))
    # Decided again: its owner is live, so it stays, asked to drain only if a is not g1's target.
    target = kube.owner("g1-2")
    assert kube.owner("g1-0") == "a"
    assert (kube.objects["g1-0"]["metadata"]["labels"].get(DRAIN_LABEL) == target) == (target != "a")
    assert calls.count(("json", "g1-0")) == 1 + (target != "a")
    # The mid-drain one moved on the second try, with its marks cleared.
    assert calls.count(("json", "g1-1")) == 2
    meta = kube.objects["g1-1"]["metadata"]
    assert DRAIN_LABEL not in meta["labels"]
    assert DRAINED_ANNOTATION not in (meta.get("annotations") or {})
    # The deleted one cost a 404 and nothing more; the one the index never saw was found by
    # the read by b's label that follows the moves, and moved with its group.
    assert ("get", "g2-0") not in calls
    assert calls.index(("list", f"{OWNER_LABEL} in (b)")) < calls.index(("json", "g2-9"))
    assert kube.owner("g2-9") == kube.owner("g2-1")
    index = ring.assigner.index
    assert index is not None
    assert index.held_by(["b"]) == []
    assert "g2-0" not in {p.name for p in index.held_by(["a", "c"])}


async def test_a_group_on_its_way_is_left_to_the_read(
    objects: list[dict[str, Any]], started: Callable[[list[dict[str, Any]]], Awaitable[Ring]]
) -> None:
    # g2 is b's but for one object on c: the first plan asks c to drain it to b, so the group
    # is on its way, and its objects may carry marks the index does not hold.
    ring = await started([*objects, bucketsync("g2-3", "g2", "c")])
    kube = ring.kube
    assert kube.objects["g2-3"]["metadata"]["labels"][DRAIN_LABEL] == "b"
    assert set(ring.assigner.moving) == {"\0\0g2"}  # (Secret namespace, name, bucket)
    mark = await ring.kill("b")
    await until(lambda: all(kube.owner(name) in ("a", "c") for name in kube.objects))
    await ring.idle()
    calls = kube.since(mark)
    read = calls.index(("list", f"{OWNER_LABEL} in (b)"))
    assert {name for _, name in calls[:read]} == {f"g1-{i}" for i in range(3)}  # g1 from the index
    assert {name for kind, name in calls[read + 1 :] if kind == "json"} == {f"g2-{i}" for i in range(3)}


async def test_without_an_index_a_departure_is_read_first(objects: list[dict[str, Any]]) -> None:
    kube = FakeKube(objects, ["a", "b", "c"])
    ring = Ring(kube)
    await ring.assigner._refresh_members()
    assert ring.assigner.index is None  # a new assigner: no full read yet
    expire(ring, "b")
    await ring.assigner._refresh_members()
    writers = [asyncio.create_task(ring.assigner._writer()) for _ in range(WRITE_CONCURRENCY)]
    try:
        await ring.assigner.resync(owners={"b"})
        await ring.idle()
    finally:
        for task in writers:
            task.cancel()
        await asyncio.gather(*writers, return_exceptions=True)
    assert kube.calls[0] == ("list", f"{OWNER_LABEL} in (b)")
    assert sorted(name for kind, name in kube.calls if kind == "json") == b_objects(kube)
    assert all(kube.owner(name) in ("a", "c") for name in kube.objects)


async def test_a_full_read_that_fails_leaves_no_index(ring: Ring) -> None:
    ring.kube.fail_lists = True
    with pytest.raises(KubeError):
        await ring.assigner.resync()
    assert ring.assigner.index is None
    ring.kube.fail_lists = False
    await ring.assigner.resync()
    assert ring.assigner.index is not None
    assert len(ring.assigner.index) == 12


def test_the_index_costs_about_a_hundred_bytes_an_object() -> None:
    """40,000 objects over 4 owners, 40 groups, 2 namespaces (names as `make bench-shards`'s)."""

    def placements() -> Iterator[Placement]:
        for i in range(40_000):  # each string new, as a parsed list gives them
            labels = {OWNER_LABEL: f"pod-{i % 4}"}
            meta = {
                "namespace": f"team-{i % 2}",
                "name": f"bs-{i:05d}",
                "resourceVersion": "7",
                "labels": labels,
            }
            yield Placement.of({"metadata": meta}, f"team-{i % 2}\0creds\0bkt_{i % 40}")

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        index = OwnerIndex(placements())
        size = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(index) == 40_000
    assert size < 40_000 * 150, size
    index.record(ObjectKey("team-0", "bs-00000"), "team-0\0creds\0bkt_0", "pod-3")
    index.record(ObjectKey("team-1", "bs-00001"), "team-1\0creds\0bkt_1", None)
    assert len(index) == 39_999
    assert [p.name for p in index.held_by(["pod-3"]) if p.name == "bs-00000"] == ["bs-00000"]


async def test_new_objects_before_the_first_read_are_left_to_it_and_one_the_read_missed_is_labelled() -> None:
    """At startup the unlabelled watch delivers every unlabelled object before the first read:
    none is kept (the read lists them; 40,000 keys at 40,000 objects). One created while the read
    runs, behind the page that would have held it, is labelled after the plan."""
    kube = FakeKube([bucketsync(f"n-{i}", f"g{i % 2}", None) for i in range(6)], ["a", "b"])
    ring = Ring(kube)
    assigner = ring.assigner
    for body in list(kube.objects.values()):
        await assigner._unlabelled("ADDED", copy.deepcopy(body))
    assert assigner._arrived == set()

    late = bucketsync("late", "g0", None)
    listing = kube.list_page

    async def list_missing_the_late_one(*args: Any, **kwargs: Any) -> dict[str, Any]:
        page = await listing(*args, **kwargs)
        await assigner._unlabelled("ADDED", copy.deepcopy(late))  # arrives while the list runs
        kube.objects["late"] = late
        return page

    kube.list_page = list_missing_the_late_one  # type: ignore[method-assign]
    try:
        await ring.start()
        await until(lambda: all(kube.owner(name) in ("a", "b") for name in kube.objects))
        assert ("get", "late") in kube.calls  # read once, and decided on what it is now
        assert kube.owner("late") == kube.owner("n-0")  # with its group
    finally:
        await ring.stop()


async def test_the_unlabelled_watch_starts_once_the_first_plan_is_written() -> None:
    """`run` as a replica runs it: the first plan labels what its read listed; only then does the
    unlabelled watch list, and it labels an object created after the plan's read. No write asks
    for the object back."""
    kube = FakeKube([bucketsync(f"n-{i}", f"g{i % 2}", None) for i in range(6)], ["a", "b"])
    kube.renewing = True
    late = bucketsync("late", "g0", None)
    patching = kube.merge_patch_object

    async def create_one_during_the_first_writes(*args: Any, **kwargs: Any) -> Any:
        kube.objects.setdefault("late", late)
        return await patching(*args, **kwargs)

    kube.merge_patch_object = create_one_during_the_first_writes  # type: ignore[method-assign]
    timings = LeaseTimings(lease_duration=1.0, renew_deadline=0.5, retry_period=0.1)
    running = asyncio.create_task(Ring(kube, timings, real_time=True).assigner.run())
    try:
        async with asyncio.timeout(10):
            await until(lambda: "late" in kube.objects and kube.owner("late") is not None, poll=0.01)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    lists = [selector for call, selector in kube.calls if call == "list"]
    assert lists[:2] == [DRAIN_LABEL, ""]  # the drain watch, then the first plan's read
    first_unlabelled = kube.calls.index(("list", f"!{OWNER_LABEL}"))
    first_plan = [i for i, (call, name) in enumerate(kube.calls) if call == "merge" and name != "late"]
    assert len(first_plan) == 6
    assert max(first_plan) < first_unlabelled
    assert kube.calls[first_unlabelled + 1 :] == [("merge", "late")]
    assert kube.owner("late") == kube.owner("n-0")  # with its group
    assert kube.full_answers == 0
