"""Property-based: schemathesis drives every operation of the emulator's own OpenAPI document.

Generated requests carry a valid key and namespace, a bucket that exists and a sync id that
exists, so the handlers are exercised past authentication and lookup. Every response must
be documented and conform to the document, and nothing may ever answer 5xx.

Two built-in checks are replaced:
- `negative_data_rejection`: like the real (pydantic) server, the emulator coerces lax input
  such as `0` for a boolean or `"5"` for an integer instead of refusing it.
- `positive_data_acceptance`: JSON Schema cannot express some documented rules (one capture
  group in a filename_regex, no `file` source in a field mapping) nor which cursors exist, so
  `accepts_schema_valid_input` allows exactly those refusals and fails on any other.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from mixpeek_operator.emulator.app import create_app
from mixpeek_operator.emulator.config import EmulatorConfig
from mixpeek_operator.emulator.state import BucketScope, Emulator
from mixpeek_operator.emulator.testing import DEFAULT_BUCKET, DEFAULT_CONNECTION, FROZEN_START, auth_headers
from mixpeek_operator.mixpeek.models import SyncCreateRequest

app = create_app(EmulatorConfig(time_scale=0, start_time=FROZEN_START))
emulator: Emulator = app.state.emulator
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


def fresh_sync_id() -> str:
    headers = auth_headers()
    caller = emulator.directory.caller(headers["Authorization"], headers["X-Namespace"], emulator.behaviour)
    request = SyncCreateRequest(connection_id=DEFAULT_CONNECTION, source_path="fuzz")
    return emulator.create_sync(BucketScope(caller, DEFAULT_BUCKET), request).sync_id


ACCEPTED_FOR_VALID_INPUT = {401, 403, 404, 409, 429}


def accepts_schema_valid_input(ctx: Any, response: Any, case: Any) -> None:
    if case.meta is None or not case.meta.generation.mode.is_positive or response.status_code < 400:
        return
    if response.status_code in ACCEPTED_FOR_VALID_INPUT:
        return
    error = response.json()["error"]
    if response.status_code == 400 and error["message"].startswith("Invalid cursor"):
        return
    semantic = response.status_code == 422 and all(
        item["type"] == "value_error" for item in error["details"]["validation_errors"]
    )
    assert semantic, f"schema-valid input refused with {response.status_code}: {error}"


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_breaks_the_emulator(case: Any) -> None:
    case.path_parameters = {**(case.path_parameters or {}), "bucket_id": DEFAULT_BUCKET}
    if "sync_config_id" in case.path_parameters:
        case.path_parameters["sync_config_id"] = fresh_sync_id()
    if isinstance(case.body, dict) and isinstance(case.body.get("connection_id"), str):
        case.body["connection_id"] = DEFAULT_CONNECTION  # reach the create path, not just the 404
    response = case.call_and_validate(
        headers=auth_headers(),
        excluded_checks=[negative_data_rejection, positive_data_acceptance],
        additional_checks=[accepts_schema_valid_input],
    )
    assert response.status_code < 500
