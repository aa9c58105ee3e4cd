"""The admin API under /_emulator/: no Mixpeek auth, not in the OpenAPI document, never faulted."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from mixpeek_operator.emulator.config import Behaviour
from mixpeek_operator.emulator.errors import invalid_body, json_response, json_text_response
from mixpeek_operator.emulator.records import records_json
from mixpeek_operator.emulator.routes import emulator_of, sync_response
from mixpeek_operator.emulator.state import FailWhen
from mixpeek_operator.emulator.traffic import FaultRule

ADMIN_PREFIX = "/_emulator"
ADMIN_USER_ID = "emulator-admin"

router = APIRouter(prefix=ADMIN_PREFIX, include_in_schema=False)


class _AdminBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AdvanceRequest(_AdminBody):
    seconds: float = Field(ge=0)


class PauseRequest(_AdminBody):
    reason: str | None = None
    user_id: str = ADMIN_USER_ID


class FailRequest(_AdminBody):
    message: str = Field(min_length=1)
    count: int = Field(default=1, ge=1, le=10_000)
    when: FailWhen = "now"


class CounterBump(_AdminBody):
    """Amounts added to the sync's counters."""

    total_files_discovered: int = Field(default=0, ge=0)
    total_files_synced: int = Field(default=0, ge=0)
    total_files_failed: int = Field(default=0, ge=0)
    total_bytes_synced: int = Field(default=0, ge=0)
    batches_created: int = Field(default=0, ge=0)
    sync_run_counter: int = Field(default=0, ge=0)


def _faults(request: Request) -> dict[str, Any]:
    return {"rules": [rule.model_dump() for rule in emulator_of(request).faults.rules]}


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.post("/reset")
async def reset(request: Request) -> dict[str, str]:
    emulator_of(request).reset()
    return {"status": "reset"}


@router.get("/clock")
async def clock(request: Request) -> dict[str, Any]:
    emulator = emulator_of(request)
    return {"now": emulator.clock.now().isoformat(), "time_scale": emulator.clock.time_scale}


@router.post("/clock/advance")
async def advance(request: Request, body: AdvanceRequest) -> dict[str, Any]:
    emulator = emulator_of(request)
    runs = emulator.advance(body.seconds)
    return {"now": emulator.clock.now().isoformat(), "runs": runs}


@router.post("/run-due")
async def run_due(request: Request) -> dict[str, Any]:
    emulator = emulator_of(request)
    runs = emulator.run_due()
    return {"now": emulator.clock.now().isoformat(), "runs": runs}


@router.get("/behaviour")
async def behaviour(request: Request) -> dict[str, Any]:
    return emulator_of(request).behaviour.model_dump()


@router.patch("/behaviour")
async def set_behaviour(request: Request, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    emulator = emulator_of(request)
    try:
        emulator.behaviour = Behaviour.model_validate({**emulator.behaviour.model_dump(), **body})
    except ValidationError as exc:
        raise invalid_body(exc) from exc
    return emulator.behaviour.model_dump()


@router.get("/faults")
async def faults(request: Request) -> dict[str, Any]:
    return _faults(request)


@router.put("/faults")
async def replace_faults(request: Request, body: list[FaultRule]) -> dict[str, Any]:
    emulator_of(request).faults.rules[:] = body
    return _faults(request)


@router.post("/faults")
async def add_fault(request: Request, body: FaultRule) -> dict[str, Any]:
    emulator_of(request).faults.rules.append(body)
    return _faults(request)


@router.delete("/faults")
async def clear_faults(request: Request) -> dict[str, Any]:
    emulator_of(request).faults.rules.clear()
    return _faults(request)


@router.get("/requests")
async def request_log(request: Request, limit: Annotated[int | None, Query(ge=1)] = None) -> dict[str, Any]:
    return {"requests": emulator_of(request).stats.log(limit)}


@router.get("/requests/counts")
async def request_counts(request: Request) -> dict[str, Any]:
    return emulator_of(request).stats.counts()


@router.delete("/requests")
async def clear_requests(request: Request) -> dict[str, str]:
    emulator_of(request).stats.clear()
    return {"status": "cleared"}


@router.get("/syncs")
async def list_syncs(
    request: Request, namespace_id: str | None = None, bucket_id: str | None = None
) -> Response:
    records = emulator_of(request).all_syncs(namespace_id, bucket_id)
    return json_text_response(f'{{"results":{records_json(records)},"total":{len(records)}}}')


@router.get("/syncs/{sync_config_id}")
async def get_sync(request: Request, sync_config_id: str) -> Response:
    return sync_response(emulator_of(request).find(sync_config_id))


@router.patch("/syncs/{sync_config_id}")
async def patch_sync(
    request: Request, sync_config_id: str, body: Annotated[dict[str, Any], Body()]
) -> Response:
    return sync_response(emulator_of(request).admin_patch(sync_config_id, body))


@router.delete("/syncs/{sync_config_id}")
async def delete_sync(request: Request, sync_config_id: str) -> Response:
    emulator_of(request).admin_delete(sync_config_id)
    return json_response({"success": True, "sync_config_id": sync_config_id})


@router.post("/syncs/{sync_config_id}/pause")
async def pause_sync(request: Request, sync_config_id: str, body: PauseRequest | None = None) -> Response:
    body = body or PauseRequest()
    return sync_response(
        emulator_of(request).admin_pause(sync_config_id, user_id=body.user_id, reason=body.reason)
    )


@router.post("/syncs/{sync_config_id}/resume")
async def resume_sync(request: Request, sync_config_id: str) -> Response:
    return sync_response(emulator_of(request).admin_resume(sync_config_id))


@router.post("/syncs/{sync_config_id}/fail")
async def fail_sync(request: Request, sync_config_id: str, body: FailRequest) -> Response:
    record = emulator_of(request).admin_fail(
        sync_config_id, message=body.message, count=body.count, when=body.when
    )
    return sync_response(record)


@router.post("/syncs/{sync_config_id}/counters")
async def bump_counters(request: Request, sync_config_id: str, body: CounterBump) -> Response:
    return sync_response(
        emulator_of(request).admin_bump(sync_config_id, body.model_dump(exclude_defaults=True))
    )
