"""Traffic on /v1: endpoint names, injected faults, request counts and the request log."""

from __future__ import annotations

import random
import re
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mixpeek_operator.emulator.errors import ApiError, validation_error

API_PREFIX = "/v1/"
EndpointName = Literal["create", "list", "get", "update", "delete", "pause", "resume", "trigger"]
ENDPOINT_NAMES: tuple[str, ...] = get_args(EndpointName)
OTHER_ENDPOINT = "other"  # a /v1 path no sync endpoint serves

_SYNCS = r"^/v1/buckets/[^/]+/syncs"
_ENDPOINT_PATTERNS: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(_SYNCS + r"/?$"), "create"),
    ("POST", re.compile(_SYNCS + r"/list/?$"), "list"),
    ("GET", re.compile(_SYNCS + r"/[^/]+/?$"), "get"),
    ("PATCH", re.compile(_SYNCS + r"/[^/]+/?$"), "update"),
    ("DELETE", re.compile(_SYNCS + r"/[^/]+/?$"), "delete"),
    ("POST", re.compile(_SYNCS + r"/[^/]+/pause/?$"), "pause"),
    ("POST", re.compile(_SYNCS + r"/[^/]+/resume/?$"), "resume"),
    ("POST", re.compile(_SYNCS + r"/[^/]+/trigger/?$"), "trigger"),
]


_SYNC_ID = re.compile(_SYNCS + r"/([^/]+)")
# The request-scope state key under which the create route leaves the id it created.
CREATED_SYNC_ID = "created_sync_id"


def classify(method: str, path: str) -> str:
    for pattern_method, pattern, name in _ENDPOINT_PATTERNS:
        if method == pattern_method and pattern.match(path):
            return name
    return OTHER_ENDPOINT


def sync_id_of(endpoint: str, path: str, created: str | None = None) -> str | None:
    """The sync a request acted on: the path's for one sync's endpoints, the new one's for a
    create that succeeded (`created`), else None."""
    if endpoint == "create":
        return created
    if endpoint in ("list", OTHER_ENDPOINT):
        return None
    match = _SYNC_ID.match(path)
    return match.group(1) if match else None


class FaultRule(BaseModel):
    """One fault setting; every field left at its default does nothing. Counts go down as they fire."""

    model_config = ConfigDict(extra="forbid")

    endpoint: EndpointName | None = Field(default=None, description="Only this endpoint (default: all).")
    method: str | None = Field(default=None, description="Only this HTTP method (default: all).")
    latency_ms: int = Field(default=0, ge=0, description="Added before every matching request.")
    error_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Probability of answering error_status."
    )
    error_count: int = Field(default=0, ge=0, description="The next N matching requests answer error_status.")
    error_status: int = Field(default=500, ge=400, le=599, description="5xx, or a 4xx such as 422 or 400.")
    error_message: str | None = Field(default=None, description="error.message of the injected error.")
    rate_limit_count: int = Field(default=0, ge=0, description="The next N matching requests answer 429.")
    rate_limit_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Probability of answering 429 with Retry-After."
    )
    # Fractions are sent as written ("1.25"): Mixpeek documents seconds, and clients that parse
    # a float must honour it to the millisecond.
    retry_after_seconds: float = Field(default=1, ge=0)
    retry_after_http_date: bool = Field(default=False, description="Send Retry-After as an HTTP-date.")
    hang_count: int = Field(default=0, ge=0, description="The next N matching requests hang first.")
    hang_seconds: float = Field(default=30.0, ge=0, description="Real seconds a hung request waits.")
    response_delay_seconds: float = Field(
        default=0.0, ge=0, description="Handle matching requests at once but hold their responses this long."
    )

    @field_validator("method")
    @classmethod
    def _upper(cls, method: str | None) -> str | None:
        return method.upper() if method else None

    def applies_to(self, endpoint: str, method: str) -> bool:
        return (self.endpoint is None or self.endpoint == endpoint) and (self.method in (None, method))


@dataclass(slots=True)
class FaultOutcome:
    delay_seconds: float = 0.0  # before the request is handled
    response_delay_seconds: float = 0.0  # after it was handled, before the response leaves
    error: ApiError | None = None
    kinds: list[str] = field(default_factory=list)  # for the request log


