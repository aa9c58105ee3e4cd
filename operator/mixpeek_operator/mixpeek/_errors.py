"""Typed errors of the Mixpeek client, each built in exactly one place.

No error keeps the request (its headers carry the API key); text from the server is
redacted of the caller's secrets before it is stored, since some APIs echo a bad key back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError

from ._retry import parse_retry_after
from .models import ErrorResponse, HTTPValidationError

REDACTED = "[REDACTED]"
# Enough of a non-JSON error page to recognise it, without dumping whole HTML documents.
MAX_TEXT_MESSAGE_LENGTH = 500
# FastAPI prefixes each validation error location with where the value came from.
_LOCATION_SOURCES = frozenset({"body", "query", "path", "header", "cookie"})


class MixpeekError(Exception):
    """Base of every error raised by the Mixpeek client."""


class APIResponseValidationError(MixpeekError):
    """The server answered with success, but its body does not have the documented shape."""


class APIConnectionError(MixpeekError):
    """No HTTP response was received (connection refused, reset, DNS, protocol error)."""


class APITimeoutError(APIConnectionError):
    """A connect, read, write or pool timeout expired."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One rejected input value of a validation error."""

    location: tuple[str | int, ...]
    message: str
    type: str

    @property
    def field(self) -> str:
        """Dotted path of the offending value, without the `body`/`query` source prefix."""
        location = self.location
        if location and location[0] in _LOCATION_SOURCES:
            location = location[1:]
        return ".".join(str(part) for part in location)

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class APIStatusError(MixpeekError):
    """The server answered with a non-success status; the subclass names the status."""

    def __init__(
        self,
        *,
        status_code: int,
        error_type: str | None,
        message: str,
        details: dict[str, Any] | None = None,
        field_errors: Sequence[FieldError] = (),
        request_id: str | None = None,
        body: object = None,
        retry_after: float | None = None,
        reason_phrase: str = "",
    ) -> None:
        self.status_code = status_code
        # Mixpeek's stable machine-readable class (`error.type`), when the body is the envelope.
        self.error_type = error_type
        self.message = message
        self.details = details
        self.field_errors = list(field_errors)
        self.request_id = request_id
        self.body = body
        # Seconds the server asked to wait (Retry-After), for the caller to schedule the next try.
        self.retry_after = retry_after
        description = "; ".join(str(error) for error in self.field_errors) or message
        summary = f"{status_code} {error_type or reason_phrase or 'HTTP error'}: {description}"
        if request_id:
            summary += f" (request id {request_id})"
        super().__init__(summary)


class BadRequestError(APIStatusError):
    """400."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing, malformed or unknown."""


class PermissionDeniedError(APIStatusError):
    """403: forbidden, feature not enabled or quota exceeded."""


class NotFoundError(APIStatusError):
    """404."""


class ConflictError(APIStatusError):
    """409."""


class UnprocessableEntityError(APIStatusError):
    """422: the request was refused by validation; `field_errors` lists each offending value."""


class RateLimitError(APIStatusError):
    """429: `retry_after` holds the wait the server asked for, when it gave one."""


class InternalServerError(APIStatusError):
    """Any 5xx."""


_ERROR_CLASS_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def make_status_error(
    response: httpx.Response, *, now: float | None = None, secrets: Iterable[str] = ()
) -> APIStatusError:
    """Build the typed error for a non-success response (whose body has been read).

    Understands Mixpeek's envelope `{success, status, error: {type, message, details}}`,
    FastAPI's `{"detail": [...]}` or `{"detail": "..."}`, and any other body as text.
    `now` (epoch seconds) resolves a Retry-After given as an HTTP date.
    """
    text = redact(response.text, secrets)
    body = _decode_json(text)
    error_type, message, details, field_errors = _describe_error_body(body, text, response.reason_phrase)
    status_code = response.status_code
    error_class = _ERROR_CLASS_BY_STATUS.get(
        status_code, InternalServerError if status_code >= 500 else APIStatusError
    )
    return error_class(
        status_code=status_code,
        error_type=error_type,
        message=message,
        details=details,
        field_errors=field_errors,
        request_id=response.headers.get("x-request-id") or response.headers.get("request-id"),
        body=body,
        retry_after=parse_retry_after(response.headers, time.time() if now is None else now),
        reason_phrase=response.reason_phrase,
    )


def make_connection_error(
    error: httpx.TransportError, *, method: str, path: str, secrets: Iterable[str] = ()
) -> APIConnectionError:
    """Wrap a transport failure; the caller chains the original with `raise ... from error`."""
    error_class = APITimeoutError if isinstance(error, httpx.TimeoutException) else APIConnectionError
    reason = redact(str(error), secrets) or "no detail"
    return error_class(f"{method} {path} failed: {type(error).__name__}: {reason}")


_ErrorDescription = tuple[str | None, str, dict[str, Any] | None, list[FieldError]]


def _describe_error_body(body: object, text: str, reason_phrase: str) -> _ErrorDescription:
    """(error type, message, details, field errors) of an error body, whatever its shape."""
    if isinstance(body, dict):
        try:
            envelope = ErrorResponse.model_validate(body)
        except ValidationError:
            pass
        else:
            error = envelope.error
            return error.type, error.message, error.details, _envelope_field_errors(error.details)
        try:
            validation = HTTPValidationError.model_validate(body)
        except ValidationError:
            pass
        else:
            field_errors = [FieldError(tuple(item.loc), item.msg, item.type) for item in validation.detail]
            return None, "Validation error", None, field_errors
        if isinstance(body.get("detail"), str):
            return None, body["detail"], None, []
    message = text.strip()[:MAX_TEXT_MESSAGE_LENGTH] or reason_phrase or "no response body"
    return None, message, None, []


def _envelope_field_errors(details: dict[str, Any] | None) -> list[FieldError]:
    """The envelope's `details.validation_errors` (`[{type, location, message}]`), minus malformed items."""
    items = (details or {}).get("validation_errors")
    if not isinstance(items, list):
        return []
    field_errors = []
    for item in items:
        if not isinstance(item, dict):
            continue
        location = item.get("location", item.get("loc", ()))
        message = item.get("message", item.get("msg"))
        if isinstance(location, list | tuple) and isinstance(message, str):
            field_errors.append(FieldError(tuple(location), message, str(item.get("type", ""))))
    return field_errors


def _decode_json(text: str) -> object:
    """The JSON value of a body, or the text itself when it is not JSON."""
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text
