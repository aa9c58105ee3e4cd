"""A keyed, delayed work queue in the shape of client-go's rate-limited workqueue.

- `add(key, delay)`: the key becomes due after `delay`; adding a key already queued keeps
  the earlier due time (de-duplication).
- Per-key exclusivity: a key handed out by `get()` is not handed out again until
  `done(key)`; a key added meanwhile runs once more after `done()`.
- The queue owns the failure count: `add_rate_limited(key)` counts a failure and re-adds
  the key after exponential backoff with full jitter (never sooner than the server's
  `Retry-After`); `forget(key)` resets the count after a success.

Time comes from an injectable clock, so tests move time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from mixpeek_operator.mixpeek import RetryPolicy, backoff_delay

K = TypeVar("K")


@dataclass(frozen=True)
class Backoff:
    """Per-key exponential backoff: base · 2^(failures-1), capped, full jitter."""

    base: float = 1.0
    cap: float = 300.0

    def delay(self, failures: int, jitter: float) -> float:
        return backoff_delay(
            max(0, failures - 1), RetryPolicy(base_delay=self.base, max_delay=self.cap), jitter
        )


class WorkQueue(Generic[K]):
    """Delayed, de-duplicated keys; a key is handed to one worker at a time."""

    def __init__(
        self,
        backoff_policy: Backoff | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._backoff = backoff_policy or Backoff()
        self._clock = clock
        self._jitter = jitter
        self._heap: list[tuple[float, int, K]] = []
        self._due: dict[K, float] = {}
        self._active: set[K] = set()
        self._deferred: dict[K, float] = {}  # re-added while active: runs after done()
        self._failures: dict[K, int] = {}
        self._seq = itertools.count()
        self._changed = asyncio.Condition()

    def __len__(self) -> int:
        return len(self._due) + len(self._deferred)

    # --- adding ------------------------------------------------------------------------------

    async def add(self, key: K, delay: float = 0.0) -> None:
        due = self._clock() + max(0.0, delay)
        async with self._changed:
            if key in self._active:
                self._deferred[key] = min(due, self._deferred.get(key, due))
                return
            if key in self._due and self._due[key] <= due:
                return
            self._push(key, due)
            self._changed.notify_all()

    async def add_rate_limited(self, key: K, retry_after: float | None = None) -> float:
        """Count a failure of `key` and re-add it after its backoff; returns the delay chosen."""
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        delay = max(self._backoff.delay(failures, self._jitter()), retry_after or 0.0)
        await self.add(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """The key succeeded (or its inputs changed): its next failure starts from the base delay."""
        self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        return self._failures.get(key, 0)

    def sizes(self) -> dict[str, int]:
        """How many entries each internal map holds (the soak benchmark checks they stay bounded)."""
        return {
            "queue.heap": len(self._heap),
            "queue.due": len(self._due),
            "queue.active": len(self._active),
            "queue.deferred": len(self._deferred),
            "queue.failures": len(self._failures),
        }

    def _push(self, key: K, due: float) -> None:
        self._due[key] = due
        heapq.heappush(self._heap, (due, next(self._seq), key))

    # --- taking ------------------------------------------------------------------------------

    def _prune(self) -> None:
        while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)  # superseded by an earlier add, or discarded

    def pop_ready(self) -> K | None:
        """The earliest key that is due now (marked active), or None; never waits."""
        self._prune()
        if not self._heap or self._heap[0][0] > self._clock():
            return None
        _, _, key = heapq.heappop(self._heap)
        del self._due[key]
        self._active.add(key)
        return key

    def next_due(self) -> float | None:
        """Seconds until the earliest queued key is due (0 when one is due now)."""
        self._prune()
        return max(0.0, self._heap[0][0] - self._clock()) if self._heap else None

    async def get(self) -> K:
        async with self._changed:
            while True:
                key = self.pop_ready()
                if key is not None:
                    return key
                # asyncio.timeout, not wait_for: Python 3.11's wait_for drops a cancellation that
                # arrives as the wait completes (gh-86296), and a worker must stop when cancelled.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.next_due()):
                        await self._changed.wait()

    async def done(self, key: K) -> None:
        async with self._changed:
            self._active.discard(key)
            due = self._deferred.pop(key, None)
            if due is not None:
                self._push(key, due)
            self._changed.notify_all()

    def active(self) -> frozenset[K]:
        """The keys workers hold right now."""
        return frozenset(self._active)

    async def wait_idle(self, key: K) -> None:
        """Return once no worker holds `key` (its reconcile, if one runs, has finished)."""
        async with self._changed:
            await self._changed.wait_for(lambda: key not in self._active)

    async def discard(self, key: K) -> None:
        """The key is gone: drop it from the queue and forget its failures."""
        async with self._changed:
            self._due.pop(key, None)
            self._deferred.pop(key, None)
            self._failures.pop(key, None)
            if len(self._heap) > 2 * len(self._due) + 64:
                # Entries of discarded keys leave the heap only when due; after a bulk delete
                # of objects requeued far ahead, rebuild it rather than hold them for hours.
                self._heap = [entry for entry in self._heap if self._due.get(entry[2]) == entry[0]]
                heapq.heapify(self._heap)
