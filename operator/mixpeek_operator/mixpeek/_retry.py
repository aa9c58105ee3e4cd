"""Retry policy of the Mixpeek client: pure functions, no I/O, no clock of their own.

What is retried follows the well-made httpx SDKs (connection errors, timeouts, 408, 409,
429, 5xx), with one change: Mixpeek has no idempotency key, so a request that is not
idempotent (sync create) is retried only when the server surely did not process it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from enum import StrEnum

import httpx


class Endpoint(StrEnum):
    """The bucket-sync operations; also the `endpoint` label of request metrics."""

    CREATE = "create"
    LIST = "list"
    GET = "get"
    UPDATE = "update"
    DELETE = "delete"
    PAUSE = "pause"
    RESUME = "resume"
    TRIGGER = "trigger"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries inside one client call; longer waits belong to the operator's scheduling."""

    max_retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 8.0
    # A Retry-After longer than this is not slept on: the error goes up with `retry_after` set.
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("retry policy values must not be negative")


RETRYABLE_STATUS_CODES = frozenset({408, 409, 429})
# Safe to repeat whatever happened to the first attempt; any other POST is treated as
# non-idempotent, so a new endpoint is safe by default.
IDEMPOTENT_POST_ENDPOINTS = frozenset({Endpoint.LIST, Endpoint.PAUSE, Endpoint.RESUME, Endpoint.TRIGGER})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})

# Transport failures worth another attempt (the rest, such as an unsupported URL scheme, would fail again).
RETRYABLE_TRANSPORT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
# Failures that happen before the request reaches the server, so even a create is safe to repeat.
NOT_SENT_TRANSPORT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def is_idempotent(method: str, endpoint: str) -> bool:
    method = method.upper()
    return method in IDEMPOTENT_METHODS or (method == "POST" and endpoint in IDEMPOTENT_POST_ENDPOINTS)


def should_retry(method: str, endpoint: str, outcome: int | BaseException) -> bool:
    """Whether a failed attempt may be repeated; `outcome` is the HTTP status or the transport error."""
    if is_idempotent(method, endpoint):
        if isinstance(outcome, int):
            return outcome in RETRYABLE_STATUS_CODES or outcome >= 500
        return isinstance(outcome, RETRYABLE_TRANSPORT_ERRORS)
    # Not idempotent: only where the server refused before doing anything.
    if isinstance(outcome, int):
        return outcome == 429
    return isinstance(outcome, NOT_SENT_TRANSPORT_ERRORS)


def parse_retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date.

    `now` is the wall-clock time (epoch seconds) an HTTP date is measured from. Negative,
    non-finite or unparsable values give None (the caller falls back to backoff).
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    milliseconds = _parse_seconds(lowered.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000
    value = lowered.get("retry-after")
    if value is None:
        return None
    seconds = _parse_seconds(value)
    if seconds is not None:
        return seconds
    return _parse_http_date_delay(value, now)


def _parse_seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _parse_http_date_delay(value: str, now: float) -> float | None:
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is read as GMT too
        moment = moment.replace(tzinfo=UTC)
    delay = moment.timestamp() - now
    return delay if delay >= 0 else None


def backoff_delay(attempt: int, policy: RetryPolicy, rand: float) -> float:
    """Exponential backoff with full jitter: `rand` in [0, 1] picks a point in [0, min(cap, base·2^n)]."""
    if not 0.0 <= rand <= 1.0:
        raise ValueError(f"rand must be in [0, 1], got {rand}")
    # The exponent is bounded only so that huge attempt numbers cannot overflow a float.
    ceiling = min(policy.max_delay, policy.base_delay * 2.0 ** min(attempt, 64))
    return rand * ceiling


def retry_delay(attempt: int, policy: RetryPolicy, retry_after: float | None, rand: float) -> float | None:
    """Delay before the next attempt, or None when the server asked for a wait above the policy's cap.

    A server-given Retry-After is honoured exactly: never undercut, never jittered.
    """
    if retry_after is None:
        return backoff_delay(attempt, policy, rand)
    if retry_after > policy.max_retry_after:
        return None
    return max(retry_after, 0.0)
