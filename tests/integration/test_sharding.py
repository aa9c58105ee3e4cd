"""Rendezvous sharding (active/active) with three `mixpeek-operator run --sharding
--sharding-mode rendezvous` processes (every replica watches every object), the real API
server and an emulator seeded with 30 buckets (30 listing groups: one Secret x 30 buckets).

Shorter lease timings than the defaults (8/6/1 s) keep the test quick; the rules are the same.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from hack.localcluster import ControlPlane
from tests.support.operator_support import (
    EmulatorProcess,
    Objects,
    OperatorFactory,
    OperatorProcess,
    endpoint_counts,
    kubernetes_writes,
    wait_for,
)
from tests.support.shard_support import (
    BUCKETS,
    INTERVAL,
    LEASE,
    all_ready,
    create_answers,
    create_fleet,
    lists_per_bucket,
    remote_owners,
    ring,
    ring_emulator,
    start_shard,
    successful_creates,
)

pytestmark = pytest.mark.usefixtures("crd_installed")
__all__ = ["ring", "ring_emulator"]  # fixtures, used by name


def start_shards(start_operator: OperatorFactory, namespace: str, *extra: str) -> dict[str, OperatorProcess]:
    # Today's default of --sharding is label shards; these are the rendezvous mode's tests.
    return {
        name: start_shard(start_operator, namespace, name, "--sharding-mode", "rendezvous", *extra)
        for name in ("shard-a", "shard-b", "shard-c")
    }


def owned_groups(shards: dict[str, OperatorProcess]) -> dict[str, float]:
    return {
        name: shard.metric("mixpeek_operator_shard_owned_groups")
        for name, shard in shards.items()
        if shard.alive()
    }


def settled(shard: OperatorProcess) -> bool:
    """Three members in its view and past its join delay (it owns keys)."""
    return (
        shard.metric("mixpeek_operator_shard_members") == 3 and shard.metric("mixpeek_operator_active") == 1
    )


def test_three_shards_split_the_groups_list_each_once_and_idle_without_writes(
    objects: Objects, ring: EmulatorProcess, start_operator: OperatorFactory, cluster: ControlPlane
) -> None:
    shards = start_shards(start_operator, objects.namespace)
    names, uids = create_fleet(objects, 300)
    wait_for(lambda: all_ready(objects, names), 240, interval=1.0, what="300 objects Ready")
    groups = owned_groups(shards)
    print(f"\ngroups owned per shard: {groups}")
    assert sum(groups.values()) == len(BUCKETS)
    assert all(count > 0 for count in groups.values())
    owners = remote_owners(ring, uids)
    assert len(owners) == len(set(owners)) == 300
    assert successful_creates(ring) == 300

    time.sleep(2 * INTERVAL)  # the last status writes and Events land
    writes_before = kubernetes_writes(cluster)
    ring.admin.clear_requests()
    window = 5 * INTERVAL
    time.sleep(window)
    per_bucket = lists_per_bucket(ring)
    assert kubernetes_writes(cluster) == writes_before, "an idle sharded fleet wrote to the Kubernetes API"
    counts = endpoint_counts(ring.admin)
    print(
        f"idle {window:.0f}s: {sum(per_bucket.values())} lists for {len(BUCKETS)} groups, "
        f"other calls {counts}"
    )
    assert set(per_bucket) == set(BUCKETS)
    # One replica lists each group once per interval (±10% jitter): two replicas would double it.
    assert all(
        window / INTERVAL * 0.9 - 1 <= n <= window / INTERVAL * 1.1 + 1 for n in per_bucket.values()
    ), per_bucket
    assert counts["get"] == counts["create"] == counts["update"] == 0

    # SIGTERM of one shard: it releases its lease, the others take its groups at once.
    leaving = shards["shard-b"]
    os.killpg(leaving.proc.pid, signal.SIGTERM)
    signalled = time.monotonic()
    assert leaving.proc.wait(timeout=20) == 0
    survivors = {name: shard for name, shard in shards.items() if name != "shard-b"}
    wait_for(lambda: sum(owned_groups(survivors).values()) == len(BUCKETS), 30, interval=0.1, what="handover")
    print(f"SIGTERM handover of shard-b's groups: {time.monotonic() - signalled:.2f}s")
    assert sum(shard.metric("mixpeek_operator_shard_handovers_total") for shard in survivors.values()) > 0
    wait_for(lambda: all_ready(objects, names), 60, what="all still Ready")
    assert endpoint_counts(ring.admin)["create"] == 0  # counted since the idle window: none
    assert len(remote_owners(ring, uids)) == 300


def test_a_shard_killed_mid_create_hands_its_groups_over_without_duplicates(
    objects: Objects, ring: EmulatorProcess, start_operator: OperatorFactory
) -> None:
    ring.admin.add_fault(endpoint="create", latency_ms=50, response_delay_seconds=0.3)
    shards = start_shards(start_operator, objects.namespace, "--rate-limit", "20", "--rate-burst", "5")
    wait_for(lambda: all(settled(shard) for shard in shards.values()), 60, what="the ring to settle")
    names, uids = create_fleet(objects, 300)
    wait_for(lambda: endpoint_counts(ring.admin)["create"] >= 100, 120, what="100 remote creates")
    victim = shards["shard-b"]
    survivors = {name: shard for name, shard in shards.items() if name != "shard-b"}
    wait_for(lambda: sum(owned_groups(shards).values()) == len(BUCKETS), 30, what="all groups owned")
    groups = owned_groups(shards)
    handovers = sum(shard.metric("mixpeek_operator_shard_handovers_total") for shard in survivors.values())
    victim.kill()
    killed = time.monotonic()
    wait_for(lambda: sum(owned_groups(survivors).values()) == len(BUCKETS), 60, interval=0.1, what="handover")
    handover = time.monotonic() - killed
    print(
        f"\nSIGKILL of shard-b (groups per shard {groups}): handover after {handover:.2f}s (lease {LEASE}s)"
    )
    moved = (
        sum(shard.metric("mixpeek_operator_shard_handovers_total") for shard in survivors.values())
        - handovers
    )
    assert moved >= groups["shard-b"] > 0  # its groups moved (a survivor that paused counts too)
    wait_for(lambda: all_ready(objects, names), 300, interval=1.0, what="300 objects Ready")
    owners = remote_owners(ring, uids)
    duplicates = len(owners) - len(set(owners))
    print(
        f"remote syncs: {len(owners)}, successful creates: {successful_creates(ring)}, "
        f"create answers: {create_answers(ring)}, duplicates: {duplicates}"
    )
    assert duplicates == 0
    assert len(owners) == 300
    assert successful_creates(ring) == 300