class FaultInjector:
    def __init__(self, random_seed: int | None = None) -> None:
        self.rules: list[FaultRule] = []
        self._dice = random.Random(random_seed)

    def decide(self, endpoint: str, method: str) -> FaultOutcome:
        """Delays add up over matching rules; the first rule that produces an error answers."""
        outcome = FaultOutcome()
        for rule in self.rules:
            if not rule.applies_to(endpoint, method):
                continue
            if rule.latency_ms:
                outcome.delay_seconds += rule.latency_ms / 1000
                outcome.kinds.append("latency")
            if rule.response_delay_seconds:
                outcome.response_delay_seconds += rule.response_delay_seconds
                outcome.kinds.append("response_delay")
            if rule.hang_count:
                rule.hang_count -= 1
                outcome.delay_seconds += rule.hang_seconds
                outcome.kinds.append("hang")
            if outcome.error is None:
                outcome.error = self._error_for(rule, outcome.kinds)
        return outcome

    def _error_for(self, rule: FaultRule, kinds: list[str]) -> ApiError | None:
        if rule.rate_limit_count or (rule.rate_limit_rate and self._dice.random() < rule.rate_limit_rate):
            rule.rate_limit_count = max(rule.rate_limit_count - 1, 0)
            kinds.append("rate_limit")
            return _rate_limited(rule)
        if rule.error_count or (rule.error_rate and self._dice.random() < rule.error_rate):
            rule.error_count = max(rule.error_count - 1, 0)
            kinds.append("error")
            return _injected_error(rule)
        return None


def _injected_error(rule: FaultRule) -> ApiError:
    message = rule.error_message or f"Injected {rule.error_status} error (emulator fault injection)"
    if rule.error_status == 422:  # shaped like a real validation failure, for clients that read details
        return validation_error([{"type": "value_error", "loc": ("body",), "msg": message}])
    return ApiError(rule.error_status, message)


def _rate_limited(rule: FaultRule) -> ApiError:
    seconds = rule.retry_after_seconds
    retry_after = (
        formatdate(time.time() + seconds, usegmt=True)
        if rule.retry_after_http_date
        else (str(int(seconds)) if seconds == int(seconds) else str(seconds))
    )
    return ApiError(
        429,
        "Rate limit exceeded (emulator fault injection)",
        details={"limit": 0, "window": 60, "retry_after": seconds},
        headers={"Retry-After": retry_after},
    )


class RequestStats:
    """Counts per endpoint (every endpoint name present, 0 when unused), method and status,
    plus a bounded request log (of the headers, only User-Agent: which client, never a key)."""

    def __init__(self, log_size: int) -> None:
        self._log: deque[dict[str, Any]] = deque(maxlen=log_size)
        self._by_endpoint_status: dict[str, Counter[str]] = {}
        self._by_method: Counter[str] = Counter()

    def record(
        self,
        *,
        method: str,
        path: str,
        query: str,
        endpoint: str,
        status: int,
        seconds: float,
        faults: list[str],
        retry_after: str | None = None,
        user_agent: str | None = None,
        sync_id: str | None = None,
    ) -> None:
        self._by_endpoint_status.setdefault(endpoint, Counter())[str(status)] += 1
        self._by_method[method] += 1
        finished = datetime.now(UTC)
        self._log.append(
            {
                "at": finished.isoformat(),
                # When the request arrived (before any injected delay): what a client's
                # "did I wait for Retry-After" is measured against.
                "started_at": (finished - timedelta(seconds=seconds)).isoformat(),
                "retry_after": retry_after,
                "method": method,
                "path": path,
                "query": query,
                "endpoint": endpoint,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "faults": faults,
                "user_agent": user_agent,
                "sync_id": sync_id,
            }
        )

    def counts(self) -> dict[str, Any]:
        endpoints = dict.fromkeys(ENDPOINT_NAMES, 0)
        statuses: Counter[str] = Counter()
        for endpoint, by_status in self._by_endpoint_status.items():
            endpoints[endpoint] = by_status.total()
            statuses.update(by_status)
        return {
            "total": sum(endpoints.values()),
            "endpoints": endpoints,
            "endpoint_status": {name: dict(c) for name, c in self._by_endpoint_status.items()},
            "methods": dict(self._by_method),
            "statuses": dict(statuses),
        }

    def log(self, limit: int | None = None) -> list[dict[str, Any]]:
        entries = list(self._log)
        return entries[-limit:] if limit else entries

    def clear(self) -> None:
        self._log.clear()
        self._by_endpoint_status.clear()
        self._by_method.clear()
