"""Shard assignment (rendezvous hashing) and ring membership with an injected clock; no I/O."""

from __future__ import annotations

from collections import Counter

from mixpeek_operator.coordination.lease import LeaseRecord
from mixpeek_operator.coordination.ring import (
    MembershipView,
    Ownership,
    ShardKey,
    lease_name_for,
    rendezvous_owner,
    shard_key_of,
)

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


GROUPS: list[ShardKey] = [("team", "creds", f"bkt_{i:02d}") for i in range(30)]


def owned(replica: Ownership, now: float, lease_valid: bool = True) -> set[ShardKey]:
    return {key for key in GROUPS if replica.owns(key, now, lease_valid)}


def test_a_joiner_owns_nothing_until_its_join_delay_while_the_others_let_go_at_once() -> None:
    a, b = Ownership("a", join_delay=15, view_ttl=10), Ownership("b", join_delay=15, view_ttl=10)
    a.join(0.0)
    a.view({"a"}, 0.0)
    assert owned(a, 14.9) == set()  # a's own join delay
    a.view({"a"}, 15.0)
    assert owned(a, 15.0) == set(GROUPS)

    b.join(20.0)  # b's lease appears at 20
    b.view({"a", "b"}, 20.5)
    a.view({"a", "b"}, 21.0)  # a sees b one retry period later and drops b's groups
    for now in (21.0, 30.0, 34.9):
        a.view({"a", "b"}, now)
        b.view({"a", "b"}, now)
        assert owned(b, now) == set()
        assert owned(a, now) | owned(b, now) != set(GROUPS)  # b's groups are nobody's meanwhile
    a.view({"a", "b"}, 35.0)
    b.view({"a", "b"}, 35.0)
    mine, theirs = owned(a, 35.0), owned(b, 35.0)
    assert mine.isdisjoint(theirs)
    assert mine | theirs == set(GROUPS)
    assert theirs  # b took its share


def test_never_two_owners_while_views_disagree_about_a_departed_member() -> None:
    a, b = Ownership("a", 15, 10), Ownership("b", 15, 10)
    for replica in (a, b):
        replica.join(0.0)
        replica.view({"a", "b", "c"}, 20.0)
    before = owned(a, 20.0) | owned(b, 20.0)
    a.view({"a", "b"}, 21.0)  # a has seen c's lease expire, b not yet
    b.view({"a", "b", "c"}, 21.0)
    assert owned(a, 21.0).isdisjoint(owned(b, 21.0))
    assert owned(a, 21.0) >= (owned(a, 20.0) & before)  # a keeps what it had
    b.view({"a", "b"}, 22.0)
    assert owned(a, 22.0) | owned(b, 22.0) == set(GROUPS)
    assert owned(a, 22.0).isdisjoint(owned(b, 22.0))


def test_a_stale_view_or_an_unrenewed_lease_owns_nothing() -> None:
    a = Ownership("a", 15, 10)
    a.join(0.0)
    a.view({"a"}, 20.0)
    assert owned(a, 29.9) == set(GROUPS)
    assert owned(a, 30.0) == set()  # could not list the ring for the view TTL: might miss a joiner
    a.view({"a"}, 31.0)
    assert owned(a, 31.0, lease_valid=False) == set()  # fencing: own lease not renewed
    a.leave()
    assert owned(a, 31.0) == set()


def test_a_view_that_went_stale_counts_as_a_change_even_with_the_same_members() -> None:
    """Between a stale view and the next one another replica may have owned (and created syncs
    in) our groups: the work restarts, dropping listings fetched before."""
    a = Ownership("a", 15, 10)
    a.join(0.0)
    assert not a.lapsed(5.0)  # no view yet
    a.view({"a"}, 20.0)
    assert a.view_expiry() == 30.0
    assert not a.lapsed(29.9)
    assert a.lapsed(30.0)
    assert not a.view({"a"}, 31.0)  # the members alone say nothing changed
    assert not a.lapsed(31.0)
