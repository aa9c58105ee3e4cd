"""The work queue on a fake clock: due times, de-duplication, per-key exclusivity and the
failure counts and backoff it owns. Nothing here sleeps."""

from __future__ import annotations

import asyncio

import pytest

from mixpeek_operator.workqueue import Backoff, WorkQueue
from tests.support.fakes import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_queue(
    clock: FakeClock, *, jitter: float = 1.0, base: float = 1.0, cap: float = 300.0
) -> WorkQueue[str]:
    return WorkQueue(Backoff(base, cap), clock=clock, jitter=lambda: jitter)


async def test_a_delayed_key_becomes_due_when_the_clock_reaches_it(clock: FakeClock) -> None:
    queue = make_queue(clock)
    await queue.add("a", delay=5)
    assert queue.pop_ready() is None
    assert queue.next_due() == 5
    clock.advance(5)
    assert queue.pop_ready() == "a"
    assert queue.next_due() is None


async def test_adding_a_queued_key_keeps_one_entry_at_the_earlier_due_time(clock: FakeClock) -> None:
    queue = make_queue(clock)
    await queue.add("a", delay=10)
    await queue.add("a", delay=30)  # later: ignored
    await queue.add("a", delay=2)  # earlier: wins
    assert len(queue) == 1
    clock.advance(2)
    assert queue.pop_ready() == "a"
    clock.advance(100)
    assert queue.pop_ready() is None  # the superseded entries are gone


async def test_keys_come_out_in_due_order(clock: FakeClock) -> None:
    queue = make_queue(clock)
    await queue.add("late", delay=3)
    await queue.add("early", delay=1)
    await queue.add("now")
    clock.advance(3)
    assert [queue.pop_ready(), queue.pop_ready(), queue.pop_ready()] == ["now", "early", "late"]


async def test_a_key_is_handed_out_once_until_done_and_runs_again_if_added_meanwhile(
    clock: FakeClock,
) -> None:
    queue = make_queue(clock)
    await queue.add("a")
    assert queue.pop_ready() == "a"
    await queue.add("a")  # an event while a worker holds the key
    assert queue.pop_ready() is None
    assert len(queue) == 1
    await queue.done("a")
    assert queue.pop_ready() == "a"
    await queue.done("a")
    assert queue.pop_ready() is None


async def test_failures_back_off_exponentially_up_to_the_cap_and_forget_resets(clock: FakeClock) -> None:
    queue = make_queue(clock, jitter=1.0, base=1.0, cap=10.0)
    delays = [await queue.add_rate_limited("a") for _ in range(6)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert queue.failures("a") == 6
    queue.forget("a")
    assert queue.failures("a") == 0
    assert await queue.add_rate_limited("a") == 1.0


async def test_backoff_is_jittered_but_never_undercuts_retry_after(clock: FakeClock) -> None:
    queue = make_queue(clock, jitter=0.25, base=4.0)
    assert await queue.add_rate_limited("a") == 1.0  # full jitter: a quarter of the 4 s ceiling
    assert await queue.add_rate_limited("b", retry_after=30.0) == 30.0
    clock.advance(1.0)
    assert queue.pop_ready() == "a"
    clock.advance(28.9)
    assert queue.pop_ready() is None
    clock.advance(0.1)
    assert queue.pop_ready() == "b"


async def test_failure_counts_are_per_key(clock: FakeClock) -> None:
    queue = make_queue(clock)
    await queue.add_rate_limited("a")
    await queue.add_rate_limited("a")
    await queue.add_rate_limited("b")
    assert (queue.failures("a"), queue.failures("b")) == (2, 1)


async def test_discard_drops_the_key_and_its_failures(clock: FakeClock) -> None:
    queue = make_queue(clock)
    await queue.add_rate_limited("a")
    await queue.discard("a")
    assert len(queue) == 0
    assert queue.failures("a") == 0
    clock.advance(1000)
    assert queue.pop_ready() is None


async def test_get_wakes_up_when_a_key_is_added(clock: FakeClock) -> None:
    queue = make_queue(clock)
    waiter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)  # let it start waiting on the empty queue
    assert not waiter.done()
    await queue.add("a")
    assert await asyncio.wait_for(waiter, timeout=5) == "a"


async def test_get_wakes_up_when_done_releases_a_deferred_key(clock: FakeClock) -> None:
    queue = make_queue(clock)
    await queue.add("a")
    assert await queue.get() == "a"
    await queue.add("a")
    waiter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not waiter.done()
    await queue.done("a")
    assert await asyncio.wait_for(waiter, timeout=5) == "a"


async def test_a_worker_cancelled_just_as_a_key_arrives_is_cancelled() -> None:
    # Python 3.11's asyncio.wait_for returns the result instead of raising when a cancellation
    # races the wait's completion (gh-86296); a worker that survives its cancellation would go on
    # reconciling after the engine stopped its work (leadership lost, a shard handed over).
    queue: WorkQueue[str] = WorkQueue()
    await queue.add("later", delay=60.0)  # so the getter waits with a timeout
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)  # the getter waits for a key
    await queue.add("key")  # wakes it...
    getter.cancel()  # ...and the cancellation arrives before it runs again
    with pytest.raises(asyncio.CancelledError):
        await getter


async def test_discarded_keys_do_not_stay_in_the_heap_until_they_would_have_been_due(
    clock: FakeClock,
) -> None:
    """Regression: a bulk delete of objects requeued far ahead held their heap entries for hours."""
    queue = make_queue(clock)
    for i in range(1000):
        await queue.add(f"k{i}", delay=3600)
    for i in range(1000):
        await queue.discard(f"k{i}")
    assert len(queue._heap) <= 64
    assert queue.sizes() == {**queue.sizes(), "queue.heap": len(queue._heap), "queue.due": 0}
