"""`make_status_error`: every body shape Mixpeek (or a proxy in front of it) may answer with."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mixpeek_operator.mixpeek import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    FieldError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableEntityError,
    make_status_error,
)

NOW = 1_700_000_000.0


def envelope(
    status: int, error_type: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "success": False,
        "status": status,
        "error": {"type": error_type, "message": message, "details": details},
    }


def status_error(status: int, **kwargs: Any) -> APIStatusError:
    return make_status_error(httpx.Response(status, **kwargs), now=NOW)


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, ConflictError),
        (422, UnprocessableEntityError),
        (429, RateLimitError),
        (500, InternalServerError),
        (503, InternalServerError),
        (418, APIStatusError),
        (302, APIStatusError),
    ],
)
def test_status_selects_error_class(status: int, error_class: type[APIStatusError]) -> None:
    error = status_error(status, json=envelope(status, "SomeError", "something happened"))

    assert type(error) is error_class
    assert error.status_code == status


def test_envelope_fields_are_kept() -> None:
    body = envelope(
        404, "NotFoundError", "Sync configuration not found", {"resource": "sync", "id": "sync_1"}
    )

    error = status_error(404, json=body, headers={"x-request-id": "req_123"})

    assert error.error_type == "NotFoundError"
    assert error.message == "Sync configuration not found"
    assert error.details == {"resource": "sync", "id": "sync_1"}
    assert error.request_id == "req_123"
    assert error.body == body
    assert str(error) == "404 NotFoundError: Sync configuration not found (request id req_123)"


def test_envelope_validation_errors_become_field_errors() -> None:
    body = envelope(
        422,
        "ValidationError",
        "Validation error",
        {
            "validation_errors": [
                {
                    "type": "less_than_equal",
                    "location": ["body", "batch_size"],
                    "message": "Input should be less than or equal to 100",
                },
                "not an object",
                {"type": "missing", "location": "not a list", "message": "skipped"},
            ]
        },
    )

    error = status_error(422, json=body)

    assert isinstance(error, UnprocessableEntityError)
    assert error.field_errors == [
        FieldError(("body", "batch_size"), "Input should be less than or equal to 100", "less_than_equal")
    ]
    assert str(error) == "422 ValidationError: batch_size: Input should be less than or equal to 100"


def test_fastapi_validation_errors_become_field_errors() -> None:
    body = {
        "detail": [
            {"loc": ["body", "batch_size"], "msg": "Input should be less than or equal to 100", "type": "le"},
            {"loc": ["query", "limit"], "msg": "Input should be greater than or equal to 1", "type": "ge"},
        ]
    }

    error = status_error(422, json=body)

    assert isinstance(error, UnprocessableEntityError)
    assert error.error_type is None
    assert [error.field for error in error.field_errors] == ["batch_size", "limit"]
    assert str(error) == (
        "422 Unprocessable Entity: batch_size: Input should be less than or equal to 100; "
        "limit: Input should be greater than or equal to 1"
    )


def test_nested_field_location_is_dotted() -> None:
    assert (
        FieldError(("body", "schema_mapping", "mappings", 0), "bad", "x").field == "schema_mapping.mappings.0"
    )
    assert str(FieldError(("body",), "Field required", "missing")) == "Field required"


def test_fastapi_string_detail_is_the_message() -> None:
    error = status_error(404, json={"detail": "Not Found"})

    assert error.message == "Not Found"
    assert str(error) == "404 Not Found: Not Found"


def test_non_json_body_is_kept_as_text() -> None:
    error = status_error(502, text="<html>upstream connect error</html>")

    assert isinstance(error, InternalServerError)
    assert error.body == "<html>upstream connect error</html>"
    assert str(error) == "502 Bad Gateway: <html>upstream connect error</html>"


def test_long_text_body_is_truncated_in_the_message() -> None:
    error = status_error(500, text="x" * 10_000)

    assert len(error.message) == 500
    assert error.body == "x" * 10_000


def test_empty_body_falls_back_to_reason_phrase() -> None:
    error = status_error(503)

    assert error.body is None
    assert str(error) == "503 Service Unavailable: Service Unavailable"


def test_unknown_json_shape_is_shown_as_text() -> None:
    error = status_error(500, json={"oops": True})

    assert error.body == {"oops": True}
    assert error.message == '{"oops":true}'


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({"Retry-After": "1.25"}, 1.25), ({"retry-after-ms": "40"}, 0.04), ({}, None)],
)
def test_retry_after_is_parsed(headers: dict[str, str], expected: float | None) -> None:
    error = status_error(429, json=envelope(429, "TooManyRequestsError", "slow down"), headers=headers)

    assert error.retry_after == expected


def test_request_id_falls_back_to_request_id_header() -> None:
    assert status_error(500, headers={"request-id": "abc"}).request_id == "abc"


def test_secrets_echoed_by_the_server_are_redacted() -> None:
    api_key = "sk_live_abcdef123456"
    response = httpx.Response(401, json=envelope(401, "UnauthorizedError", f"Invalid API key {api_key}"))

    error = make_status_error(response, now=NOW, secrets=[api_key])

    for text in (str(error), repr(error), error.message, str(error.body)):
        assert api_key not in text
    assert "[REDACTED]" in error.message
