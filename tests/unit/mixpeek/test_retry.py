"""The client's retry policy: Retry-After parsing, backoff math and what may be retried."""

from __future__ import annotations

from email.utils import formatdate

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mixpeek_operator.mixpeek import (
    Endpoint,
    RetryPolicy,
    backoff_delay,
    parse_retry_after,
    retry_delay,
    should_retry,
)

NOW = 1_700_000_000.0
POLICY = RetryPolicy(max_retries=2, base_delay=0.5, max_delay=8.0, max_retry_after=60.0)
ALMOST_ONE = 1 - 1e-12


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "2"}, 2.0),
        ({"Retry-After": "1.25"}, 1.25),
        ({"retry-after": " 3 "}, 3.0),
        ({"Retry-After": "0"}, 0.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "Retry-After": "10"}, 0.25),  # the precise header wins
        ({"retry-after-ms": "soon", "Retry-After": "3"}, 3.0),  # a bad ms value falls back
        ({"Retry-After": formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"Retry-After": formatdate(NOW + 30)}, 30.0),  # numeric zone instead of GMT
        ({"Retry-After": formatdate(NOW - 30, usegmt=True)}, None),  # already past
        ({"Retry-After": "-1"}, None),
        ({"retry-after-ms": "-5"}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": ""}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(httpx.Headers(headers), NOW) == expected


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (10_000, 8.0)],
)
def test_backoff_spans_zero_to_capped_exponential(attempt: int, ceiling: float) -> None:
    assert backoff_delay(attempt, POLICY, 0.0) == 0.0
    assert backoff_delay(attempt, POLICY, ALMOST_ONE) == pytest.approx(ceiling)


@given(attempt=st.integers(min_value=0, max_value=2_000), rand=st.floats(min_value=0.0, max_value=1.0))
def test_backoff_is_full_jitter_within_bounds(attempt: int, rand: float) -> None:
    delay = backoff_delay(attempt, POLICY, rand)
    ceiling = min(POLICY.max_delay, POLICY.base_delay * 2.0 ** min(attempt, 64))
    assert 0.0 <= delay <= ceiling
    assert delay == pytest.approx(rand * ceiling)


@pytest.mark.parametrize("rand", [-0.1, 1.5])
def test_backoff_refuses_random_outside_unit_interval(rand: float) -> None:
    with pytest.raises(ValueError, match="rand"):
        backoff_delay(0, POLICY, rand)


@pytest.mark.parametrize(
    ("retry_after", "rand", "expected"),
    [
        (1.25, 0.0, 1.25),  # honoured exactly: no jitter below it
        (1.25, ALMOST_ONE, 1.25),  # and none above it
        (0.0, 0.5, 0.0),
        (60.0, 0.5, 60.0),  # at the cap is still slept on
        (60.001, 0.5, None),  # above it the caller schedules instead
        (None, 0.5, 0.25),  # no header: backoff
    ],
)
def test_retry_delay(retry_after: float | None, rand: float, expected: float | None) -> None:
    assert retry_delay(0, POLICY, retry_after, rand) == expected


def test_retry_policy_refuses_negative_values() -> None:
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(max_retries=-1)


CONNECT_ERRORS = [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), httpx.PoolTimeout("full")]
MAYBE_PROCESSED_ERRORS = [
    httpx.ReadTimeout("slow"),
    httpx.WriteTimeout("slow"),
    httpx.ReadError("reset"),
    httpx.RemoteProtocolError("bad"),
]


@pytest.mark.parametrize("endpoint", [Endpoint.GET, Endpoint.LIST, Endpoint.UPDATE, Endpoint.DELETE])
@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (408, True),
        (409, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (422, False),
        *((error, True) for error in CONNECT_ERRORS + MAYBE_PROCESSED_ERRORS),
        (httpx.UnsupportedProtocol("ftp"), False),
    ],
    ids=repr,
)
def test_idempotent_calls_retry_transient_failures(
    endpoint: Endpoint, outcome: int | BaseException, expected: bool
) -> None:
    method = {Endpoint.GET: "GET", Endpoint.UPDATE: "PATCH", Endpoint.DELETE: "DELETE"}.get(endpoint, "POST")
    assert should_retry(method, endpoint, outcome) is expected


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (429, True),
        *((error, True) for error in CONNECT_ERRORS),
        (500, False),
        (503, False),
        (408, False),
        (409, False),
        (400, False),
        *((error, False) for error in MAYBE_PROCESSED_ERRORS),
    ],
    ids=repr,
)
def test_create_is_retried_only_when_surely_not_processed(
    outcome: int | BaseException, expected: bool
) -> None:
    assert should_retry("POST", Endpoint.CREATE, outcome) is expected


@pytest.mark.parametrize("endpoint", [Endpoint.PAUSE, Endpoint.RESUME, Endpoint.TRIGGER])
def test_action_posts_are_idempotent(endpoint: Endpoint) -> None:
    assert should_retry("POST", endpoint, 500)


def test_unknown_post_is_treated_as_not_idempotent() -> None:
    assert not should_retry("POST", "some-new-endpoint", 500)
    assert should_retry("POST", "some-new-endpoint", 429)
