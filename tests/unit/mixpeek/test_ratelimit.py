"""The per-credential token bucket, on fake time."""

from __future__ import annotations

import asyncio
import gc

import pytest

from mixpeek_operator.mixpeek import (
    RateLimiterRegistry,
    TokenBucket,
    credential_fingerprint,
    rate_limiter_for,
)


class FakeTime:
    """A monotonic clock, a wall clock and a sleep that advances both instead of waiting."""

    def __init__(self, monotonic: float = 1_000.0, wall: float = 1_700_000_000.0) -> None:
        self.monotonic = monotonic
        self.wall = wall
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.monotonic

    def now(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.monotonic += seconds
        self.wall += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)  # still yield, as a real sleep would


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def bucket(fake_time: FakeTime, rate: float = 2.0, burst: int = 3) -> TokenBucket:
    return TokenBucket(rate, burst, clock=fake_time.clock, sleep=fake_time.sleep)


async def test_burst_is_free_then_one_token_per_interval(fake_time: FakeTime) -> None:
    limiter = bucket(fake_time, rate=2.0, burst=3)

    waits = [await limiter.acquire() for _ in range(6)]

    assert waits == [0.0, 0.0, 0.0, 0.5, 0.5, 0.5]
    assert fake_time.sleeps == [0.5, 0.5, 0.5]
    assert limiter.wait_seconds_total == 1.5


async def test_concurrent_callers_queue_behind_each_other(fake_time: FakeTime) -> None:
    async def overlapping_sleep(seconds: float) -> None:
        await asyncio.sleep(0)  # concurrent sleeps overlap, so none of them moves the clock

    limiter = TokenBucket(4.0, 1, clock=fake_time.clock, sleep=overlapping_sleep)

    waits = await asyncio.gather(*(limiter.acquire() for _ in range(4)))

    assert waits == [0.0, 0.25, 0.5, 0.75]


async def test_idle_time_refills_only_up_to_burst(fake_time: FakeTime) -> None:
    limiter = bucket(fake_time, rate=2.0, burst=3)
    for _ in range(3):
        await limiter.acquire()

    fake_time.advance(100.0)
    waits = [await limiter.acquire() for _ in range(4)]

    assert waits == [0.0, 0.0, 0.0, 0.5]


async def test_partial_refill_shortens_the_wait(fake_time: FakeTime) -> None:
    limiter = bucket(fake_time, rate=2.0, burst=1)
    await limiter.acquire()

    fake_time.advance(0.2)

    assert await limiter.acquire() == pytest.approx(0.3)


async def test_wait_hook_sees_every_wait(fake_time: FakeTime) -> None:
    seen: list[float] = []
    limiter = TokenBucket(1.0, 1, clock=fake_time.clock, sleep=fake_time.sleep, on_wait=seen.append)

    for _ in range(3):
        await limiter.acquire()

    assert seen == [1.0, 1.0]
    assert limiter.wait_seconds_total == 2.0


async def test_cancelled_waiter_gives_its_token_back(fake_time: FakeTime) -> None:
    async def sleep_forever(seconds: float) -> None:
        await asyncio.Event().wait()

    limiter = TokenBucket(1.0, 1, clock=fake_time.clock, sleep=sleep_forever)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter

    fake_time.advance(1.0)

    assert await limiter.acquire() == 0.0


# --- Retry-After holds --------------------------------------------------------------------


async def test_hold_stops_the_next_request_until_it_ends(fake_time: FakeTime) -> None:
    limiter = bucket(fake_time, rate=2.0, burst=3)
    await limiter.acquire()

    assert limiter.hold(2.0) is True
    started = fake_time.monotonic
    waited = await limiter.acquire()

    assert waited == pytest.approx(2.0)
    assert fake_time.monotonic - started == pytest.approx(2.0)
    assert limiter.held_for() == 0.0


async def test_hold_reaches_callers_already_waiting_for_a_token() -> None:
    """A caller asleep for its token when the 429 arrives wakes, sees the hold, sleeps again."""
    clock = FakeTime()
    sleeping = asyncio.Event()
    release = asyncio.Event()

    async def controlled_sleep(seconds: float) -> None:
        clock.sleeps.append(seconds)
        sleeping.set()
        await release.wait()
        release.clear()
        clock.advance(seconds)

    limiter = TokenBucket(1.0, 1, clock=clock.clock, sleep=controlled_sleep)
    await limiter.acquire()  # the banked token
    waiter = asyncio.create_task(limiter.acquire())
    await sleeping.wait()  # waiting 1 s for the next token

    limiter.hold(5.0)  # a 429 with Retry-After: 5 arrives for another request
    release.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    release.set()
    waited = await waiter

    assert clock.sleeps == [1.0, pytest.approx(4.0)]  # its own token, then the rest of the hold
    assert waited == pytest.approx(5.0)


