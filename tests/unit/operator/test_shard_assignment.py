"""Label shards' pure rules (coordination/assignment.py): targets, the handshake, the join delay."""

from __future__ import annotations

from collections import Counter
from typing import Any, cast

from mixpeek_operator.coordination.assigner import Assigner
from mixpeek_operator.coordination.assignment import (
    OWNER_LABEL,
    Action,
    Member,
    Membership,
    Placement,
    member_label,
    plan_all,
    plan_group,
)
from mixpeek_operator.coordination.lease import LeaseTimings
from mixpeek_operator.coordination.ring import rendezvous_owner

JOIN_DELAY = 15.0


def members(*names: str, acks: bool = True, since: float = 0.0) -> list[Member]:
    return [Member(name, member_label(name), acks, since) for name in names]


def ring(*groups: list[Member], now: float = 100.0) -> Membership:
    return Membership([member for group in groups for member in group], now, JOIN_DELAY)


def placement(
    name: str,
    group: str,
    owner: str | None = None,
    drain_to: str | None = None,
    drained_by: str | None = None,
    rv: str = "7",
) -> Placement:
    return Placement("ns", name, rv, group, owner, drain_to, drained_by)


def fleet(groups: int, per_group: int, owner_of: dict[str, str] | None = None) -> list[Placement]:
    return [
        placement(f"o-{g}-{i}", f"ns\0creds\0bkt_{g}", (owner_of or {}).get(f"ns\0creds\0bkt_{g}"))
        for g in range(groups)
        for i in range(per_group)
    ]


def test_member_label_is_the_pod_name_or_a_digest_when_that_is_no_label_value() -> None:
    assert member_label("mixpeek-operator-7d9f8-abcde") == "mixpeek-operator-7d9f8-abcde"
    long = "x" * 64
    assert member_label(long).startswith("m-")
    assert len(member_label(long)) <= 63
    assert member_label("host:1234") != member_label("host:1235")


def test_new_objects_are_labelled_by_group_and_spread_over_the_members() -> None:
    live = ring(members("a", "b", "c"))
    plan = plan_all(fleet(30, 4), live)
    assert plan.waiting == 0
    assert {action.kind for action in plan.actions} == {"label"}
    by_group: dict[str, set[str]] = {}
    for action in plan.actions:
        by_group.setdefault(action.placement.group, set()).add(action.to)
    assert all(len(owners) == 1 for owners in by_group.values())  # a bucket stays together
    per_member = Counter(next(iter(owners)) for owners in by_group.values())
    assert sorted(per_member.values()) == [10, 10, 10]  # equal buckets split evenly, not by chance


def test_targets_are_balanced_sticky_and_a_joiner_or_a_departure_moves_only_what_it_must() -> None:
    # 40 buckets of 1000 objects: plain rendezvous would give 4 replicas 5, 8, 10 and 17 groups.
    four = ring(members("shard-0", "shard-1", "shard-2", "shard-3"))
    plan_all(fleet(40, 5), four)
    owners = dict(four.targets)
    assert sorted(Counter(owners.values()).values()) == [10, 10, 10, 10]
    five = Membership(members("shard-0", "shard-1", "shard-2", "shard-3", "shard-4"), 100.0, JOIN_DELAY, four)
    plan = plan_all(fleet(40, 5, owners), five)
    moved = {g for g in owners if five.targets[g] != owners[g]}
    assert len(moved) == 8  # exactly the joiner's share, 1/5
    assert all(five.targets[g] == "shard-4" for g in moved)
    assert {a.kind for a in plan.actions} == {"drain"}
    left = dict(five.targets)
    four_again = Membership(members("shard-0", "shard-2", "shard-3", "shard-4"), 100.0, JOIN_DELAY, five)
    plan = plan_all(fleet(40, 5, left), four_again)
    moved = {g for g in left if four_again.targets[g] != left[g]}
    assert moved == {g for g, owner in left.items() if owner == "shard-1"}  # only the departed's
    assert sorted(Counter(four_again.targets.values()).values()) == [10, 10, 10, 10]
    assert {a.kind for a in plan.actions} == {"move"}  # its owner is gone: no handshake
    # A plan made again (a new assigner, the periodic pass) moves nothing.
    again = Membership(members("shard-0", "shard-2", "shard-3", "shard-4"), 100.0, JOIN_DELAY, four_again)
    assert plan_all(fleet(40, 5, dict(four_again.targets)), again).actions == []


