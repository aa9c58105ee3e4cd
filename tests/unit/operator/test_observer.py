"""The observer (remote cache and listing loop) on a fake clock, with an in-memory lister
standing in for the Mixpeek client's `list_all_syncs`. Nothing here sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from mixpeek_operator import observer as observer_module
from mixpeek_operator.constants import OWNER_REF_KEY, OWNER_UID_KEY
from mixpeek_operator.keys import ListingScope, ObjectKey
from mixpeek_operator.mixpeek import APIConnectionError, MixpeekError, RateLimitError, SyncListing
from mixpeek_operator.mixpeek.models import SyncConfiguration
from mixpeek_operator.observer import Observer, ObserverSettings
from tests.support.fakes import FakeClock, ParkedSleep

SCOPE = ListingScope("sha256:abc", "ns", "bkt_1")
OTHER_SCOPE = ListingScope("sha256:abc", "ns", "bkt_2")
A, B = ObjectKey("team", "a"), ObjectKey("team", "b")


def sync(sync_id: str, **fields: object) -> SyncConfiguration:
    return SyncConfiguration.model_validate(
        {
            "sync_config_id": sync_id,
            "bucket_id": "bkt_1",
            "connection_id": "conn_1",
            "internal_id": "int",
            "namespace_id": "ns",
            "source_path": "bucket/path",
            "created_by_user_id": "user",
            **fields,
        }
    )


@dataclass
class FakeLister:
    syncs: list[SyncConfiguration] = field(default_factory=list)
    error: MixpeekError | None = None
    calls: list[str] = field(default_factory=list)
    during_call: Callable[[], None] | None = None  # runs while the list is "in flight"

    async def list_all_syncs(self, bucket_id: str, /, *, page_size: int) -> SyncListing:
        self.calls.append(bucket_id)
        if self.during_call is not None:
            self.during_call()
        if self.error is not None:
            raise self.error
        return SyncListing(list(self.syncs), 1)


@dataclass
class Rig:
    observer: Observer
    clock: FakeClock
    sleep: ParkedSleep
    lister: FakeLister
    enqueued: list[ObjectKey]

    async def joined(self, obj: ObjectKey, scope: ListingScope = SCOPE) -> None:
        """Join and wait for the scope's first listing (the loop then parks in its sleep)."""
        self.observer.join(obj, scope, self.lister)
        await self.observer.listings[scope].primed.wait()
        await asyncio.sleep(0)

    async def two_settled_members(self) -> None:
        """A and B in SCOPE, reconciled against syncs s1 and s2."""
        self.lister.syncs = [sync("s1"), sync("s2")]
        await self.joined(A)
        await self.joined(B)
        self.observer.settle(A, SCOPE, "s1")
        self.observer.settle(B, SCOPE, "s2")


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    clock, sleep, enqueued = FakeClock(), ParkedSleep(), []
    observer = Observer(
        ObserverSettings(interval=60.0, jitter=0.1, page_size=50),
        enqueued.append,
        clock=clock,
        sleep=sleep,
        jitter=lambda: 0.5,
    )
    yield Rig(observer, clock, sleep, FakeLister([sync("s1")]), enqueued)
    await observer.close()


async def test_objects_in_one_scope_share_one_listing(rig: Rig) -> None:
    await rig.joined(A)
    await rig.joined(B)
    assert rig.lister.calls == ["bkt_1"]
    assert rig.sleep.delays == [60.0]  # jitter 0.5 is the middle of the ±10 % spread
    await rig.joined(A, OTHER_SCOPE)  # A moves to another bucket: a second listing
    assert sorted(rig.lister.calls) == ["bkt_1", "bkt_2"]
    assert set(rig.observer.listings[SCOPE].members) == {B}


