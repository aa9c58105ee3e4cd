"""Label shards with `mixpeek-operator run --sharding` processes (the real entry point), the real
API server and an emulator seeded with 30 buckets (30 listing groups).

What is checked here, at a small size (`make bench-shards` measures 40,000 objects):
- assignment: every object carries a live member's name in `shard.mixpeek.com/owner`, a bucket's
  objects one name, written by the elected assigner;
- the filtered watch: each replica caches exactly the objects labelled with its name, and the
  watch events it receives follow its share, not the fleet's;
- the handshake: a replica added to a running fleet gets only the groups it wins, each object
  drained and acknowledged by its old owner before its label moved;
- chaos: replicas killed and added during a bulk create and during churn, with the emulator
  counting remote writes per sync and per replica: no duplicate create, and no sync written by
  two replicas at overlapping times;
- a lapse: a replica frozen past its renew deadline (a starved node) pauses, then resumes without
  listing its objects again or reconciling those that did not change.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch

from hack.localcluster import ControlPlane
from mixpeek_operator.coordination.assigner import Assigner
from mixpeek_operator.coordination.assignment import (
    DRAIN_LABEL,
    DRAINED_ANNOTATION,
    LABEL_MODE,
    MODE_LABEL,
    OWNER_LABEL,
)
from mixpeek_operator.coordination.lease import LeaseTimings, micro_time
from mixpeek_operator.coordination.ring import RING_LABEL, lease_name_for
from mixpeek_operator.kube import (
    BUCKETSYNCS,
    LEASES,
    JsonObject,
    JsonPatch,
    KubeClient,
    KubeConnection,
    KubeError,
    Resource,
)
from mixpeek_operator.settings import DEFAULTS
from tests.support.operator_support import (
    EmulatorProcess,
    Objects,
    OperatorFactory,
    OperatorProcess,
    bucketsync,
    wait_for,
)
from tests.support.shard_support import (
    BUCKETS,
    INTERVAL,
    LEASE,
    all_ready,
    create_fleet,
    list_objects,
    overlapping_writers,
    remote_owners,
    ring,
    ring_emulator,
    start_shard,
    successful_creates,
)

pytestmark = pytest.mark.usefixtures("crd_installed")
__all__ = ["ring", "ring_emulator"]  # fixtures, used by name


def owners(objects: Objects) -> dict[str, str | None]:
    return {
        item["metadata"]["name"]: (item["metadata"].get("labels") or {}).get(OWNER_LABEL)
        for item in list_objects(objects)
    }


def handshake_marks(objects: Objects) -> int:
    """Objects still carrying a drain request or an acknowledgement."""
    return sum(
        1
        for item in list_objects(objects)
        if DRAIN_LABEL in (item["metadata"].get("labels") or {})
        or DRAINED_ANNOTATION in (item["metadata"].get("annotations") or {})
    )


def settled(objects: Objects, names: list[str], members: set[str]) -> bool:
    """Every object Ready, labelled for a live member, no handshake under way."""
    labels = owners(objects)
    return (
        all(labels.get(name) in members for name in names)
        and handshake_marks(objects) == 0
        and all_ready(objects, names)
    )


def by_bucket(objects: Objects) -> dict[str, set[str | None]]:
    groups: dict[str, set[str | None]] = {}
    for item in list_objects(objects):
        groups.setdefault(item["spec"]["bucketId"], set()).add(
            (item["metadata"].get("labels") or {}).get(OWNER_LABEL)
        )
    return groups


def watch_events(shard: OperatorProcess) -> float:
    return shard.metric("mixpeek_operator_watch_events_total", resource="bucketsyncs")


class EventCounter:
    """Counts what a watch of every BucketSync of the namespace receives (an unfiltered watcher),
    watching again from the last resourceVersion whenever a stream ends."""

    def __init__(self, api_client: k8s.ApiClient, namespace: str) -> None:
        self.count = 0
        self.errors: list[str] = []
        self._stopped = threading.Event()
        api = k8s.CustomObjectsApi(api_client)
        listed = api.list_namespaced_custom_object("mixpeek.com", "v1alpha1", namespace, "bucketsyncs")
        self._version = listed["metadata"]["resourceVersion"]

        def run() -> None:
            while not self._stopped.is_set():
                watch = k8s_watch.Watch()  # type: ignore[no-untyped-call]
                try:
                    for event in watch.stream(  # type: ignore[no-untyped-call]
                        api.list_namespaced_custom_object,
                        "mixpeek.com",
                        "v1alpha1",
                        namespace,
                        "bucketsyncs",
                        resource_version=self._version,
                        timeout_seconds=5,
                    ):
                        self.count += 1
                        self._version = event["object"]["metadata"]["resourceVersion"]
                except Exception as exc:  # the control plane stops before the last stream ends
                    self.errors.append(repr(exc))

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=15)


@pytest.fixture
def shards(start_operator: OperatorFactory, objects: Objects) -> Iterator[dict[str, OperatorProcess]]:
    started: dict[str, OperatorProcess] = {}
    yield started
    for shard in started.values():
        if shard.alive():
            shard.stop()


def add_shard(
    shards: dict[str, OperatorProcess], start_operator: OperatorFactory, namespace: str, name: str
) -> OperatorProcess:
    shards[name] = start_shard(start_operator, namespace, name)
    return shards[name]


def handovers_out(shards: dict[str, OperatorProcess]) -> float:
    return sum(
        shard.metric("mixpeek_operator_shard_object_handovers_total", direction="out")
        for shard in shards.values()
        if shard.alive()
    )


def live(shards: dict[str, OperatorProcess]) -> set[str]:
    return {name for name, shard in shards.items() if shard.alive()}


def test_objects_are_labelled_by_group_and_each_replica_watches_only_its_own(
    objects: Objects,
    ring: EmulatorProcess,
    start_operator: OperatorFactory,
    shards: dict[str, OperatorProcess],
    api_client: k8s.ApiClient,
) -> None:
    counter = EventCounter(api_client, objects.namespace)
    for name in ("shard-a", "shard-b", "shard-c"):
        add_shard(shards, start_operator, objects.namespace, name)
    names, uids = create_fleet(objects, 300)
    wait_for(lambda: settled(objects, names, live(shards)), 240, interval=1.0, what="300 objects Ready")
    time.sleep(2 * LEASE / 4)  # the last status writes and their events land
    counter.stop()

    groups = by_bucket(objects)
    assert set(groups) == set(BUCKETS)
    assert all(len(labels) == 1 for labels in groups.values()), groups  # a bucket stays together
    labels = Counter(owners(objects).values())
    print(f"\nobjects per replica: {dict(labels)}; unfiltered watcher: {counter.count} events")
    assert set(labels) == set(shards)
    remote = remote_owners(ring, uids)
    assert len(remote) == len(set(remote)) == 300
    assert successful_creates(ring) == 300

    total_events = sum(watch_events(shard) for shard in shards.values())
    for name, shard in shards.items():
        owned = shard.metric("mixpeek_operator_shard_owned_objects")
        events = watch_events(shard)
        share = labels[name] / 300
        print(f"{name}: owns {owned:.0f}, labelled {labels[name]}, {events:.0f} watch events ({share:.0%})")
        assert owned == labels[name]  # its cache holds exactly its own objects
        # Its events follow its share of the fleet's, not the fleet's (an unfiltered watch
        # would receive every object's events: the counter's figure).
        assert events <= counter.count * share * 1.3 + 10
    assert total_events <= counter.count * 1.3
    assert sum(shard.metric("mixpeek_operator_shard_assigner") for shard in shards.values()) == 1

    # Label replicas run without kopf (lifecycle.py): neither it nor aiohttp is ever loaded.
    for shard in shards.values():
        assert mapped_files(shard, "pydantic_core")  # its C extensions are visible here
        assert mapped_files(shard, "aiohttp") == []
    # SIGTERM: the replica exits 0 having released its member Lease, and its objects move.
    assert shards["shard-c"].stop() == 0
    lease = k8s.CoordinationV1Api(api_client).read_namespaced_lease(
        lease_name_for(DEFAULTS.leader_election_id, "shard-c"), objects.namespace
    )
    assert not lease.spec.holder_identity
    wait_for(
        lambda: settled(objects, names, {"shard-a", "shard-b"}),
        120,
        interval=1.0,
        what="shard-c's objects moved",
    )


def mapped_files(shard: OperatorProcess, fragment: str) -> list[str]:
    """The files the operator process has mapped (its shared libraries: a C extension once its
    Python package is imported) whose path contains `fragment`."""
    with open(f"/proc/{shard.proc.pid}/maps") as maps:
        return sorted({line.split()[-1] for line in maps if fragment in line})


def test_a_replica_whose_lease_lapsed_resumes_without_relisting_or_reconciling_what_did_not_change(
    objects: Objects,
    ring: EmulatorProcess,
    start_operator: OperatorFactory,
    shards: dict[str, OperatorProcess],
) -> None:
    # A Lease of 20 s with a renew deadline of 6 s: frozen for 9 s, the replica misses its
    # deadline (it must stop working) but its Lease has not expired, so nothing moves.
    timings = ("--leader-election-lease-duration", "20", "--leader-election-renew-deadline", "6")
    for name in ("shard-a", "shard-b"):
        shards[name] = start_shard(start_operator, objects.namespace, name, *timings)
    names, _ = create_fleet(objects, 100)
    wait_for(lambda: settled(objects, names, live(shards)), 180, interval=1.0, what="100 objects Ready")
    name = next(n for n, shard in shards.items() if shard.metric("mixpeek_operator_shard_assigner") == 0)
    frozen = shards[name]
    mine = [n for n, owner in owners(objects).items() if owner == name]
    events, reconciles = watch_events(frozen), frozen.metric("bucketsync_reconcile_total")

    os.killpg(frozen.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(9)
        objects.patch(mine[0], {"spec": {"batchSize": 7}})  # an edit while it cannot act
    finally:
        os.killpg(frozen.proc.pid, signal.SIGCONT)
    wait_for(
        lambda: (
            "paused work as shard member" in frozen.logs()
            and frozen.metric("mixpeek_operator_lease_held") >= 1
            and ((objects.get(mine[0]) or {}).get("status") or {}).get("observedGeneration") == 2
            and settled(objects, names, live(shards))
        ),
        60,
        interval=0.5,
        what="the frozen replica paused, held its Lease again and applied the edit",
    )
    time.sleep(2 * INTERVAL)  # a listing pass after the resume
    assert [n for n, owner in owners(objects).items() if owner == name] == mine  # nothing moved
    assert handovers_out(shards) == 0
    extra_events = watch_events(frozen) - events
    extra_reconciles = frozen.metric("bucketsync_reconcile_total") - reconciles
    print(
        f"\nlapse of {name} ({len(mine)} objects): {extra_events:.0f} watch events, "
        f"{extra_reconciles:.0f} reconciles after it"
    )
    # Before, a lapse listed its objects again (one event each) and reconciled every one.
    assert extra_events < len(mine) / 2
    assert 1 <= extra_reconciles < len(mine) / 2
    assert overlapping_writers(ring.admin.request_log()) == []


def test_a_joining_replica_gets_only_the_groups_it_wins_each_after_a_drain(
    objects: Objects,
    ring: EmulatorProcess,
    start_operator: OperatorFactory,
    shards: dict[str, OperatorProcess],
) -> None:
    for name in ("shard-a", "shard-b"):
        add_shard(shards, start_operator, objects.namespace, name)
    names, uids = create_fleet(objects, 240)
    wait_for(lambda: settled(objects, names, live(shards)), 240, interval=1.0, what="240 objects Ready")
    before = owners(objects)
    ring.admin.clear_requests()
    handed_over = handovers_out(shards)

    add_shard(shards, start_operator, objects.namespace, "shard-c")
    joined = time.monotonic()
    for name in names[::4]:  # churn during the join: spec edits reach Mixpeek as updates
        objects.patch(name, {"spec": {"batchSize": 7}})
    wait_for(
        lambda: "shard-c" in owners(objects).values() and settled(objects, names, live(shards)),
        180,
        interval=1.0,
        what="the third replica's groups moved and all Ready",
    )
    after = owners(objects)
    moved = {name for name in names if before[name] != after[name]}
    print(f"\njoin: {len(moved)} of {len(names)} objects moved in {time.monotonic() - joined:.1f}s")
    assert moved
    assert all(after[name] == "shard-c" for name in moved)  # only to the joiner
    assert len(moved) <= len(names) * 0.6
    # Every move was a drain its old owner acknowledged, then saw leave its watch.
    assert handovers_out(shards) - handed_over == len(moved)
    drains = sum(
        shard.metric("mixpeek_operator_shard_assignments_total", action="drain") for shard in shards.values()
    )
    assert drains >= len(moved)
    assert overlapping_writers(ring.admin.request_log()) == []
    remote = remote_owners(ring, uids)
    assert len(remote) == len(set(remote)) == 240


def test_replicas_killed_and_added_during_a_bulk_create_and_churn_never_write_one_sync_twice(
    objects: Objects,
    ring: EmulatorProcess,
    start_operator: OperatorFactory,
    shards: dict[str, OperatorProcess],
) -> None:
    ring.admin.add_fault(endpoint="create", latency_ms=50, response_delay_seconds=0.2)
    for name in ("shard-a", "shard-b", "shard-c"):
        add_shard(shards, start_operator, objects.namespace, name)
    done = threading.Event()
    created: dict[str, set[str]] = {}

    def bulk_create() -> None:
        created["names"], created["uids"] = (set(x) for x in create_fleet(objects, 300))
        done.set()

    creator = threading.Thread(target=bulk_create)
    creator.start()
    wait_for(lambda: ring.admin.request_counts()["endpoints"]["create"] >= 60, 120, what="60 remote creates")
    shards["shard-b"].kill()  # mid-create: its objects move once its Lease expires
    add_shard(shards, start_operator, objects.namespace, "shard-d")  # and a joiner takes groups
    creator.join(timeout=300)
    assert done.is_set()
    names = sorted(created["names"])
    for name in names[::3]:  # churn while the fleet rebalances
        objects.patch(name, {"spec": {"batchSize": 9}})
    shards["shard-c"].kill()
    add_shard(shards, start_operator, objects.namespace, "shard-e")
    wait_for(lambda: settled(objects, names, live(shards)), 300, interval=1.0, what="300 objects Ready")

    remote = remote_owners(ring, created["uids"])
    duplicates = len(remote) - len(set(remote))
    overlaps = overlapping_writers(ring.admin.request_log())
    print(f"\nremote syncs {len(remote)}, successful creates {successful_creates(ring)}, overlaps {overlaps}")
    assert duplicates == 0
    assert len(remote) == 300
    assert successful_creates(ring) == 300
    assert overlaps == []
    labels = Counter(owners(objects).values())
    assert set(labels) <= {"shard-a", "shard-d", "shard-e"}


def test_a_rolling_upgrade_from_rendezvous_mode_never_writes_one_sync_twice(
    objects: Objects,
    ring: EmulatorProcess,
    start_operator: OperatorFactory,
    shards: dict[str, OperatorProcess],
) -> None:
    """Two rendezvous replicas replaced one at a time by label replicas (maxSurge 1), with
    churn throughout: old and new agree on every owner, and no sync has two writers."""
    for name in ("old-a", "old-b"):
        shards[name] = start_shard(start_operator, objects.namespace, name, "--sharding-mode", "rendezvous")
    names, uids = create_fleet(objects, 180)
    wait_for(lambda: all_ready(objects, names), 240, interval=1.0, what="180 objects Ready (rendezvous)")
    ring.admin.clear_requests()
    for step, (old, new) in enumerate((("old-a", "new-a"), ("old-b", "new-b"))):
        add_shard(shards, start_operator, objects.namespace, new)  # the surge pod
        for name in names[step::6]:
            objects.patch(name, {"spec": {"batchSize": 3 + step}})
        time.sleep(LEASE)  # the new pod owns keys before the old one is stopped, as a rollout does
        shards[old].stop()
    wait_for(
        lambda: settled(objects, names, {"new-a", "new-b"}),
        180,
        interval=1.0,
        what="all labelled for the new replicas and Ready",
    )
    remote = remote_owners(ring, uids)
    assert len(remote) == len(set(remote)) == 180
    assert overlapping_writers(ring.admin.request_log()) == []
    assert Counter(owners(objects).values()).keys() == {"new-a", "new-b"}


async def until(predicate: Callable[[], bool], what: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


class RecordingKube(KubeClient):
    """The real client, noting the assigner's reads by owner label and its JSON patches (with
    their HTTP status) in the order they were made."""

    def __init__(self, connection: KubeConnection) -> None:
        super().__init__(connection)
        self.calls: list[tuple[str, str, int]] = []

    async def list_page(self, resource: Resource, namespace: str | None = None, **kwargs: Any) -> JsonObject:
        selector = kwargs.get("label_selector") or ""
        if resource is BUCKETSYNCS and selector.startswith(f"{OWNER_LABEL} in"):
            self.calls.append(("list", selector, 0))
        return await super().list_page(resource, namespace, **kwargs)

    async def json_patch_object(
        self, resource: Resource, namespace: str | None, name: str, patch: JsonPatch, **how: Any
    ) -> JsonObject:
        try:
            patched = await super().json_patch_object(resource, namespace, name, patch, **how)
        except KubeError as exc:
            self.calls.append(("json", name, exc.status))
            raise
        self.calls.append(("json", name, 200))
        return patched


async def test_a_killed_member_s_objects_are_moved_from_the_assigner_s_index_before_any_read(
    cluster: ControlPlane, objects: Objects, namespace: str
) -> None:
    """The real assigner (in this process, short Leases) and the real API server's JSON patch:
    after a member's Lease expires, its objects move from the index without a read; one mid-drain
    (a mark the index does not hold) fails its index move (422), is read and moved with its marks
    cleared; then one read by the member's label."""
    timings = LeaseTimings(lease_duration=3.0, renew_deadline=2.0, retry_period=0.5)
    names = [f"x-{index}" for index in range(4)]
    for name in names:
        body = bucketsync(name, bucketId=BUCKETS[0])
        body["metadata"]["labels"] = {OWNER_LABEL: "pod-b"}
        objects.create(body)
    async with RecordingKube(KubeConnection.from_kubeconfig(cluster.kubeconfig)) as kube:
        renewing = {"pod-a", "pod-b"}
        for holder in renewing:
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": f"ring-{holder}",
                    "labels": {RING_LABEL: "ring", MODE_LABEL: LABEL_MODE},
                },
                "spec": {"holderIdentity": holder, "leaseDurationSeconds": 3},
            }
            await kube.create_object(LEASES, namespace, lease, write="lease")

        async def renew() -> None:
            while True:
                for holder in sorted(renewing):
                    patch = {"spec": {"renewTime": micro_time(datetime.now(UTC))}}
                    await kube.merge_patch_object(LEASES, namespace, f"ring-{holder}", patch, write="lease")
                await asyncio.sleep(0.3)

        assigner = Assigner(
            kube,
            lease_namespace=namespace,
            ring="ring",
            namespaces=(namespace,),
            timings=timings,
            default_secret=None,
        )
        tasks = [asyncio.create_task(renew()), asyncio.create_task(assigner.run())]
        try:
            await until(lambda: assigner.index is not None and len(assigner.index) == len(names), "the index")
            # Behind the assigner's back: x-0 asked to drain (no acknowledgement, so the
            # assigner's drain watch leaves it be).
            drain = {"metadata": {"labels": {DRAIN_LABEL: "pod-c"}}}
            await kube.merge_patch_object(BUCKETSYNCS, namespace, "x-0", drain, write="test")
            renewing.discard("pod-b")  # SIGKILLed: its Lease expires
            await until(
                lambda: (
                    any(kind == "list" for kind, _, _ in kube.calls)
                    and all(owner == "pod-a" for owner in owners(objects).values())
                ),
                "pod-b's objects moved, and read once",
            )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    calls = kube.calls
    assert calls[0][0] == "json"  # no read before the first move
    read = calls.index(("list", f"{OWNER_LABEL} in (pod-b)", 0))
    first_moves: dict[str, int] = {}
    for kind, name, status in calls[:read]:
        if kind == "json":
            first_moves.setdefault(name, status)
    # The API server's `test` of a missing drain label (value null) passes: a move each, at once.
    assert first_moves == {"x-0": 422, "x-1": 200, "x-2": 200, "x-3": 200}
    assert ("json", "x-0", 200) in calls
    assert handshake_marks(objects) == 0