def test_mid_upgrade_targets_are_the_rendezvous_ring_s_so_old_replicas_agree() -> None:
    mixed = ring(members("a", "b"), members("old", acks=False))
    plan_all(fleet(30, 2), mixed)
    for group in {p.group for p in fleet(30, 2)}:
        assert mixed.target(group).identity == rendezvous_owner(group, ["a", "b", "old"])  # type: ignore[union-attr]


def test_a_joining_member_takes_its_groups_each_through_a_drain() -> None:
    before = ring(members("a", "b", "c"))
    plan_all(fleet(40, 3), before)
    placements = fleet(40, 3, dict(before.targets))
    after = Membership(members("a", "b", "c", "d"), 100.0, JOIN_DELAY, before)
    plan = plan_all(placements, after)
    moved_groups = {action.placement.group for action in plan.actions}
    assert {action.kind for action in plan.actions} == {"drain"}
    assert all(action.to == "d" for action in plan.actions)
    assert len(moved_groups) == 10  # a quarter: its share, nothing else moves
    assert plan.moving_groups == moved_groups


def test_the_label_moves_only_after_the_old_owner_acknowledged() -> None:
    live = ring(members("a", "b"))
    group = next(g for g in (f"ns\0creds\0bkt_{i}" for i in range(50)) if live.target(g).label == "b")  # type: ignore[union-attr]
    asked = placement("x", group, owner="a", drain_to="b")
    assert plan_group([asked], live).actions == []  # waiting for a's acknowledgement
    acknowledged = placement("x", group, owner="a", drain_to="b", drained_by="a")
    (move,) = plan_group([acknowledged], live).actions
    assert move.kind == "move"
    assert move.to == "b"
    # Conditional on the marks the decision read, not on the resourceVersion: the owner's status
    # writes go on meanwhile and change nothing of it.
    assert move.patch() == (
        "json",
        [
            {"op": "test", "path": "/metadata/labels/shard.mixpeek.com~1owner", "value": "a"},
            {"op": "test", "path": "/metadata/annotations/shard.mixpeek.com~1drained-by", "value": "a"},
            {"op": "replace", "path": "/metadata/labels/shard.mixpeek.com~1owner", "value": "b"},
            {"op": "remove", "path": "/metadata/labels/shard.mixpeek.com~1drain-to"},
            {"op": "remove", "path": "/metadata/annotations/shard.mixpeek.com~1drained-by"},
        ],
    )


def test_a_drain_toward_an_old_target_is_redirected_and_one_called_off_is_cleared() -> None:
    live = ring(members("a", "b"))
    group_b = next(g for g in (f"g{i}" for i in range(50)) if live.target(g).label == "b")  # type: ignore[union-attr]
    (redirect,) = plan_group([placement("x", group_b, owner="a", drain_to="gone")], live).actions
    assert (redirect.kind, redirect.to) == ("drain", "b")
    assert redirect.patch() == (
        "json",
        [
            {"op": "test", "path": "/metadata/labels/shard.mixpeek.com~1owner", "value": "a"},
            {"op": "add", "path": "/metadata/labels/shard.mixpeek.com~1drain-to", "value": "b"},
        ],
    )
    # The target came back to the owner: the marks go, the owner keeps it.
    (clear,) = plan_group([placement("x", group_b, owner="b", drain_to="a", drained_by="b")], live).actions
    assert (clear.kind, clear.to) == ("move", "b")


