"""Shard assignment (rendezvous hashing) and ring membership with an injected clock; no I/O."""

from __future__ import annotations

from collections import Counter

from mixpeek_operator.leaderelection import LeaseRecord
from mixpeek_operator.sharding import MembershipView, lease_name_for, rendezvous_owner, shard_key_of

KEYS = [f"team-{i % 7}\0creds\0bkt_{i}" for i in range(3000)]


def assignment(members: list[str]) -> dict[str, str | None]:
    return {key: rendezvous_owner(key, members) for key in KEYS}


def test_keys_spread_evenly_and_the_owner_does_not_depend_on_member_order() -> None:
    members = ["shard-a", "shard-b", "shard-c"]
    owners = assignment(members)
    counts = Counter(owners.values())
    assert set(counts) == set(members)
    assert all(800 <= count <= 1200 for count in counts.values()), counts
    assert owners == assignment(list(reversed(members)))
    assert rendezvous_owner("anything", []) is None


def test_a_joining_member_takes_only_the_keys_it_now_wins() -> None:
    before = assignment(["shard-a", "shard-b", "shard-c"])
    after = assignment(["shard-a", "shard-b", "shard-c", "shard-d"])
    moved = [key for key in KEYS if before[key] != after[key]]
    assert all(after[key] == "shard-d" for key in moved)
    # About a quarter moves (the minimum for a balanced ring of four), not a reshuffle.
    assert 0.2 * len(KEYS) <= len(moved) <= 0.3 * len(KEYS)


def test_a_leaving_member_hands_over_only_its_own_keys() -> None:
    before = assignment(["shard-a", "shard-b", "shard-c"])
    after = assignment(["shard-a", "shard-c"])
    moved = [key for key in KEYS if before[key] != after[key]]
    assert moved
    assert all(before[key] == "shard-b" for key in moved)
    assert all(before[key] == after[key] for key in KEYS if before[key] != "shard-b")


def record(holder: str, renewed: str, duration: int = 15) -> LeaseRecord:
    return LeaseRecord(holder, duration, "t0", renewed, 0)


def test_a_member_is_live_until_its_lease_is_unchanged_for_its_duration_by_our_clock() -> None:
    view = MembershipView()
    view.observe({"ring-a": record("a", "r1"), "ring-b": record("b", "r1")}, now=100.0)
    assert view.members(100.0) == {"a", "b"}
    # a renews (a new version), b does not.
    view.observe({"ring-a": record("a", "r2"), "ring-b": record("b", "r1")}, now=110.0)
    assert view.members(114.9) == {"a", "b"}
    assert view.members(115.0) == {"a"}  # b unchanged since 100.0: expired, its keys may move
    assert view.members(124.9) == {"a"}
    assert view.members(125.0) == set()


def test_a_released_or_deleted_lease_leaves_the_ring_at_once() -> None:
    view = MembershipView()
    view.observe({"ring-a": record("a", "r1"), "ring-b": record("b", "r1")}, now=0.0)
    view.observe({"ring-a": record("", "r2", duration=1), "ring-b": record("b", "r1")}, now=1.0)
    assert view.members(1.0) == {"b"}
    view.observe({}, now=2.0)
    assert view.members(2.0) == set()


def test_shard_keys_come_from_the_spec_and_lease_names_are_valid() -> None:
    body = {"metadata": {"namespace": "team"}, "spec": {"bucketId": "bkt_1", "credentialsRef": {"name": "c"}}}
    assert shard_key_of(body, None) == ("team", "c", "bkt_1")
    del body["spec"]["credentialsRef"]
    assert shard_key_of(body, ("ops", "default")) == ("ops", "default", "bkt_1")
    assert lease_name_for("mixpeek-operator", "Host_Name-1a2b") == "mixpeek-operator-host-name-1a2b"
