"""The eight V2 bucket-sync endpoints (reference §2.1), with the API's own bodies, bounds and headers."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError
from starlette.responses import Response

from mixpeek_operator.emulator.errors import json_response, json_text_response
from mixpeek_operator.emulator.records import SyncRecord
from mixpeek_operator.emulator.state import BucketScope, Emulator
from mixpeek_operator.emulator.traffic import CREATED_SYNC_ID
from mixpeek_operator.mixpeek.models import (
    LIST_LIMIT_MAX,
    LIST_LIMIT_MIN,
    LIST_OFFSET_MAX,
    DeleteResponse,
    ErrorResponse,
    ListSyncConfigurationsRequest,
    SyncConfiguration,
    SyncCreateRequest,
    SyncListResponse,
    SyncUpdateRequest,
    TriggerResponse,
)

# 422 is documented by create_app, in the shape it is configured to send.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in [
        (400, "Bad request (BadRequestError)"),
        (401, "Missing or invalid API key (UnauthorizedError)"),
        (403, "Namespace not accessible with this key (ForbiddenError)"),
        (404, "Bucket, connection, namespace or sync not found (NotFoundError)"),
        (409, "Trigger refused on a paused sync, when configured so (AlreadyExistsError)"),
        (429, "Rate limited (TooManyRequestsError), only when injected"),
        (500, "Server error (InternalServerError)"),
    ]
}


def emulator_of(request: Request) -> Emulator:
    emulator: Emulator = request.app.state.emulator
    return emulator


async def bucket_scope(
    request: Request,
    bucket_id: Annotated[str, Path(description="Target bucket, e.g. `bkt_demo`.")],
    authorization: Annotated[str | None, Header(description="REQUIRED. `Bearer <api_key>`.")] = None,
    x_namespace: Annotated[
        str | None, Header(alias="X-Namespace", description="REQUIRED. Namespace id (`ns_…`) or name.")
    ] = None,
) -> BucketScope:
    emulator = emulator_of(request)
    caller = emulator.directory.caller(authorization, x_namespace, emulator.behaviour)
    emulator.directory.bucket(caller.namespace.id, bucket_id)
    return BucketScope(caller, bucket_id)


Scope = Annotated[BucketScope, Depends(bucket_scope)]
SyncId = Annotated[str, Path(description="The sync configuration id, e.g. `sync_…`.")]
_CREATE_ONLY = set(SyncCreateRequest.model_fields) - set(SyncUpdateRequest.model_fields)
_SERVER_MANAGED = set(SyncConfiguration.model_fields) - set(SyncCreateRequest.model_fields)

router = APIRouter(prefix="/v1/buckets/{bucket_id}/syncs", tags=["Bucket Syncs"], responses=ERROR_RESPONSES)


async def _check_body(request: Request, body: BaseModel | None) -> None:
    """What the models cannot say: strict mode's unknown keys, and text JSON allows but UTF-8 does not."""
    if body is None:
        return
    try:
        body.model_dump_json()
    except PydanticSerializationError:
        raise RequestValidationError(
            [
                {
                    "type": "string_unicode",
                    "loc": ("body",),
                    "msg": "Text must be valid Unicode (no lone surrogates)",
                }
            ]
        ) from None
    if not emulator_of(request).behaviour.strict:
        return
    raw = json.loads(await request.body())
    extra = [key for key in raw if key not in type(body).model_fields] if isinstance(raw, dict) else []
    if extra:
        raise RequestValidationError(
            [
                {
                    "type": "extra_forbidden",
                    "loc": ("body", key),
                    "msg": _extra_key_message(body, key),
                    "input": raw[key],
                }
                for key in extra
            ]
        )


def _extra_key_message(body: BaseModel, key: str) -> str:
    if isinstance(body, SyncUpdateRequest) and key in _CREATE_ONLY:
        return "Create-only field: delete and recreate the sync to change it"
    if isinstance(body, SyncUpdateRequest) and key in _SERVER_MANAGED:
        return "Server-managed field: it cannot be set"
    return "Extra inputs are not permitted"


def sync_response(record: SyncRecord) -> Response:
    return json_text_response(record.to_json())


@router.post("", response_model=SyncConfiguration, summary="Create a sync configuration")
async def create_sync_configuration(request: Request, scope: Scope, body: SyncCreateRequest) -> Response:
    await _check_body(request, body)
    record = emulator_of(request).create_sync(scope, body)
    setattr(request.state, CREATED_SYNC_ID, record.sync_id)  # for the request log (app.py)
    return sync_response(record)


@router.post("/list", response_model=SyncListResponse, summary="List sync configurations (newest first)")
async def list_sync_configurations(
    request: Request,
    scope: Scope,
    body: Annotated[ListSyncConfigurationsRequest | None, Body()] = None,
    limit: Annotated[
        int | None,
        Query(
            ge=LIST_LIMIT_MIN,
            le=LIST_LIMIT_MAX,
            description="Page size; the emulator defaults to 10 (behaviour.default_list_limit).",
        ),
    ] = None,
    offset: Annotated[int | None, Query(ge=0, le=LIST_OFFSET_MAX)] = None,
    cursor: Annotated[str | None, Query(description="`pagination.next_cursor` of the previous page.")] = None,
    include_total: Annotated[bool, Query(description="Fill the pagination count fields.")] = False,
) -> Response:
    await _check_body(request, body)
    text = emulator_of(request).list_syncs(
        scope, body, limit=limit, offset=offset, cursor=cursor, include_total=include_total
    )
    return json_text_response(text)


@router.get("/{sync_config_id}", response_model=SyncConfiguration, summary="Get a sync configuration")
async def get_sync_configuration(request: Request, scope: Scope, sync_config_id: SyncId) -> Response:
    return sync_response(emulator_of(request).get_sync(scope, sync_config_id))


@router.patch("/{sync_config_id}", response_model=SyncConfiguration, summary="Update a sync configuration")
async def update_sync_configuration(
    request: Request, scope: Scope, sync_config_id: SyncId, body: SyncUpdateRequest
) -> Response:
    await _check_body(request, body)
    return sync_response(emulator_of(request).update_sync(scope, sync_config_id, body))


@router.delete("/{sync_config_id}", response_model=DeleteResponse, summary="Delete a sync configuration")
async def delete_sync_configuration(request: Request, scope: Scope, sync_config_id: SyncId) -> Response:
    return json_response(emulator_of(request).delete_sync(scope, sync_config_id))


@router.post(
    "/{sync_config_id}/pause", response_model=SyncConfiguration, summary="Pause a sync configuration"
)
async def pause_sync_configuration(request: Request, scope: Scope, sync_config_id: SyncId) -> Response:
    return sync_response(emulator_of(request).pause_sync(scope, sync_config_id))


@router.post(
    "/{sync_config_id}/resume", response_model=SyncConfiguration, summary="Resume a sync configuration"
)
async def resume_sync_configuration(request: Request, scope: Scope, sync_config_id: SyncId) -> Response:
    return sync_response(emulator_of(request).resume_sync(scope, sync_config_id))


@router.post("/{sync_config_id}/trigger", response_model=TriggerResponse, summary="Run a sync now")
async def trigger_sync_configuration(request: Request, scope: Scope, sync_config_id: SyncId) -> Response:
    return json_response(emulator_of(request).trigger_sync(scope, sync_config_id))