async def test_no_tokens_accrue_during_a_hold_and_requests_resume_at_rate(fake_time: FakeTime) -> None:
    limiter = bucket(fake_time, rate=2.0, burst=3)
    limiter.hold(10.0)

    waits = [await limiter.acquire() for _ in range(3)]

    # The first waits out the hold with the one token left; the rest follow at the rate,
    # not as a burst of three banked during the hold.
    assert waits == [pytest.approx(10.0), pytest.approx(0.5), pytest.approx(0.5)]


async def test_shorter_hold_does_not_shorten_a_longer_one(fake_time: FakeTime) -> None:
    holds: list[float] = []
    limiter = TokenBucket(1.0, 1, clock=fake_time.clock, sleep=fake_time.sleep, on_hold=holds.append)

    assert limiter.hold(3.0) is True
    assert limiter.hold(1.0) is False
    fake_time.advance(1.0)
    assert limiter.hold(4.0) is True  # now ends later than the first

    assert limiter.held_for() == pytest.approx(4.0)
    assert await limiter.acquire() == pytest.approx(4.0)
    assert holds == [3.0, 4.0]
    assert limiter.holds == 2


async def test_hold_wait_is_counted_by_the_wait_hook(fake_time: FakeTime) -> None:
    seen: list[float] = []
    limiter = TokenBucket(5.0, 5, clock=fake_time.clock, sleep=fake_time.sleep, on_wait=seen.append)
    limiter.hold(1.5)

    await limiter.acquire()

    assert seen == [pytest.approx(1.5)]
    assert limiter.wait_seconds_total == pytest.approx(1.5)


def test_registry_passes_the_hold_hook_to_every_bucket(fake_time: FakeTime) -> None:
    holds: list[float] = []
    registry = RateLimiterRegistry(clock=fake_time.clock, sleep=fake_time.sleep, on_hold=holds.append)
    shared = registry.get(credential_fingerprint("sk_a", "https://api.mixpeek.com"), 5.0, 10)

    shared.hold(2.0)

    assert holds == [2.0]


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_bucket_refuses_nonsense_limits(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate, burst)


def test_registry_shares_one_bucket_per_credential(fake_time: FakeTime) -> None:
    registry = RateLimiterRegistry(clock=fake_time.clock, sleep=fake_time.sleep)
    key_a = credential_fingerprint("sk_a", "https://api.mixpeek.com")
    key_b = credential_fingerprint("sk_b", "https://api.mixpeek.com")

    first = registry.get(key_a, 5.0, 10)

    assert registry.get(key_a, 5.0, 10) is first
    assert registry.get(key_b, 5.0, 10) is not first


def test_registry_refuses_a_second_budget_for_one_credential(fake_time: FakeTime) -> None:
    registry = RateLimiterRegistry(clock=fake_time.clock, sleep=fake_time.sleep)
    key = credential_fingerprint("sk_a", "https://api.mixpeek.com")
    held = registry.get(key, 5.0, 10)

    with pytest.raises(ValueError, match="already has a rate limit") as caught:
        registry.get(key, 1.0, 10)

    assert held.rate == 5.0
    assert key not in str(caught.value)  # only a short prefix of the fingerprint is shown


def test_registry_forgets_unused_credentials(fake_time: FakeTime) -> None:
    registry = RateLimiterRegistry(clock=fake_time.clock, sleep=fake_time.sleep)
    key = credential_fingerprint("sk_a", "https://api.mixpeek.com")
    registry.get(key, 5.0, 10)
    gc.collect()

    assert registry.get(key, 1.0, 1).rate == 1.0  # a fresh bucket, so the new limit is accepted


def test_process_wide_registry_shares_buckets() -> None:
    key = credential_fingerprint("sk_process_wide", "https://api.mixpeek.com")

    assert rate_limiter_for(key, 5.0, 10) is rate_limiter_for(key, 5.0, 10)


def test_fingerprint_identifies_key_and_url_without_revealing_the_key() -> None:
    api_key = "sk_live_secret_value"
    fingerprint = credential_fingerprint(api_key, "https://api.mixpeek.com")

    assert api_key not in fingerprint
    assert fingerprint == credential_fingerprint(api_key, "https://api.mixpeek.com/")
    assert fingerprint != credential_fingerprint(api_key, "http://127.0.0.1:8080")
    assert fingerprint != credential_fingerprint("sk_live_other_value", "https://api.mixpeek.com")
