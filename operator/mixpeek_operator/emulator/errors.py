"""Mixpeek's error envelope (reference §6.1) and the JSON rendering shared by every error response."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi.encoders import jsonable_encoder
from pydantic import ValidationError
from starlette.responses import Response

from mixpeek_operator.mixpeek.models import ErrorBody, ErrorResponse

# Documented `error.type` per HTTP status (reference §6.1); 405 has no documented name.
ERROR_TYPES: dict[int, str] = {
    400: "BadRequestError",
    401: "UnauthorizedError",
    403: "ForbiddenError",
    404: "NotFoundError",
    405: "MethodNotAllowedError",
    409: "AlreadyExistsError",
    422: "ValidationError",
    429: "TooManyRequestsError",
    500: "InternalServerError",
    503: "InferenceServiceUnavailableError",
}


def error_type_for(status: int) -> str:
    return ERROR_TYPES.get(status, "InternalServerError" if status >= 500 else "BadRequestError")


class ApiError(Exception):
    """An error answered with the envelope; raised anywhere below a route."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        error_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details
        self.error_type = error_type or error_type_for(status)
        self.headers = dict(headers or {})

    def to_response(self) -> Response:
        body = ErrorResponse(
            status=self.status,
            error=ErrorBody(type=self.error_type, message=self.message, details=self.details),
        )
        return json_response(body.model_dump(mode="json"), self.status, self.headers)


def not_found(resource: str, resource_id: str) -> ApiError:
    label = resource.replace("_", " ").capitalize()
    return ApiError(404, f"{label} not found", details={"resource": resource, "id": resource_id})


def json_response(content: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """Render any JSON-ish value safely: errors can echo client input (NaN, lone surrogates) that the
    stock JSONResponse would turn into a 500."""
    text = json.dumps(_finite(jsonable_encoder(content)), ensure_ascii=True, separators=(",", ":"))
    return json_text_response(text, status, headers)


def json_text_response(text: str, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """A body already rendered as JSON (syncs are cached as JSON text, so lists are a join)."""
    return Response(text, status_code=status, headers=dict(headers or {}), media_type="application/json")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def validation_error(errors: Sequence[Mapping[str, Any]]) -> ApiError:
    """422 in Mixpeek's envelope: `details.validation_errors[]` of {type, location, message}."""
    items = [
        {
            "type": str(err.get("type", "")),
            "location": list(err.get("loc", ())),
            "message": str(err.get("msg", "")),
        }
        for err in errors
    ]
    message = "Validation error"
    if items:
        message += f": {'.'.join(map(str, items[0]['location']))}: {items[0]['message']}"
    return ApiError(422, message, details={"validation_errors": items})


def invalid_body(exc: ValidationError) -> ApiError:
    """A pydantic failure on a JSON body we validate ourselves, located under `body` like FastAPI's."""
    return validation_error([{**err, "loc": ("body", *err["loc"])} for err in exc.errors(include_url=False)])


def validation_fastapi(errors: Sequence[Mapping[str, Any]]) -> Response:
    """422 in FastAPI's default shape `{"detail": [{loc, msg, type, ...}]}`."""
    return json_response({"detail": list(errors)}, 422)