def test_objects_of_a_member_that_is_gone_move_at_once() -> None:
    live = ring(members("a", "b"))
    placements = [placement(f"x{i}", f"g{i}", owner="dead") for i in range(20)]
    plan = plan_all(placements, live)
    assert {action.kind for action in plan.actions} == {"move"}
    assert {action.to for action in plan.actions} <= {"a", "b"}
    assert plan.moving_groups == set()


def test_a_new_object_of_a_moving_group_waits_until_the_group_has_moved() -> None:
    live = ring(members("a", "b"))
    group = next(g for g in (f"g{i}" for i in range(50)) if live.target(g).label == "b")  # type: ignore[union-attr]
    plan = plan_group([placement("old", group, owner="a"), placement("new", group)], live)
    assert [(action.kind, action.placement.name) for action in plan.actions] == [("drain", "old")]
    assert plan.waiting == 1
    # Moved: the new one is labelled.
    plan = plan_group([placement("old", group, owner="b"), placement("new", group)], live)
    assert [(action.kind, action.placement.name) for action in plan.actions] == [("label", "new")]


def test_a_new_object_is_labelled_by_a_merge_patch_pinned_to_what_was_read() -> None:
    (label,) = plan_group([placement("x", "g")], ring(members("a"))).actions
    assert label.patch() == ("merge", {"metadata": {"resourceVersion": "7", "labels": {OWNER_LABEL: "a"}}})


def test_no_member_no_writes() -> None:
    plan = plan_all(fleet(3, 2), ring())
    assert plan.actions == []
    assert plan.waiting == 6


def test_mid_upgrade_objects_leave_a_rendezvous_replica_only_after_the_join_delay() -> None:
    old = members("old", acks=False, since=0.0)
    new = members("new", acks=True, since=95.0)  # live for 5 s of a 15 s join delay
    early = ring(old, new, now=100.0)
    group = next(g for g in (f"g{i}" for i in range(50)) if early.target(g).label == "new")  # type: ignore[union-attr]
    unlabelled, on_old = placement("u", group), placement("o", group, owner="old")
    assert plan_group([on_old], early).actions == []  # never a drain: the old replica ignores it
    assert plan_group([unlabelled], early).actions == []  # the old replica may still work on it
    settled = ring(old, new, now=110.0)
    assert [a.kind for a in plan_group([on_old], settled).actions] == ["move"]
    assert [a.kind for a in plan_group([unlabelled], settled).actions] == ["label"]
    # Labelling for the old replica itself needs no delay: it owns the key by its own rule too.
    group_old = next(g for g in (f"g{i}" for i in range(50)) if early.target(g).label == "old")  # type: ignore[union-attr]
    assert [a.kind for a in plan_group([placement("v", group_old)], early).actions] == ["label"]


# --- the assigner's write queue: one write per object, the freshest decision wins -------------


async def test_a_queued_write_is_replaced_by_one_decided_on_a_fresher_read_and_never_duplicated() -> None:
    assigner = Assigner(
        cast(Any, None),
        lease_namespace="ops",
        ring="r",
        namespaces=(),
        timings=LeaseTimings(),
        default_secret=None,
    )
    old = Action("drain", placement("x", "g", owner="a", rv="10"), "b")
    newer = Action("move", placement("x", "g", owner="a", drained_by="a", rv="12"), "b")
    await assigner._apply_all([old])
    await assigner._apply_all([newer])
    await assigner._apply_all([old])  # a plan from an older list comes late: it loses
    assert assigner._todo.qsize() == 1
    assert assigner._pending[next(iter(assigner._pending))][0] is newer
    # A full plan's list supersedes what was decided on older reads (here: nothing newer).
    assigner._supersede([placement("x", "g", owner="a", rv="11")])
    assert len(assigner._pending) == 1
    assigner._supersede([placement("x", "g", owner="b", rv="13")])
    assert assigner._pending == {}
