"""`create_app`: the emulator's FastAPI app (public /v1 API + /_emulator admin API)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mixpeek_operator import __version__
from mixpeek_operator.emulator import admin_routes, routes
from mixpeek_operator.emulator.config import EmulatorConfig
from mixpeek_operator.emulator.errors import ApiError, validation_error, validation_fastapi
from mixpeek_operator.emulator.state import Emulator
from mixpeek_operator.emulator.traffic import API_PREFIX, CREATED_SYNC_ID, classify, sync_id_of
from mixpeek_operator.mixpeek.models import ErrorResponse, HTTPValidationError

DESCRIPTION = """\
A local emulator of the Mixpeek bucket-sync API (V2). Send `Authorization: Bearer <api_key>`
and `X-Namespace: <namespace id or name>` with every request. The admin API under
`/_emulator/` (fault injection, clock, out-of-band changes) is not part of this document.
"""


def create_app(config: EmulatorConfig | None = None) -> FastAPI:
    config = config or EmulatorConfig()
    emulator = Emulator(config)
    app = FastAPI(title="Mixpeek bucket-sync API emulator", version=__version__, description=DESCRIPTION)
    app.state.emulator = emulator
    shape = ErrorResponse if config.validation_errors == "envelope" else HTTPValidationError
    app.include_router(routes.router, responses={422: {"model": shape, "description": "Validation Error"}})
    app.include_router(admin_routes.router)
    _install_error_handlers(app, emulator)
    app.add_middleware(TrafficMiddleware, emulator=emulator)
    return app


def _install_error_handlers(app: FastAPI, emulator: Emulator) -> None:
    own_routes = [*routes.router.routes, *admin_routes.router.routes]

    async def api_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return exc.to_response()

    async def invalid_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        if request.url.path.startswith(API_PREFIX):
            # Authentication comes first, even for a body FastAPI rejected before any dependency ran.
            try:
                emulator.directory.caller(
                    request.headers.get("authorization"),
                    request.headers.get("x-namespace"),
                    emulator.behaviour,
                )
            except ApiError as auth_error:
                return auth_error.to_response()
        errors = exc.errors()
        if emulator.config.validation_errors == "fastapi":
            return validation_fastapi(errors)
        return validation_error(errors).to_response()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(own_routes, request.scope))
        return ApiError(exc.status_code, str(exc.detail), headers=headers).to_response()

    async def unexpected(_request: Request, _exc: Exception) -> Response:
        return ApiError(500, "Internal server error").to_response()

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


def _allowed_methods(candidates: list[BaseRoute], scope: Scope) -> list[str]:
    """Every method of the path's routes (Starlette names only the first route's). A literal
    segment beats a parameter: /syncs/list is the list route, not a sync called "list"."""
    matching = [r for r in candidates if r.matches(scope)[0] != Match.NONE]
    fewest = min((len(getattr(r, "param_convertors", {})) for r in matching), default=0)
    exact = [r for r in matching if len(getattr(r, "param_convertors", {})) == fewest]
    return sorted({method for r in exact for method in getattr(r, "methods", ())})


class TrafficMiddleware:
    """For /v1: injected faults, request counts and log. For every request: run the syncs that are due."""

    def __init__(self, app: ASGIApp, emulator: Emulator) -> None:
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            if scope["type"] == "http":
                self.emulator.run_due()
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        endpoint = classify(method, path)
        outcome = self.emulator.faults.decide(endpoint, method)
        started = time.perf_counter()
        status = 500  # what the server answers if the app raises before responding
        retry_after: str | None = None
        held: list[Message] | None = [] if outcome.response_delay_seconds else None
        # Shared with the request (Starlette's request.state): the create route leaves its new id here.
        state: dict[str, Any] = scope.setdefault("state", {})

        async def recording_send(message: Message) -> None:
            nonlocal status, retry_after
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"retry-after":
                        retry_after = value.decode("latin-1")
            if held is None:
                await send(message)
            else:
                held.append(message)

        try:
            if outcome.delay_seconds:
                # Take the whole request first: a client that times out during the delay leaves
                # a request the server still completes (the "did my create happen?" case).
                receive = await _buffered(receive)
                await asyncio.sleep(outcome.delay_seconds)
            if outcome.error is not None:
                await outcome.error.to_response()(scope, receive, recording_send)
            else:
                self.emulator.run_due()  # after any injected delay: the request reads state now
                await self.app(scope, receive, recording_send)
        finally:  # counted once handled, even while its response is still held back
            self.emulator.stats.record(
                method=method,
                path=path,
                query=scope.get("query_string", b"").decode("latin-1"),
                endpoint=endpoint,
                status=status,
                seconds=time.perf_counter() - started,
                faults=outcome.kinds,
                retry_after=retry_after,
                user_agent=_header(scope, b"user-agent"),
                sync_id=sync_id_of(endpoint, path, state.get(CREATED_SYNC_ID)),
            )
        if held is not None:  # handled already; the client just does not hear about it yet
            await asyncio.sleep(outcome.response_delay_seconds)
            for message in held:
                await send(message)


def _header(scope: Scope, name: bytes) -> str | None:
    return next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == name), None)


async def _buffered(receive: Receive) -> Receive:
    """Read the request body now; the returned `receive` replays it, then defers to the original."""
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            break

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return replay
