"""Client-side request budget: one token bucket per credential, shared by every client using it.

Mixpeek limits requests per API key, so two clients holding the same key must draw from
one budget; a per-client limiter would let N reconcilers send N times the allowed rate.
For the same reason a 429's `Retry-After` holds the whole key: every request with it (all
workers, the observer's listing) waits until the server's window has passed.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import weakref
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
WaitHook = Callable[[float], None]
HoldHook = Callable[[float], None]


def credential_fingerprint(api_key: str, base_url: str) -> str:
    """A stable, non-reversible name for a credential, safe to use as a key, label or in a repr."""
    return hashlib.sha256(f"{base_url.rstrip('/')}\n{api_key}".encode()).hexdigest()


class TokenBucket:
    """`rate` tokens per second, at most `burst` banked; `acquire()` waits for one token.

    Each caller reserves its token at once (the balance may go negative), then sleeps until
    the reservation is due. There is no await between reading and updating the balance, so
    no lock is needed, and nothing is bound to one event loop: a shared bucket works from
    any loop.

    `hold(seconds)` (a server's Retry-After) stops every caller until the hold ends,
    including callers already waiting for a token: no tokens accrue during a hold, and
    what is banked shrinks to one, so requests resume one at a time at `rate`.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        on_wait: WaitHook | None = None,
        on_hold: HoldHook | None = None,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1 (got rate={rate}, burst={burst})")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._on_wait = on_wait
        self._on_hold = on_hold
        self._tokens = float(burst)
        self._updated_at = clock()  # in the future during a hold: tokens accrue from then on
        self._held_until = float("-inf")
        self.wait_seconds_total = 0.0
        self.holds = 0

    async def acquire(self) -> float:
        """Take one token, waiting as long as needed (holds included); returns the seconds waited."""
        now = self._clock()
        self._refill(now)
        self._tokens -= 1
        wait = max(0.0, self._updated_at - now) + max(0.0, -self._tokens / self.rate)
        waited = 0.0
        try:
            while wait > 0.0:
                self._count_wait(wait)
                await self._sleep(wait)
                waited += wait
                # A hold that began while we slept applies to us too.
                wait = max(0.0, self._held_until - self._clock())
        except asyncio.CancelledError:
            self._tokens += 1  # give the reserved slot to the next caller
            raise
        return waited

    def hold(self, seconds: float) -> bool:
        """Stop every request for `seconds` from now; False if an existing hold already covers it."""
        now = self._clock()
        until = now + max(0.0, seconds)
        if until <= self._held_until:
            return False
        self._refill(now)
        self._held_until = until
        self._updated_at = max(self._updated_at, until)
        self._tokens = min(self._tokens, 1.0)
        self.holds += 1
        if self._on_hold is not None:
            self._on_hold(seconds)
        return True

    def held_for(self) -> float:
        """Seconds until the current hold ends (0 when there is none)."""
        return max(0.0, self._held_until - self._clock())

    def _count_wait(self, seconds: float) -> None:
        self.wait_seconds_total += seconds
        if self._on_wait is not None:
            self._on_wait(seconds)

    def _refill(self, now: float) -> None:
        if now > self._updated_at:
            self._tokens = min(float(self.burst), self._tokens + (now - self._updated_at) * self.rate)
            self._updated_at = now


class RateLimiterRegistry:
    """Hands out one `TokenBucket` per credential fingerprint.

    Buckets are held weakly: once no client uses a credential, its budget is forgotten.
    """

    def __init__(
        self,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        on_wait: WaitHook | None = None,
        on_hold: HoldHook | None = None,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._on_wait = on_wait
        self._on_hold = on_hold
        self._buckets: weakref.WeakValueDictionary[str, TokenBucket] = weakref.WeakValueDictionary()

    def get(self, credential_key: str, rate: float, burst: int) -> TokenBucket:
        """The shared bucket of `credential_key` (a fingerprint, never a raw API key)."""
        bucket = self._buckets.get(credential_key)
        if bucket is None:
            bucket = TokenBucket(
                rate,
                burst,
                clock=self._clock,
                sleep=self._sleep,
                on_wait=self._on_wait,
                on_hold=self._on_hold,
            )
            self._buckets[credential_key] = bucket
        elif (bucket.rate, bucket.burst) != (rate, burst):
            # Two budgets for one credential would defeat the point of sharing it.
            raise ValueError(
                f"credential {credential_key[:12]} already has a rate limit of {bucket.rate}/s "
                f"burst {bucket.burst}; got {rate}/s burst {burst}"
            )
        return bucket


DEFAULT_REGISTRY = RateLimiterRegistry()


def rate_limiter_for(credential_key: str, rate: float, burst: int) -> TokenBucket:
    """The process-wide shared bucket of a credential fingerprint (see `credential_fingerprint`)."""
    return DEFAULT_REGISTRY.get(credential_key, rate, burst)