async def test_the_last_member_leaving_stops_the_listing(rig: Rig) -> None:
    await rig.joined(A)
    task = rig.observer.listings[SCOPE].task
    rig.observer.leave(A)
    assert SCOPE not in rig.observer.listings
    assert task is not None
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_fresh_listing_answers_lookups_and_a_stale_one_does_not(rig: Rig) -> None:
    await rig.joined(A)
    found = await rig.observer.lookup(SCOPE, "s1")
    assert isinstance(found, SyncConfiguration)
    assert found.sync_config_id == "s1"
    # Absent from a listing is not proof of deletion: the caller must GET.
    assert await rig.observer.lookup(SCOPE, "s2") == "unknown"
    assert await rig.observer.lookup(OTHER_SCOPE, "s1") == "unknown"
    rig.clock.advance(120.0)  # two intervals without a listing
    assert await rig.observer.lookup(SCOPE, "s1") == "unknown"


async def test_only_members_whose_remote_sync_changed_are_enqueued(rig: Rig) -> None:
    await rig.two_settled_members()
    listing = rig.observer.listings[SCOPE]
    await rig.observer.refresh(listing)
    assert rig.enqueued == []  # nothing changed since the reconciles
    rig.lister.syncs = [sync("s1", batch_size=99), sync("s2", locked_by_worker_id="w")]
    await rig.observer.refresh(listing)
    assert rig.enqueued == [A]  # a lock is not a change the object cares about
    rig.lister.syncs = [sync("s1", batch_size=99)]
    await rig.observer.refresh(listing)
    assert rig.enqueued == [A, B]  # s2 vanished


async def test_a_suspended_observer_lists_nothing_and_resumes_afresh_enqueuing_only_changes(
    rig: Rig,
) -> None:
    await rig.two_settled_members()
    await rig.observer.suspend()  # a label shard's Lease lapsed
    listing = rig.observer.listings[SCOPE]
    assert listing.task is None
    assert listing.syncs == {}
    assert not listing.primed.is_set()
    assert await rig.observer.owned(SCOPE, "uid", "ref") is None  # nothing cached to trust
    rig.observer.join(A, OTHER_SCOPE, rig.lister)  # joins while suspended start no listing
    assert rig.observer.listings[OTHER_SCOPE].task is None
    rig.observer.leave(A)  # members still come and go
    calls = len(rig.lister.calls)
    rig.lister.syncs = [sync("s1"), sync("s2", batch_size=99)]  # changed while suspended
    rig.observer.resume()
    await listing.primed.wait()
    await asyncio.sleep(0)
    assert len(rig.lister.calls) == calls + 1  # listed afresh once, after the resume
    assert rig.enqueued == [B]  # only the member whose sync changed
    assert SCOPE in rig.observer.listings
    assert set(listing.members) == {B}
    assert OTHER_SCOPE not in rig.observer.listings  # its only member left while suspended


async def test_a_write_during_a_listing_is_not_rolled_back_by_it(rig: Rig) -> None:
    await rig.joined(A)
    listing = rig.observer.listings[SCOPE]
    created = sync("s9")

    def write_while_listing() -> None:
        rig.observer.remember(SCOPE, created)
        rig.observer.forget(SCOPE, "s1")

    rig.lister.during_call = write_while_listing
    await rig.observer.refresh(listing)  # the listing still has s1 and lacks s9
    assert set(listing.syncs) == {"s9"}
    rig.lister.during_call = None
    rig.clock.advance(1)
    await rig.observer.refresh(listing)  # a listing started after the write is believed
    assert set(listing.syncs) == {"s1"}


def marked(sync_id: str, uid: str, ref: str | None, **fields: object) -> SyncConfiguration:
    metadata = {OWNER_UID_KEY: uid, **({OWNER_REF_KEY: ref} if ref else {})}
    return sync(sync_id, metadata=metadata, **fields)


