"""Lease decisions (client-go's tryAcquireOrRenew semantics) with an injected clock; no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mixpeek_operator.coordination.lease import (
    LeaseRecord,
    LeaseTimings,
    LeaseTracker,
    lease_body,
    micro_time,
)

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def held(holder: str, renewed: datetime = T0, transitions: int = 0) -> LeaseRecord:
    stamp = micro_time(renewed)
    return LeaseRecord(holder, 15, micro_time(T0), stamp, transitions)


def test_an_absent_lease_is_claimed_with_zero_transitions() -> None:
    tracker = LeaseTracker("a", 15)
    claim = tracker.claim(T0)
    assert claim == LeaseRecord("a", 15, "2026-01-01T12:00:00.000000Z", "2026-01-01T12:00:00.000000Z", 0)
    assert not tracker.held_by_other(0.0)


def test_a_lease_held_by_another_is_respected_until_unchanged_for_its_duration_by_our_clock() -> None:
    tracker = LeaseTracker("b", 15)
    tracker.observe(held("a"), now=100.0)
    assert tracker.held_by_other(100.0)
    assert tracker.held_by_other(114.9)
    # Same record read again: expiry still counts from when we first saw it.
    tracker.observe(held("a"), now=110.0)
    assert tracker.held_by_other(114.9)
    assert not tracker.held_by_other(115.0)
    assert tracker.expires_at() == 115.0  # a standby retries right then, not on its retry grid


def test_a_renewal_restarts_the_expiry_even_when_the_holders_clock_is_far_off() -> None:
    tracker = LeaseTracker("b", 15)
    tracker.observe(held("a", renewed=T0), now=100.0)
    # The holder's renewTime is an hour in the past by its clock: irrelevant, it changed.
    tracker.observe(held("a", renewed=T0 - timedelta(hours=1)), now=114.0)
    assert tracker.held_by_other(128.0)
    assert not tracker.held_by_other(129.0)


def test_taking_over_counts_a_transition_and_resets_the_acquire_time() -> None:
    tracker = LeaseTracker("b", 15)
    tracker.observe(held("a", transitions=3), now=0.0)
    later = T0 + timedelta(seconds=20)
    claim = tracker.claim(later)
    assert (claim.holder, claim.transitions) == ("b", 4)
    assert claim.acquire_time == claim.renew_time == micro_time(later)


def test_renewing_keeps_the_acquire_time_and_the_transition_count() -> None:
    tracker = LeaseTracker("a", 15)
    tracker.observe(held("a", transitions=2), now=0.0)
    later = T0 + timedelta(seconds=2)
    claim = tracker.claim(later)
    assert claim == LeaseRecord("a", 15, micro_time(T0), micro_time(later), 2)
    assert not tracker.held_by_other(1.0)


def test_a_released_lease_is_free_at_once() -> None:
    tracker = LeaseTracker("a", 15)
    tracker.observe(held("a", transitions=5), now=0.0)
    released = tracker.released(T0)
    assert (released.holder, released.duration_seconds, released.transitions) == ("", 1, 5)
    standby = LeaseTracker("b", 15)
    standby.observe(released, now=50.0)
    assert not standby.held_by_other(50.0)
    assert standby.claim(T0).transitions == 6


def test_lease_body_round_trips_and_pins_the_resource_version() -> None:
    record = held("a", transitions=1)
    body = lease_body("ops", "mixpeek-operator", record, "42")
    assert body["metadata"] == {"name": "mixpeek-operator", "namespace": "ops", "resourceVersion": "42"}
    assert LeaseRecord.from_lease(body) == record
    assert "resourceVersion" not in lease_body("ops", "x", record, None)["metadata"]


@pytest.mark.parametrize(
    ("lease", "renew", "retry", "message"),
    [
        (15, 15, 2, "lease duration must be longer"),
        (15, 2, 2, "renew deadline must be longer"),
        (15, 10, 0, "retry period must be positive"),
        (15.5, 10, 2, "whole seconds"),
    ],
)
def test_timings_that_would_let_two_leaders_overlap_are_refused(
    lease: float, renew: float, retry: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        LeaseTimings(lease_duration=lease, renew_deadline=renew, retry_period=retry)
