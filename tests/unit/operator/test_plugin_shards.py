"""`kubectl mixpeek status`'s shard map without a cluster: members, counting and rendering."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mixpeek_operator.coordination.ring import RING_LABEL
from mixpeek_operator.plugin import shards
from mixpeek_operator.plugin.session import Session, bucketsync_pages, dump

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
RING = "rel-mixpeek-operator"


def lease(
    identity: str, renewed_ago: float = 1, *, mode: str | None = "labels", name: str | None = None
) -> dict[str, Any]:
    renew = (NOW - timedelta(seconds=renewed_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    annotations = {shards.MODE_ANNOTATION: mode} if mode else {}
    return {
        "metadata": {
            "name": name or f"{RING}-{identity}",
            "namespace": "ops",
            "labels": {RING_LABEL: RING},
            "annotations": annotations,
        },
        "spec": {"holderIdentity": identity, "leaseDurationSeconds": 15, "renewTime": renew},
    }


def bsync(name: str, owner: str | None = None, drain_to: str | None = None) -> dict[str, Any]:
    labels = {
        **({shards.OWNER_LABEL: owner} if owner else {}),
        **({shards.DRAIN_LABEL: drain_to} if drain_to else {}),
    }
    return {
        "metadata": {"namespace": "media", "name": name, "labels": labels},
        "spec": {"credentialsRef": {"name": "creds"}, "bucketId": "b"},
    }


def sample() -> shards.ShardMap:
    members = [lease("pod-a"), lease("pod-b"), lease("pod-c", renewed_ago=60), lease("pod-old", mode=None)]
    objects = [
        *(bsync(f"a{i}", "pod-a") for i in range(3)),
        bsync("b0", "pod-b"),
        bsync("b1", "pod-b", drain_to="pod-a"),
        bsync("c0", "pod-c"),  # its owner's Lease expired
        bsync("gone", "pod-gone"),  # no Lease at all
        bsync("new"),
    ]
    return shards.build("ops", RING, members, lease("pod-b", name=f"{RING}-assigner"), objects, "all", NOW)


def test_members_are_live_by_renew_time_plus_duration() -> None:
    assert shards.is_live(lease("a", renewed_ago=14), NOW)
    assert not shards.is_live(lease("a", renewed_ago=16), NOW)
    released = lease("a")
    released["spec"]["holderIdentity"] = ""
    assert not shards.is_live(released, NOW)
    assert shards.member_of(released, NOW).state == "released"
    assert shards.member_of(lease("a", renewed_ago=16), NOW).state == "expired"


def test_owner_label_values_are_identities_or_a_stable_hash() -> None:
    assert shards.member_label("rel-mixpeek-operator-5d8f7-x2x9q") == "rel-mixpeek-operator-5d8f7-x2x9q"
    long = "x" * 64
    hashed = shards.member_label(long)
    assert hashed.startswith("m-")
    assert len(hashed) <= 63
    assert hashed == shards.member_label(long)
    assert shards.member_label("host/with:colons") != shards.member_label("host/with:colon")


def test_counting_owned_draining_unassigned_and_without_live_owner() -> None:
    m = sample()
    assert m.total == 8
    assert m.owned == {"pod-a": 3, "pod-b": 2, "pod-c": 1, "pod-gone": 1}
    assert (m.draining, m.incoming) == ({"pod-b": 1}, {"pod-a": 1})
    assert m.unassigned == 1
    assert m.live_labels == {"pod-a", "pod-b", "pod-old"}
    assert m.without_live_owner == 2  # pod-c expired, pod-gone has no Lease
    assert m.owners_without_lease == ["pod-gone"]
    assert not m.healthy


def test_only_rings_with_a_label_mode_member_are_shown() -> None:
    rendezvous_only = lease("x", mode=None)
    rendezvous_only["metadata"]["labels"] = {RING_LABEL: "old-ring"}
    assigner = lease("pod-a", name=f"{RING}-assigner")
    rings = shards.rings_of([lease("pod-a"), lease("pod-old", mode=None), rendezvous_only, assigner])
    assert list(rings) == [("ops", RING)]
    assert len(rings["ops", RING]) == 2  # the assigner Lease is never a member


def test_the_map_renders_a_row_per_member_and_the_totals() -> None:
    lines = shards.render(sample(), NOW).splitlines()
    assert lines[0].startswith(f"Shard ring {RING} (Leases in namespace ops), label shards")
    assert lines[1].split() == [
        "MEMBER",
        "LEASE",
        "RENEWED",
        "MODE",
        "OBJECTS",
        "DRAINING",
        "INCOMING",
        "ASSIGNER",
    ]
    rows = {line.split()[0]: line.split() for line in lines[2:7]}
    assert rows["pod-a"] == ["pod-a", "live", "1s", "labels", "3", "0", "1"]
    assert rows["pod-b"] == ["pod-b", "live", "1s", "labels", "2", "1", "0", "yes"]
    assert rows["pod-c"][:5] == ["pod-c", "expired", "1m", "labels", "1"]
    assert rows["pod-old"][:5] == ["pod-old", "live", "1s", "rendezvous", "0"]
    assert rows["pod-gone"][:5] == ["pod-gone", "no", "member", "-", "-"]
    assert lines[7].startswith("Assigner: pod-b (Lease rel-mixpeek-operator-assigner, renewed 1s ago)")
    assert lines[8] == "Objects: 8; unassigned (no owner label) 1; owner not a live member 2; draining 1"


@pytest.mark.parametrize(
    ("assigner", "expected"),
    [
        (None, "Assigner: none (no assigner Lease yet)"),
        (lease("pod-a", renewed_ago=99, name=f"{RING}-assigner"), "Assigner: none live (Lease"),
    ],
)
def test_no_live_assigner_is_said(assigner: dict[str, Any] | None, expected: str) -> None:
    rendered = shards.render(shards.build("ops", RING, [lease("pod-a")], assigner, [], "all", NOW), NOW)
    assert expected in rendered
    assert "yes" not in rendered


def test_the_map_as_data() -> None:
    data = shards.data(sample())
    assert data["assigner"] == "pod-b"
    assert [m["identity"] for m in data["members"]] == ["pod-a", "pod-b", "pod-c", "pod-old"]
    assert data["members"][0] == {
        "identity": "pod-a",
        "lease": f"{RING}-pod-a",
        "state": "live",
        "renewTime": lease("pod-a")["spec"]["renewTime"],
        "mode": "labels",
        "ownerLabel": "pod-a",
        "objects": 3,
        "draining": 0,
        "incoming": 1,
    }
    assert data["ownersWithoutLease"] == {"pod-gone": 1}
    assert (data["objects"], data["unassigned"], data["withoutLiveOwner"], data["draining"]) == (8, 1, 2, 1)
    assert json.loads(dump([data], "json"))[0] == data


def test_a_healthy_map() -> None:
    m = shards.build(
        "ops", RING, [lease("a"), lease("b")], None, [bsync("x", "a"), bsync("y", "b")], "all", NOW
    )
    assert m.healthy


async def test_objects_are_counted_page_by_page() -> None:
    class PagedKube:
        def __init__(self) -> None:
            self.calls: list[tuple[str | None, int | None, str | None]] = []

        async def list_page(
            self, resource: Any, namespace: str | None, *, label_selector: str | None, limit: int | None,
            continue_token: str | None,
        ) -> dict[str, Any]:  # fmt: skip
            self.calls.append((namespace, limit, continue_token))
            if continue_token is None:
                return {"items": [bsync("a", "pod-a"), bsync("b")], "metadata": {"continue": "next"}}
            return {"items": [bsync("c", "pod-a")], "metadata": {"continue": ""}}

    kube = PagedKube()
    session = Session(kube=kube, namespace="media", all_namespaces=False)  # type: ignore[arg-type]
    shard_map = shards.build("ops", RING, [lease("pod-a")], None, [], "namespace media", NOW)
    async for page in bucketsync_pages(session, None, 2):
        shards.count(shard_map, page)
    assert kube.calls == [("media", 2, None), ("media", 2, "next")]
    assert (shard_map.total, shard_map.owned["pod-a"], shard_map.unassigned) == (3, 2, 1)