async def test_an_objects_syncs_are_found_by_their_marker_newest_first(rig: Rig) -> None:
    rig.lister.syncs = [
        marked("old", "uid-a", "team/a", created_at="2026-01-01T00:00:00Z"),
        marked("new", "uid-a", "team/a", created_at="2026-02-01T00:00:00Z"),
        marked("recreated", "uid-old", "team/a", created_at="2026-01-15T00:00:00Z"),  # same name
        marked("other", "uid-b", "team/b"),
        sync("unmarked"),
    ]
    await rig.joined(A)
    owned = await rig.observer.owned(SCOPE, "uid-a", "team/a")
    assert [s.sync_config_id for s in owned or []] == ["new", "recreated", "old"]
    assert await rig.observer.owned(OTHER_SCOPE, "uid-a", "team/a") is None
    # Writes through the cache keep the index current.
    rig.observer.forget(SCOPE, "new")
    rig.observer.remember(SCOPE, marked("old", "uid-b", "team/b"))  # its marker changed
    owned = await rig.observer.owned(SCOPE, "uid-a", "team/a")
    assert [s.sync_config_id for s in owned or []] == ["recreated"]
    owned = await rig.observer.owned(SCOPE, "uid-b", "team/b")
    assert {s.sync_config_id for s in owned or []} == {"old", "other"}
    assert rig.observer.sizes()["observer.owner_index"] == 4  # uid-old, uid-b, team/a, team/b


async def test_a_bulk_of_lookups_in_one_bucket_never_sorts_the_bucket(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: every lookup of a not-yet-identified object sorted the whole listing, so a
    bulk create of N objects in one bucket cost O(N² log N)."""
    rig.lister.syncs = [marked(f"s{i}", f"uid-{i}", f"team/o{i}") for i in range(2000)]
    await rig.joined(A)
    sorted_items = 0
    real_sorted = sorted

    def counting_sorted(items: Any, **kwargs: Any) -> Any:
        nonlocal sorted_items
        result = real_sorted(items, **kwargs)
        sorted_items += len(result)
        return result

    monkeypatch.setattr("builtins.sorted", counting_sorted)
    for i in range(200):
        found = await rig.observer.owned(SCOPE, f"uid-{i}", f"team/o{i}")
        assert [s.sync_config_id for s in found or []] == [f"s{i}"]
    assert sorted_items <= 200  # one sync each, not the 2,000 of the bucket each time


async def test_a_failing_listing_backs_off_and_leaves_creates_to_list_themselves(rig: Rig) -> None:
    rig.lister.error = APIConnectionError("connection refused")
    await rig.joined(A)
    listing = rig.observer.listings[SCOPE]
    # Never listed: no answer at once (not a wait through the backoff), the reconcile lists itself.
    assert await rig.observer.owned(SCOPE, "uid-a", "team/a") is None
    assert listing.error is not None
    assert rig.sleep.delays == [0.5]  # full jitter of the 1 s base
    assert await rig.observer.refresh(listing) == 1.0
    assert await rig.observer.refresh(listing) == 2.0
    rig.lister.error = RateLimitError(status_code=429, error_type=None, message="slow down", retry_after=30)
    assert await rig.observer.refresh(listing) == 30.0  # Retry-After is never undercut
    rig.lister.error = None
    assert await rig.observer.refresh(listing) == 60.0
    assert listing.failures == 0
    assert await rig.observer.owned(SCOPE, "uid-a", "team/a") == []  # listed now, and nothing is a's


async def test_an_unchanged_sync_is_not_hashed_again_on_every_pass(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    await rig.two_settled_members()
    hashed: list[str | None] = []
    real_digest = observer_module._digest

    def counting_digest(remote: SyncConfiguration) -> str:
        hashed.append(remote.sync_config_id)
        return real_digest(remote)

    monkeypatch.setattr(observer_module, "_digest", counting_digest)
    listing = rig.observer.listings[SCOPE]
    rig.lister.syncs = [sync("s1"), sync("s2")]  # new, equal models: as a new page parses them
    await rig.observer.refresh(listing)
    assert hashed == []
    assert rig.enqueued == []
    rig.lister.syncs = [sync("s1", total_files_synced=3), sync("s2")]
    await rig.observer.refresh(listing)
    assert hashed == ["s1"]  # only the changed sync
    assert rig.enqueued == [A]
    assert set(listing.projections) == {"s1", "s2"}
    rig.lister.syncs = [sync("s2")]
    await rig.observer.refresh(listing)
    assert set(listing.projections) == {"s2"}  # a sync gone from the listing is dropped
