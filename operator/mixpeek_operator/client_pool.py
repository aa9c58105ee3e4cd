"""The engine's Mixpeek clients: one per credential and Mixpeek namespace (an HTTP pool and a
rate limiter, see mixpeek/), kept while an object uses it.

A key rotation moves every user of the old key to a new client; once the last user moved or
went, the old client is closed `idle_client_seconds` later, so a request already under way finishes.
Which object uses a client is known from the reconcile under way (`used_by`), so the
reconcile code only asks for "the client of these credentials".
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Protocol

import httpx

from mixpeek_operator.credentials import Credentials
from mixpeek_operator.keys import ObjectKey
from mixpeek_operator.metrics import OperatorMetrics
from mixpeek_operator.mixpeek import MixpeekClient, RateLimiterRegistry, RequestEvent

ClientKey = tuple[str, str]  # Credentials.group_key: (fingerprint, Mixpeek namespace)

# The object the current reconcile is for: `client_for` records it as a user of its client.
_reconciling: contextvars.ContextVar[ObjectKey | None] = contextvars.ContextVar("reconciling", default=None)


class ClientSettings(Protocol):
    """The engine's settings the pool reads (engine.EngineSettings), each when it is needed."""

    @property
    def rate_per_second(self) -> float: ...
    @property
    def burst(self) -> int: ...
    @property
    def idle_client_seconds(self) -> float: ...
    @property
    def replica(self) -> str | None: ...


class MixpeekClientPool:
    def __init__(
        self,
        *,
        settings: Callable[[], ClientSettings],
        metrics: OperatorMetrics,
        on_release: Callable[[ObjectKey], None],
        rate_limiters: RateLimiterRegistry | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        # Shared by every client of one credential, across namespaces (see mixpeek/_ratelimit.py).
        self._rate_limiters = rate_limiters or RateLimiterRegistry(
            on_wait=metrics.observe_ratelimiter_wait, on_hold=metrics.observe_key_hold
        )
        # An object's listings poll through its client: they go when it leaves the client.
        self._on_release = on_release
        self._transport = transport
        self._clients: dict[ClientKey, MixpeekClient] = {}
        self._users: dict[ClientKey, set[ObjectKey]] = {}
        self._client_of: dict[ObjectKey, ClientKey] = {}
        self._closing: set[asyncio.Task[None]] = set()

    @staticmethod
    @contextlib.contextmanager
    def used_by(obj: ObjectKey) -> Iterator[None]:
        """The clients asked for within this block are used by `obj` (its reconcile)."""
        token = _reconciling.set(obj)
        try:
            yield
        finally:
            _reconciling.reset(token)

    def client_for(self, creds: Credentials) -> MixpeekClient:
        key = creds.group_key
        client = self._clients.get(key)
        if client is None:
            settings = self._settings()
            client = self._clients[key] = MixpeekClient(
                creds.api_key,
                creds.namespace,
                base_url=creds.base_url,
                rate_per_second=settings.rate_per_second,
                burst=settings.burst,
                rate_limiters=self._rate_limiters,
                on_request=self._observe_request,
                transport=self._transport,
                replica=settings.replica,
            )
        user = _reconciling.get()
        if user is not None and self._client_of.get(user) != key:
            self.release(user)
            self._client_of[user] = key
            self._users.setdefault(key, set()).add(user)
        return client

    def _observe_request(self, event: RequestEvent) -> None:
        self._metrics.observe_request(event.endpoint, event.method, event.status_code, event.latency_seconds)

    def release(self, obj: ObjectKey) -> None:
        """`obj` no longer uses its client (gone, or moved to other credentials); the last user
        closes it."""
        key = self._client_of.pop(obj, None)
        if key is None:
            return
        self._on_release(obj)  # the reconcile after a move joins the new scope again
        users = self._users[key]
        users.discard(obj)
        if users:
            return
        del self._users[key]
        client = self._clients.get(key)
        if client is not None:
            task = asyncio.create_task(self._close_when_idle(key, client), name="close-mixpeek-client")
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _close_when_idle(self, key: ClientKey, client: MixpeekClient) -> None:
        await asyncio.sleep(self._settings().idle_client_seconds)
        if key not in self._users and self._clients.get(key) is client:  # not taken up again
            del self._clients[key]
            await client.aclose()

    async def wait_closed(self) -> None:
        """Wait for the idle closes under way (for tests)."""
        await asyncio.gather(*self._closing)

    async def aclose(self) -> None:
        for task in self._closing:
            task.cancel()
        await asyncio.gather(*self._closing, return_exceptions=True)
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    def __len__(self) -> int:
        return len(self._clients)

    def sizes(self) -> dict[str, int]:
        """How many entries each internal map holds (the soak benchmark checks they stay bounded)."""
        return {
            "engine.clients": len(self._clients),
            "engine.client_users": len(self._users),
            "engine.client_of": len(self._client_of),
            "engine.closing_clients": len(self._closing),
        }
