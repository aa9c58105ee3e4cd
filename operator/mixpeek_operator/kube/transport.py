"""`KubeTransport`: one authenticated HTTP session to the API server, under `KubeClient`.

It owns what a request needs before it has a meaning: the connection (resolved lazily, renewed
before an exec credential expires and once after a 401), the HTTP/2 pool and its HTTP/1.1
fallback, closing pools replaced by new credentials once no request can still use them, typed
errors, and the write hook. `KubeClient` (client.py) adds the calls, each one `_call` (or,
for a watch, `_stream_lines`: the same request, its answer read a line at a time).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Final, Self

import httpx

from mixpeek_operator import __version__
from mixpeek_operator.kube.config import KubeConnection, TokenCache
from mixpeek_operator.kube.errors import KubeConnectionError, KubeError, error_from_response
from mixpeek_operator.kube.resources import JsonObject, JsonPatch
from mixpeek_operator.kube.tls import ssl_context

logger = logging.getLogger("mixpeek_operator.kube")

ConnectionProvider = Callable[[], Awaitable[KubeConnection]]
# (kind of write: "status" | "metadata" | "event" | "lease", HTTP status or 0 when no response arrived)
WriteHook = Callable[[str, int], None]

# A stuck call must fail fast and go back to the scheduler rather than hold a worker.
DEFAULT_TIMEOUT: Final = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=5.0)
# Sized for ~100 reconciles writing at once over HTTP/1.1; over HTTP/2 (TLS) one connection
# carries them all. Keep-alive avoids a TLS handshake per write.
DEFAULT_LIMITS: Final = httpx.Limits(
    max_connections=100, max_keepalive_connections=100, keepalive_expiry=60.0
)
# Credentials with an expiry (exec plugins) are renewed this long before it, as client-go does.
CREDENTIAL_REFRESH_MARGIN_SECONDS: Final = 60.0
# Methods safe to send twice (RFC 9110: safe or idempotent); a PATCH says so per call, a POST
# never is (a second create, a second Event).
_RESENDABLE_METHODS: Final = frozenset({"GET", "HEAD", "PUT", "DELETE"})


class KubeTransport:
    """The session under `KubeClient`; see there for `connection`, `on_write` and use."""

    def __init__(
        self,
        connection: KubeConnection | ConnectionProvider,
        *,
        on_write: WriteHook | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        limits: httpx.Limits = DEFAULT_LIMITS,
        user_agent: str = f"mixpeek-operator/{__version__}",
        retire_after: float | None = None,
    ) -> None:
        if isinstance(connection, KubeConnection):
            self._connection: KubeConnection | None = connection
            self._provider: ConnectionProvider | None = None
        else:
            self._connection, self._provider = None, connection
        self._on_write = on_write
        self._timeout = timeout
        self._limits = limits
        self._user_agent = user_agent
        self._http: httpx.AsyncClient | None = None
        self._http1: httpx.AsyncClient | None = None  # the HTTP/1.1 fallback, built when first needed
        # Pools replaced by a credential refresh; requests may still be using them. Each is
        # closed once the longest request it may carry is over (exec plugins hand out short-lived
        # certificates: a pool per rotation would otherwise pile up for the life of the process).
        self._retired: set[httpx.AsyncClient] = set()
        self._retiring: set[asyncio.Task[None]] = set()
        self._retire_after = retire_after if retire_after is not None else _longest_request(timeout)
        self._generation = 0
        self._lock = asyncio.Lock()
        self._tokens = TokenCache()
        self._closed = False

    def __repr__(self) -> str:
        server = self._connection.server if self._connection is not None else "<not connected>"
        return f"KubeClient(server={server!r})"

    async def __aenter__(self) -> Self:
        await self._session()  # resolve the connection now, so a bad config fails at startup
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        for task in self._retiring:
            task.cancel()
        clients = [*self._retired, *(client for client in (self._http, self._http1) if client is not None)]
        self._http, self._http1, self._retired, self._retiring = None, None, set(), set()
        for client in clients:
            await client.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: JsonObject | JsonPatch | None = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
        write: str | None = None,
        resendable: bool | None = None,
        accept: str = "application/json",
    ) -> JsonObject:
        """One request. `resendable`: whether sending it twice is safe (default: by method,
        see _RESENDABLE_METHODS); only such a request is asked again after a protocol error."""
        response = await self._request(
            method,
            path,
            content=None if body is None else json.dumps(body).encode(),
            content_type=content_type,
            params=params,
            write=write,
            resendable=resendable,
            accept=accept,
        )
        return _as_object(response, f"{method} {path}")

    async def _stream_lines(
        self, path: str, params: Mapping[str, str], *, read_timeout: float
    ) -> AsyncGenerator[JsonObject, None]:
        """A streamed GET answered with one JSON object a line (a watch), each as it arrives.
        `read_timeout`: the longest silence before the stream counts as lost
        (KubeConnectionError). Close the generator (`contextlib.aclosing`) to end the stream."""
        request = f"GET {path}"
        phases = httpx.Timeout(
            connect=self._timeout.connect,
            read=read_timeout,
            write=self._timeout.write,
            pool=self._timeout.pool,
        )
        response = await self._request("GET", path, params=params, stream=True, phases=phases)
        try:
            async for line in response.aiter_lines():
                if line.strip():
                    yield _json_object(line, response.status_code, request)
        except httpx.TransportError as exc:
            raise KubeConnectionError(0, type(exc).__name__, str(exc) or repr(exc), request) from exc
        finally:
            await response.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
        write: str | None = None,
        resendable: bool | None = None,
        stream: bool = False,
        phases: httpx.Timeout | None = None,
        accept: str = "application/json",
    ) -> httpx.Response:
        """Send until answered: fresh credentials before they expire and once after a 401;
        a non-2xx answer raises its KubeError. A `stream` response is the caller's to close.
        `phases`: httpx's per-phase timeouts when not the session's."""
        request = f"{method} {path}"
        if resendable is None:
            resendable = method in _RESENDABLE_METHODS
        call = _Send(method, path, content, params, stream, phases)
        retried = False
        while True:
            http, generation = await self._session()
            if self._expiring():
                await self._refresh(generation, reason="credentials expire soon")
                http, generation = await self._session()
            headers = self._headers(None if content is None else content_type, accept)
            try:
                response = await self._send(http, call, headers, resendable)
            except httpx.TransportError as exc:
                self._report_write(write, 0)
                raise KubeConnectionError(0, type(exc).__name__, str(exc) or repr(exc), request) from exc
            self._report_write(write, response.status_code)
            if response.status_code == 401 and not retried and await self._refresh(generation):
                await response.aclose()
                retried = True
                continue
            if response.is_error:
                if stream:
                    await response.aread()  # the Status body, for the error's reason and message
                raise error_from_response(response, request)
            return response

    def _headers(self, content_type: str | None, accept: str = "application/json") -> dict[str, str]:
        headers = {"Accept": accept}
        if content_type is not None:
            headers["Content-Type"] = content_type
        assert self._connection is not None
        token = self._tokens.token(self._connection)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _send(
        self, http: httpx.AsyncClient, call: _Send, headers: dict[str, str], resendable: bool
    ) -> httpx.Response:
        try:
            return await call.on(http, headers)
        except httpx.RemoteProtocolError:
            # The API server answers an unauthenticated HTTP/2 request by closing the
            # connection (GOAWAY), which can swallow the 401 itself: ask once more over
            # HTTP/1.1 to hear the real answer (a 401 then refreshes credentials in `_request`).
            # The same error also comes from a connection lost after the server acted on
            # the request, so a request unsafe to send twice (a POST would create twice)
            # is not asked again: only whether our credentials are refused (a cheap GET
            # with them). A 401 means the request was refused before it was processed,
            # so it is sent again after the refresh; anything else is the caller's to retry.
            if resendable:
                return await call.on(self._fallback(), headers)
            probe = {key: value for key, value in headers.items() if key != "Content-Type"}
            response = await _Send("GET", "/version").on(self._fallback(), probe)
            if response.status_code != 401:
                raise
            return response

    async def _session(self) -> tuple[httpx.AsyncClient, int]:
        if self._closed:
            raise RuntimeError("KubeClient is closed")
        if self._http is None:
            async with self._lock:
                if self._http is None:
                    if self._connection is None:
                        assert self._provider is not None
                        self._connection = await self._provider()
                    self._http = self._build_http(self._connection)
        return self._http, self._generation

    def _build_http(self, connection: KubeConnection, *, http2: bool = True) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=connection.server,
            verify=ssl_context(connection) if connection.server.startswith("https://") else True,
            timeout=self._timeout,
            limits=self._limits,
            # HTTP/2, as client-go does: one multiplexed connection instead of a pool that
            # httpcore scans on every request (that scan was a fifth of the operator's CPU
            # when 1000 objects were created at once; see docs/performance.md).
            http1=True,
            http2=http2 and connection.server.startswith("https://"),
            headers={"User-Agent": self._user_agent},
        )

    def _fallback(self) -> httpx.AsyncClient:
        """The HTTP/1.1 pool: one (and one TLS context) for the connection, built when first needed."""
        assert self._connection is not None
        if self._http1 is None:
            self._http1 = self._build_http(self._connection, http2=False)
        return self._http1

    def _expiring(self) -> bool:
        expires_at = self._connection.expires_at if self._connection is not None else None
        if expires_at is None or self._provider is None:
            return False
        return (expires_at - datetime.now(UTC)).total_seconds() < CREDENTIAL_REFRESH_MARGIN_SECONDS

    async def _refresh(self, seen_generation: int, reason: str = "Kubernetes API answered 401") -> bool:
        """Fetch fresh credentials (after a 401); False when there is nothing to refresh."""
        async with self._lock:
            if self._generation != seen_generation:
                return True  # a concurrent request already refreshed; just retry
            old = self._connection
            assert old is not None
            if self._provider is not None:
                new = await self._provider()
            elif old.token_path is not None:
                new = old  # same file, but re-read below: the kubelet may have rotated it
            else:
                return False
            self._tokens.forget()
            if _transport_identity(new) != _transport_identity(old):
                if self._http is not None:
                    self._retire(self._http)
                    self._http = self._build_http(new)
                if self._http1 is not None:  # rebuilt for the new connection when next needed
                    self._retire(self._http1)
                    self._http1 = None
            self._connection = new
            self._generation += 1
            logger.info("%s; refreshed credentials", reason)
            return True

    def _retire(self, http: httpx.AsyncClient) -> None:
        self._retired.add(http)

        async def close_when_idle() -> None:
            await asyncio.sleep(self._retire_after)
            self._retired.discard(http)
            await http.aclose()

        task = asyncio.create_task(close_when_idle(), name="close-retired-kube-pool")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def retired_pools(self) -> int:
        """Pools replaced by a credential refresh and not closed yet (for the soak benchmark)."""
        return len(self._retired)

    def _report_write(self, kind: str | None, status: int) -> None:
        if kind is None or self._on_write is None:
            return
        try:
            self._on_write(kind, status)
        except Exception:
            # A broken metrics hook must not fail the write it reports on.
            logger.exception("Kubernetes write hook failed")


@dataclass(frozen=True)
class _Send:
    """What one request sends, so it can be sent again (over HTTP/1.1, after a refresh)."""

    method: str
    path: str
    content: bytes | None = None
    params: Mapping[str, str] | None = None
    stream: bool = False
    phases: httpx.Timeout | None = None  # None: the session's

    async def on(self, http: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
        request = http.build_request(
            self.method,
            self.path,
            content=self.content,
            headers=headers,
            params=self.params,
            timeout=self.phases if self.phases is not None else httpx.USE_CLIENT_DEFAULT,
        )
        return await http.send(request, stream=self.stream)


def _transport_identity(connection: KubeConnection) -> KubeConnection:
    """The parts that need a new connection pool when they change (everything but the token)."""
    return replace(connection, token=None, token_path=None)


def _longest_request(timeout: httpx.Timeout) -> float:
    """How long one request can hold a pool: every phase at its limit, plus a margin."""
    phases = (timeout.pool, timeout.connect, timeout.write, timeout.read)
    return sum(phase for phase in phases if phase is not None) + 5.0


def _as_object(response: httpx.Response, request: str) -> JsonObject:
    return _json_object(response.content, response.status_code, request)


def _json_object(raw: str | bytes, status: int, request: str) -> JsonObject:
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise KubeError(status, "InvalidResponse", "expected a JSON object", request)
    return body
