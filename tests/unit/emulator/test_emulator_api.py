"""The emulator's public /v1 surface: every endpoint, default and bound of reference §2-§4."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest

from mixpeek_operator.emulator.app import create_app
from mixpeek_operator.emulator.config import Behaviour, EmulatorConfig
from mixpeek_operator.emulator.seed import (
    ApiKeySeed,
    BucketSeed,
    ConnectionSeed,
    NamespaceSeed,
    Seed,
    StorageProvider,
)
from mixpeek_operator.emulator.state import Emulator
from mixpeek_operator.emulator.testing import (
    DEFAULT_CONNECTION,
    FROZEN_START,
    SYNCS_PATH,
    asgi_client,
    auth_headers,
    create_sync,
)
from mixpeek_operator.mixpeek.models import SyncConfiguration

pytest_plugins = ["mixpeek_operator.emulator.pytest_plugin"]

SYNC_ID_PATTERN = re.compile(r"^sync_[a-zA-Z0-9]{14,16}$")
START_ISO = "2026-01-01T00:00:00Z"

# Reference §3.5: every server default of a freshly created sync.
MODEL_DEFAULTS: dict[str, Any] = {
    "file_filters": None,
    "schema_mapping": None,
    "sync_mode": "continuous",
    "polling_interval_seconds": 300,
    "batch_size": 50,
    "create_object_on_confirm": True,
    "skip_duplicates": True,
    "skip_batch_submission": False,
    "status": "PENDING",
    "is_active": True,
    "total_files_discovered": 0,
    "total_files_synced": 0,
    "total_files_failed": 0,
    "total_bytes_synced": 0,
    "last_sync_at": None,
    "last_error": None,
    "consecutive_failures": 0,
    "metadata": {},
    "locked_by_worker_id": None,
    "locked_at": None,
    "lock_expires_at": None,
    "paused": False,
    "pause_reason": None,
    "paused_at": None,
    "paused_by_user_id": None,
    "max_objects_per_run": 100000,
    "max_batch_chunk_size": 1000,
    "batch_chunk_size": 100,
    "current_sync_run_id": None,
    "sync_run_counter": 0,
    "batch_ids": [],
    "task_ids": [],
    "batches_created": 0,
    "resume_enabled": True,
    "resume_cursor": None,
    "resume_last_primary_key": None,
    "resume_objects_processed": 0,
    "resume_checkpoint_frequency": 1000,
}


def sync_path(sync_id: str, action: str = "", bucket: str = "bkt_demo") -> str:
    return f"/v1/buckets/{bucket}/syncs/{sync_id}" + (f"/{action}" if action else "")


def assert_error(response: httpx.Response, status: int, error_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is False
    assert body["status"] == status
    assert body["error"]["type"] == error_type
    assert body["error"]["message"]
    return body


def validation_locations(response: httpx.Response) -> list[list[Any]]:
    body = assert_error(response, 422, "ValidationError")
    return [item["location"] for item in body["error"]["details"]["validation_errors"]]


# --- create --------------------------------------------------------------------------------


async def test_create_returns_200_with_every_default_and_server_field(
    emulator_client: httpx.AsyncClient,
) -> None:
    response = await emulator_client.post(
        SYNCS_PATH, json={"connection_id": DEFAULT_CONNECTION, "source_path": "demo-bucket/videos"}
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == set(SyncConfiguration.model_fields)
    assert len(body) == 48
    assert {key: body[key] for key in MODEL_DEFAULTS} == MODEL_DEFAULTS
    assert SYNC_ID_PATTERN.match(body["sync_config_id"])
    assert body["bucket_id"] == "bkt_demo"
    assert body["connection_id"] == DEFAULT_CONNECTION
    assert body["source_path"] == "demo-bucket/videos"
    assert body["internal_id"] == "org_emulator"
    assert body["namespace_id"] == "ns_emulator"
    assert body["created_by_user_id"] == "usr_emulator"
    assert body["created_at"] == body["updated_at"] == START_ISO
    assert body["next_sync_at"] == "2026-01-01T00:00:05Z"  # the first run, initial_run_delay_seconds later


async def test_create_stores_every_client_field(emulator_client: httpx.AsyncClient) -> None:
    fields = {
        "sync_mode": "initial_only",
        "file_filters": {"include_patterns": ["*.mp4"], "min_size_bytes": 10, "mime_types": ["video/*"]},
        "schema_mapping": {"mappings": {"content": {"target_type": "blob", "source": {"type": "file"}}}},
        "polling_interval_seconds": 60,
        "batch_size": 7,
        "skip_batch_submission": True,
        "metadata": {"team": "media", "nested": {"a": [1, 2]}},
    }
    created = await create_sync(emulator_client, **fields)
    assert created["sync_mode"] == "initial_only"
    assert created["file_filters"]["include_patterns"] == ["*.mp4"]
    assert created["file_filters"]["min_size_bytes"] == 10
    assert created["file_filters"]["mime_types"] == ["video/*"]
    assert created["schema_mapping"]["mappings"]["content"] == {
        "target_type": "blob",
        "source": {"type": "file"},
        "blob_type": "auto",
        "blob_property": "content",
        "mime_type_override": None,
    }
    assert (created["polling_interval_seconds"], created["batch_size"]) == (60, 7)
    assert created["skip_batch_submission"] is True
    assert created["metadata"] == fields["metadata"]


async def test_sync_ids_are_unique_and_follow_the_v1_pattern(emulator_client: httpx.AsyncClient) -> None:
    ids = [(await create_sync(emulator_client))["sync_config_id"] for _ in range(30)]
    assert len(set(ids)) == 30
    assert all(SYNC_ID_PATTERN.match(sync_id) for sync_id in ids)


async def test_create_ignores_unknown_keys_like_mixpeeks_own_examples(
    emulator_client: httpx.AsyncClient,
) -> None:
    created = await create_sync(emulator_client, description="not a field", extensions=[".mp4"])
    assert "description" not in created
    assert "extensions" not in created


@pytest.mark.parametrize(
    ("connection_id", "bucket", "status", "resource"),
    [
        ("conn_missing", "bkt_demo", 404, "connection"),
        (DEFAULT_CONNECTION, "bkt_missing", 404, "bucket"),
    ],
)
async def test_create_with_unknown_references_is_404(
    emulator_client: httpx.AsyncClient, connection_id: str, bucket: str, status: int, resource: str
) -> None:
    response = await emulator_client.post(
        f"/v1/buckets/{bucket}/syncs", json={"connection_id": connection_id, "source_path": "x"}
    )
    body = assert_error(response, status, "NotFoundError")
    assert body["error"]["details"]["resource"] == resource


# --- bounds and enums (reference §3-§4), on create and on patch --------------------------

TEXT_BLOB = {"target_type": "blob", "source": {"type": "file"}}


def mapping(entry: dict[str, Any]) -> dict[str, Any]:
    return {"mappings": {"target": entry}}


def field_from(source: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return mapping({"target_type": "field", "source": source, **extra})


# (case id, body fields, accepted?) -- each bound just inside and just outside.
BOUNDS: list[tuple[str, dict[str, Any], bool]] = [
    ("polling-29", {"polling_interval_seconds": 29}, False),
    ("polling-30", {"polling_interval_seconds": 30}, True),
    ("polling-900", {"polling_interval_seconds": 900}, True),
    ("polling-901", {"polling_interval_seconds": 901}, False),
    ("polling-string", {"polling_interval_seconds": "often"}, False),
    ("batch-0", {"batch_size": 0}, False),
    ("batch-1", {"batch_size": 1}, True),
    ("batch-100", {"batch_size": 100}, True),
    ("batch-101", {"batch_size": 101}, False),
    ("metadata-50-keys", {"metadata": {f"k{i}": i for i in range(50)}}, True),
    ("metadata-51-keys", {"metadata": {f"k{i}": i for i in range(51)}}, False),
    ("metadata-not-object", {"metadata": ["a"]}, False),
    ("skip-batch-not-bool", {"skip_batch_submission": "maybe"}, False),
    ("mapping-missing-mappings", {"schema_mapping": {}}, False),
    (
        "mapping-unknown-target-type",
        {"schema_mapping": mapping({"target_type": "column", "source": {}})},
        False,
    ),
    # The spec shows target_type with a default, but as a pydantic discriminator it must be sent.
    ("mapping-no-target-type", {"schema_mapping": mapping({"source": {"type": "file"}})}, False),
    ("blob-file", {"schema_mapping": mapping(TEXT_BLOB)}, True),
    *[
        (f"blob-type-{kind}", {"schema_mapping": mapping({**TEXT_BLOB, "blob_type": kind})}, True)
        for kind in ("auto", "image", "video", "audio", "text", "pdf", "excel")
    ],
    *[
        (f"blob-type-{kind}", {"schema_mapping": mapping({**TEXT_BLOB, "blob_type": kind})}, False)
        for kind in ("document", "json", "binary", "IMAGE")
    ],
    ("blob-property-empty", {"schema_mapping": mapping({**TEXT_BLOB, "blob_property": ""})}, False),
    (
        "blob-mime-override",
        {"schema_mapping": mapping({**TEXT_BLOB, "mime_type_override": "video/mp4"})},
        True,
    ),
    ("field-source-file", {"schema_mapping": field_from({"type": "file"})}, False),
    ("field-source-unknown", {"schema_mapping": field_from({"type": "sql"})}, False),
    ("tag-key-128", {"schema_mapping": field_from({"type": "tag", "key": "k" * 128})}, True),
    ("tag-key-129", {"schema_mapping": field_from({"type": "tag", "key": "k" * 129})}, False),
    ("tag-key-empty", {"schema_mapping": field_from({"type": "tag", "key": ""})}, False),
    ("metadata-key-1024", {"schema_mapping": field_from({"type": "metadata", "key": "k" * 1024})}, True),
    ("metadata-key-1025", {"schema_mapping": field_from({"type": "metadata", "key": "k" * 1025})}, False),
    (
        "regex-one-group",
        {"schema_mapping": field_from({"type": "filename_regex", "pattern": r"^(\w+)_"})},
        True,
    ),
    (
        "regex-no-group",
        {"schema_mapping": field_from({"type": "filename_regex", "pattern": r"^\w+_"})},
        False,
    ),
    (
        "regex-two-groups",
        {"schema_mapping": field_from({"type": "filename_regex", "pattern": r"(a)(b)"})},
        False,
    ),
    (
        "regex-invalid",
        {"schema_mapping": field_from({"type": "filename_regex", "pattern": "(unclosed"})},
        False,
    ),
    ("regex-empty", {"schema_mapping": field_from({"type": "filename_regex", "pattern": ""})}, False),
    ("column", {"schema_mapping": field_from({"type": "column", "name": "TITLE"})}, True),
    ("column-empty", {"schema_mapping": field_from({"type": "column", "name": ""})}, False),
    ("drive-property", {"schema_mapping": field_from({"type": "drive_property", "key": "starred"})}, True),
    ("folder-path", {"schema_mapping": field_from({"type": "folder_path", "segment": -1})}, True),
    (
        "folder-path-bad-segment",
        {"schema_mapping": field_from({"type": "folder_path", "segment": "x"})},
        False,
    ),
    ("constant", {"schema_mapping": field_from({"type": "constant", "value": {"any": ["json"]}})}, True),
    ("constant-missing-value", {"schema_mapping": field_from({"type": "constant"})}, False),
    *[
        (f"transform-{t}", {"schema_mapping": field_from({"type": "tag", "key": "k"}, transform=t)}, True)
        for t in ("lowercase", "uppercase", "trim", "json_parse")
    ],
    (
        "transform-unknown",
        {"schema_mapping": field_from({"type": "tag", "key": "k"}, transform="title")},
        False,
    ),
]
# Only in the create body (reference §3.1).
CREATE_ONLY_BOUNDS: list[tuple[str, dict[str, Any], bool]] = [
    ("mode-initial-only", {"sync_mode": "initial_only"}, True),
    ("mode-continuous", {"sync_mode": "continuous"}, True),
    ("mode-one-time", {"sync_mode": "one_time"}, False),
    ("mode-scheduled", {"sync_mode": "scheduled"}, False),
    ("filters-min-size-0", {"file_filters": {"min_size_bytes": 0}}, True),
    ("filters-min-size-negative", {"file_filters": {"min_size_bytes": -1}}, False),
    ("filters-max-size-negative", {"file_filters": {"max_size_bytes": -1}}, False),
    ("filters-bad-date", {"file_filters": {"modified_after": "yesterday"}}, False),
    ("filters-patterns-not-list", {"file_filters": {"include_patterns": "*.mp4"}}, False),
]
# Only in the PATCH body (reference §3.2).
PATCH_ONLY_BOUNDS: list[tuple[str, dict[str, Any], bool]] = [
    *[
        (f"status-{s}", {"status": s}, True)
        for s in ("ACTIVE", "SUSPENDED", "COMPLETED_WITH_ERRORS", "DRAFT")
    ],
    ("status-lowercase", {"status": "failed"}, False),
    ("status-paused", {"status": "PAUSED"}, False),
    ("is-active-not-bool", {"is_active": "sometimes"}, False),
]


def first_key(fields: dict[str, Any]) -> str:
    return next(iter(fields))


@pytest.mark.parametrize(
    ("fields", "accepted"), [pytest.param(f, ok, id=i) for i, f, ok in BOUNDS + CREATE_ONLY_BOUNDS]
)
async def test_create_bounds(
    emulator_client: httpx.AsyncClient, fields: dict[str, Any], accepted: bool
) -> None:
    response = await emulator_client.post(
        SYNCS_PATH, json={"connection_id": DEFAULT_CONNECTION, "source_path": "p", **fields}
    )
    if accepted:
        assert response.status_code == 200, response.text
    else:
        assert all(loc[:2] == ["body", first_key(fields)] for loc in validation_locations(response))


@pytest.mark.parametrize(
    ("fields", "accepted"), [pytest.param(f, ok, id=i) for i, f, ok in BOUNDS + PATCH_ONLY_BOUNDS]
)
async def test_patch_bounds(
    emulator_client: httpx.AsyncClient, fields: dict[str, Any], accepted: bool
) -> None:
    sync_id = (await create_sync(emulator_client))["sync_config_id"]
    response = await emulator_client.patch(sync_path(sync_id), json=fields)
    if accepted:
        assert response.status_code == 200, response.text
    else:
        assert all(loc[:2] == ["body", first_key(fields)] for loc in validation_locations(response))
        # A refused PATCH changes nothing.
        assert (await emulator_client.get(sync_path(sync_id))).json()["updated_at"] == START_ISO


@pytest.mark.parametrize("missing", ["connection_id", "source_path"])
async def test_create_requires_connection_and_source_path(
    emulator_client: httpx.AsyncClient, missing: str
) -> None:
    body = {"connection_id": DEFAULT_CONNECTION, "source_path": "p"}
    del body[missing]
    response = await emulator_client.post(SYNCS_PATH, json=body)
    assert validation_locations(response) == [["body", missing]]


async def test_validation_envelope_shape(emulator_client: httpx.AsyncClient) -> None:
    response = await emulator_client.post(
        SYNCS_PATH, json={"connection_id": DEFAULT_CONNECTION, "source_path": "p", "batch_size": 101}
    )
    assert response.json() == {
        "success": False,
        "status": 422,
        "error": {
            "type": "ValidationError",
            "message": "Validation error: body.batch_size: Input should be less than or equal to 100",
            "details": {
                "validation_errors": [
                    {
                        "type": "less_than_equal",
                        "location": ["body", "batch_size"],
                        "message": "Input should be less than or equal to 100",
                    }
                ]
            },
        },
    }


async def test_validation_errors_can_use_fastapis_shape() -> None:
    app = create_app(EmulatorConfig(time_scale=0, validation_errors="fastapi"))
    async with asgi_client(app) as client:
        response = await client.post(
            SYNCS_PATH, json={"connection_id": DEFAULT_CONNECTION, "source_path": "p", "batch_size": 0}
        )
    assert response.status_code == 422
    (item,) = response.json()["detail"]
    assert item["loc"] == ["body", "batch_size"]
    assert item["type"] == "greater_than_equal"
    assert item["msg"] == "Input should be greater than or equal to 1"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"connection_id": "conn_s3_demo", "source_path": "p", "batch_size": NaN}', id="nan"),
        pytest.param(
            b'{"connection_id": "conn_s3_demo", "source_path": "p", "metadata": {"k": "\\ud800"}}', id="lone"
        ),
        pytest.param(
            b'{"connection_id": "conn_s3_demo", "source_path": "\\udfff"}', id="lone-surrogate-path"
        ),
        pytest.param(b'{"connection_id": ', id="truncated-json"),
    ],
)
async def test_hostile_json_is_422_never_500(emulator_client: httpx.AsyncClient, body: bytes) -> None:
    response = await emulator_client.post(
        SYNCS_PATH, content=body, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 422, "ValidationError")


# --- list --------------------------------------------------------------------------------


async def list_syncs(
    client: httpx.AsyncClient, body: dict[str, Any] | None = None, **params: Any
) -> dict[str, Any]:
    response = await client.post(f"{SYNCS_PATH}/list", params=params, json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def create_many(client: httpx.AsyncClient, emulator: Emulator, count: int, **fields: Any) -> list[str]:
    """Oldest first; the clock moves a second between creates so created_at differs."""
    ids = []
    for _ in range(count):
        ids.append((await create_sync(client, **fields))["sync_config_id"])
        emulator.clock.advance(1)
    return ids


async def test_list_is_newest_first_and_always_has_total(
    emulator_client: httpx.AsyncClient, emulator: Emulator
) -> None:
    ids = await create_many(emulator_client, emulator, 3)
    page = await list_syncs(emulator_client)
    assert [s["sync_config_id"] for s in page["results"]] == ids[::-1]
    assert page["total"] == 3
    assert page["pagination"] == {
        "total": None,
        "page": None,
        "page_size": None,
        "total_pages": None,
        "next_page": None,
        "previous_page": None,
        "next_cursor": None,
    }


async def test_list_orders_same_instant_creations_by_creation(emulator_client: httpx.AsyncClient) -> None:
    ids = [(await create_sync(emulator_client))["sync_config_id"] for _ in range(5)]  # frozen clock
    assert [s["sync_config_id"] for s in (await list_syncs(emulator_client))["results"]] == ids[::-1]


async def test_list_default_limit_is_10(emulator_client: httpx.AsyncClient, emulator: Emulator) -> None:
    await create_many(emulator_client, emulator, 12)
    page = await list_syncs(emulator_client)
    assert len(page["results"]) == 10
    assert page["total"] == 12
    assert page["pagination"]["next_cursor"]


async def test_list_limit_and_offset_pages(emulator_client: httpx.AsyncClient, emulator: Emulator) -> None:
    newest_first = (await create_many(emulator_client, emulator, 7))[::-1]
    page = await list_syncs(emulator_client, limit=3, offset=3, include_total=True)
    assert [s["sync_config_id"] for s in page["results"]] == newest_first[3:6]
    assert page["pagination"]["total"] == 7
    assert page["pagination"]["page"] == 2
    assert page["pagination"]["page_size"] == 3
    assert page["pagination"]["total_pages"] == 3
    assert page["pagination"]["next_cursor"]
    last = await list_syncs(emulator_client, limit=3, offset=6)
    assert [s["sync_config_id"] for s in last["results"]] == newest_first[6:]
    assert last["pagination"]["next_cursor"] is None
    beyond = await list_syncs(emulator_client, limit=3, offset=10)
    assert beyond["results"] == []
    assert beyond["total"] == 7


async def test_list_cursor_walks_every_sync_once_in_order(
    emulator_client: httpx.AsyncClient, emulator: Emulator
) -> None:
    newest_first = (await create_many(emulator_client, emulator, 11))[::-1]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 4} | ({"cursor": cursor} if cursor else {})
        page = await list_syncs(emulator_client, **params)
        seen += [s["sync_config_id"] for s in page["results"]]
        cursor = page["pagination"]["next_cursor"]
        if cursor is None:
            break
        # Newer syncs created mid-walk do not shift a cursor walk.
        await create_sync(emulator_client)
    assert seen == newest_first


async def test_list_cursor_takes_precedence_over_offset(
    emulator_client: httpx.AsyncClient, emulator: Emulator
) -> None:
    newest_first = (await create_many(emulator_client, emulator, 5))[::-1]
    cursor = (await list_syncs(emulator_client, limit=2))["pagination"]["next_cursor"]
    page = await list_syncs(emulator_client, limit=2, cursor=cursor, offset=3, include_total=True)
    assert [s["sync_config_id"] for s in page["results"]] == newest_first[2:4]
    assert page["pagination"]["page"] == 2


@pytest.mark.parametrize("cursor", ["not-base64!", "bm9wZQ", "MXwyMDI2LTAxLTAxVDAwOjAwOjAw"])
async def test_list_rejects_a_forged_cursor_with_400(emulator_client: httpx.AsyncClient, cursor: str) -> None:
    response = await emulator_client.post(f"{SYNCS_PATH}/list", params={"cursor": cursor})
    assert_error(response, 400, "BadRequestError")


@pytest.mark.parametrize(
    ("params", "accepted"),
    [
        ({"limit": 0}, False),
        ({"limit": 1}, True),
        ({"limit": 1000}, True),
        ({"limit": 1001}, False),
        ({"offset": -1}, False),
        ({"offset": 0}, True),
        ({"offset": 10000}, True),
        ({"offset": 10001}, False),
        ({"include_total": "sometimes"}, False),
    ],
)
async def test_list_query_bounds(
    emulator_client: httpx.AsyncClient, params: dict[str, Any], accepted: bool
) -> None:
    response = await emulator_client.post(f"{SYNCS_PATH}/list", params=params)
    if accepted:
        assert response.status_code == 200
    else:
        assert validation_locations(response) == [["query", first_key(params)]]


async def test_list_filters_combine_with_and(emulator_client: httpx.AsyncClient, emulator: Emulator) -> None:
    drive = (await create_sync(emulator_client, connection_id="conn_gdrive_demo"))["sync_config_id"]
    s3_active = (await create_sync(emulator_client))["sync_config_id"]
    s3_paused = (await create_sync(emulator_client))["sync_config_id"]
    await emulator_client.post(sync_path(s3_paused, "pause"))

    async def ids(body: dict[str, Any] | None) -> set[str]:
        return {s["sync_config_id"] for s in (await list_syncs(emulator_client, body))["results"]}

    assert await ids(None) == {drive, s3_active, s3_paused}
    assert await ids({}) == {drive, s3_active, s3_paused}
    assert await ids({"connection_id": DEFAULT_CONNECTION}) == {s3_active, s3_paused}
    assert await ids({"is_active": False}) == {s3_paused}
    assert await ids({"status": "SUSPENDED"}) == {s3_paused}
    assert await ids({"connection_id": DEFAULT_CONNECTION, "is_active": True}) == {s3_active}
    assert await ids({"connection_id": "conn_gdrive_demo", "is_active": False}) == set()
    assert (await list_syncs(emulator_client, {"is_active": False}))["total"] == 1


async def test_list_filter_status_must_be_the_uppercase_enum(emulator_client: httpx.AsyncClient) -> None:
    response = await emulator_client.post(f"{SYNCS_PATH}/list", json={"status": "pending"})
    assert validation_locations(response) == [["body", "status"]]


async def test_list_is_scoped_to_the_bucket(emulator_client: httpx.AsyncClient) -> None:
    await create_sync(emulator_client)
    other = await emulator_client.post("/v1/buckets/bkt_media/syncs/list")
    assert other.json()["results"] == []
    assert other.json()["total"] == 0


# --- get / patch / delete ------------------------------------------------------------------


async def test_get_returns_the_stored_model(emulator_client: httpx.AsyncClient) -> None:
    created = await create_sync(emulator_client, metadata={"a": 1})
    response = await emulator_client.get(sync_path(created["sync_config_id"]))
    assert response.status_code == 200
    assert response.json() == created


@pytest.mark.parametrize(
    ("bucket", "resource"),
    [("bkt_demo", "sync_configuration"), ("bkt_media", "sync_configuration"), ("bkt_missing", "bucket")],
)
@pytest.mark.parametrize(
    ("method", "action"), [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "pause")]
)
async def test_unknown_or_misplaced_sync_is_404(
    emulator_client: httpx.AsyncClient, bucket: str, resource: str, method: str, action: str
) -> None:
    created = await create_sync(emulator_client)  # lives in bkt_demo
    sync_id = "sync_doesnotexist00" if bucket == "bkt_demo" else created["sync_config_id"]
    response = await emulator_client.request(method, sync_path(sync_id, action, bucket=bucket), json={})
    body = assert_error(response, 404, "NotFoundError")
    assert body["error"]["details"]["resource"] == resource


async def test_patch_changes_only_present_non_null_keys(
    emulator_client: httpx.AsyncClient, emulator: Emulator
) -> None:
    created = await create_sync(
        emulator_client, metadata={"a": 1, "b": 2}, batch_size=10, polling_interval_seconds=60
    )
    emulator.clock.advance(3)  # before the first run, which would change the counters
    response = await emulator_client.patch(
        sync_path(created["sync_config_id"]),
        json={
            "batch_size": 20,
            "polling_interval_seconds": None,
            "metadata": {"c": 3},
            "description": "hello",
        },
    )
    assert response.status_code == 200
    patched = response.json()
    assert patched["batch_size"] == 20
    assert patched["polling_interval_seconds"] == 60  # null means "not provided"
    assert patched["metadata"] == {"c": 3}  # replaced wholesale, not merged
    assert "description" not in patched
    assert patched["updated_at"] == "2026-01-01T00:00:03Z"
    assert patched["created_at"] == START_ISO
    unchanged = {k: v for k, v in created.items() if k not in {"batch_size", "metadata", "updated_at"}}
    assert {k: patched[k] for k in unchanged} == unchanged
    assert (await emulator_client.get(sync_path(created["sync_config_id"]))).json() == patched


async def test_patch_replaces_schema_mapping_and_keeps_skip_batch_submission(
    emulator_client: httpx.AsyncClient,
) -> None:
    created = await create_sync(
        emulator_client,
        skip_batch_submission=True,
        schema_mapping={
            "mappings": {
                "content": TEXT_BLOB,
                "title": {"target_type": "field", "source": {"type": "tag", "key": "t"}},
            }
        },
    )
    new_mapping = {"mappings": {"video": {**TEXT_BLOB, "blob_type": "video"}}}
    patched = (
        await emulator_client.patch(
            sync_path(created["sync_config_id"]), json={"schema_mapping": new_mapping}
        )
    ).json()
    assert list(patched["schema_mapping"]["mappings"]) == ["video"]
    assert patched["schema_mapping"]["mappings"]["video"]["blob_type"] == "video"
    assert patched["skip_batch_submission"] is True


async def test_patch_ignores_create_only_and_unknown_keys(emulator_client: httpx.AsyncClient) -> None:
    created = await create_sync(emulator_client, file_filters={"include_patterns": ["*.mp4"]})
    create_only = {
        "connection_id": "conn_gdrive_demo",
        "source_path": "elsewhere",
        "sync_mode": "initial_only",
        "file_filters": {"include_patterns": ["*.mov"]},
        "skip_duplicates": False,
        "create_object_on_confirm": False,
        "max_objects_per_run": 1,
        "sync_run_counter": 99,
        "totally_unknown": True,
    }
    patched = (await emulator_client.patch(sync_path(created["sync_config_id"]), json=create_only)).json()
    assert {k: patched[k] for k in create_only if k in patched} == {
        k: created[k] for k in create_only if k in created
    }


async def test_patch_status_and_is_active(emulator_client: httpx.AsyncClient) -> None:
    created = await create_sync(emulator_client)
    patched = (
        await emulator_client.patch(
            sync_path(created["sync_config_id"]), json={"status": "ACTIVE", "is_active": False}
        )
    ).json()
    assert (patched["status"], patched["is_active"]) == ("ACTIVE", False)
    assert patched["next_sync_at"] is None  # an inactive sync is not scheduled


async def test_patch_requires_a_body(emulator_client: httpx.AsyncClient) -> None:
    sync_id = (await create_sync(emulator_client))["sync_config_id"]
    response = await emulator_client.patch(sync_path(sync_id))
    assert validation_locations(response) == [["body"]]


async def test_delete_then_404(emulator_client: httpx.AsyncClient) -> None:
    sync_id = (await create_sync(emulator_client))["sync_config_id"]
    response = await emulator_client.delete(sync_path(sync_id))
    assert response.status_code == 200
    assert response.json() == {"success": True, "sync_config_id": sync_id}
    assert_error(await emulator_client.get(sync_path(sync_id)), 404, "NotFoundError")
    assert_error(await emulator_client.delete(sync_path(sync_id)), 404, "NotFoundError")
    assert (await list_syncs(emulator_client))["total"] == 0


# --- strict mode -----------------------------------------------------------------------------


@pytest.fixture
def strict_client(emulator_app: Any, emulator: Emulator) -> httpx.AsyncClient:
    emulator.behaviour.strict = True
    return asgi_client(emulator_app)


async def test_strict_mode_rejects_unknown_and_create_only_keys(strict_client: httpx.AsyncClient) -> None:
    async with strict_client as client:
        response = await client.post(
            SYNCS_PATH, json={"connection_id": DEFAULT_CONNECTION, "source_path": "p", "x": 1}
        )
        assert validation_locations(response) == [["body", "x"]]
        sync_id = (await create_sync(client))["sync_config_id"]
        response = await client.patch(sync_path(sync_id), json={"source_path": "q", "batch_size": 5, "y": 2})
        body = assert_error(response, 422, "ValidationError")
        items = {tuple(i["location"]): i for i in body["error"]["details"]["validation_errors"]}
        assert set(items) == {("body", "source_path"), ("body", "y")}
        assert "Create-only" in items[("body", "source_path")]["message"]
        assert items[("body", "y")]["type"] == "extra_forbidden"
        assert items[("body", "y")]["message"] == "Extra inputs are not permitted"
        response = await client.patch(sync_path(sync_id), json={"sync_run_counter": 3})
        assert "Server-managed" in assert_error(response, 422, "ValidationError")["error"]["message"]
        assert (await client.get(sync_path(sync_id))).json()["batch_size"] == 50  # nothing applied
        response = await client.post(f"{SYNCS_PATH}/list", json={"description": "x"})
        assert validation_locations(response) == [["body", "description"]]
        assert (
            await client.patch(sync_path(sync_id), json={"description": "ok", "batch_size": 5})
        ).status_code == 200


# --- pause / resume / trigger ------------------------------------------------------------------


async def test_pause_and_resume_flags_and_idempotence(
    emulator_client: httpx.AsyncClient, emulator: Emulator
) -> None:
    sync_id = (await create_sync(emulator_client, polling_interval_seconds=60))["sync_config_id"]
    emulator.clock.advance(10)
    paused = (await emulator_client.post(sync_path(sync_id, "pause"))).json()
    assert paused["paused"] is True
    assert paused["paused_at"] == "2026-01-01T00:00:10Z"
    assert paused["paused_by_user_id"] == "usr_emulator"
    assert (paused["is_active"], paused["status"], paused["next_sync_at"]) == (False, "SUSPENDED", None)
    emulator.clock.advance(10)
    again = await emulator_client.post(sync_path(sync_id, "pause"))
    assert again.status_code == 200
    assert again.json() == paused  # the first pause's time stays
    resumed = (await emulator_client.post(sync_path(sync_id, "resume"))).json()
    assert resumed["paused"] is False
    assert (resumed["paused_at"], resumed["paused_by_user_id"], resumed["pause_reason"]) == (None, None, None)
    assert (resumed["is_active"], resumed["status"]) == (True, "ACTIVE")
    assert resumed["next_sync_at"] == "2026-01-01T00:01:20Z"  # polling restarts one interval from now
    assert resumed["updated_at"] == "2026-01-01T00:00:20Z"
    resumed_again = await emulator_client.post(sync_path(sync_id, "resume"))
    assert resumed_again.status_code == 200
    assert resumed_again.json() == resumed


async def test_pause_can_leave_status_and_is_active_alone(
    emulator_client: httpx.AsyncClient, emulator: Emulator
) -> None:
    emulator.behaviour.pause_deactivates = False
    sync_id = (await create_sync(emulator_client))["sync_config_id"]
    paused = (await emulator_client.post(sync_path(sync_id, "pause"))).json()
    assert (paused["paused"], paused["is_active"], paused["status"]) == (True, True, "PENDING")
    resumed = (await emulator_client.post(sync_path(sync_id, "resume"))).json()
    assert (resumed["paused"], resumed["is_active"], resumed["status"]) == (False, True, "PENDING")


async def test_trigger_runs_now_and_returns_a_job(emulator_client: httpx.AsyncClient) -> None:
    sync_id = (await create_sync(emulator_client))["sync_config_id"]
    response = await emulator_client.post(sync_path(sync_id, "trigger"))
    assert response.status_code == 200
    job = response.json()
    assert set(job) == {"sync_job_id", "sync_config_id", "status"}
    assert str(uuid.UUID(job["sync_job_id"])) == job["sync_job_id"]
    assert (job["sync_config_id"], job["status"]) == (sync_id, "PENDING")
    synced = (await emulator_client.get(sync_path(sync_id))).json()
    assert synced["sync_run_counter"] == 1
    assert synced["current_sync_run_id"] == job["sync_job_id"]
    assert synced["status"] == "ACTIVE"
    assert synced["last_sync_at"] == START_ISO
    assert synced["total_files_synced"] == 12  # the synthetic listing
    second = (await emulator_client.post(sync_path(sync_id, "trigger"))).json()
    assert second["sync_job_id"] != job["sync_job_id"]
    assert (await emulator_client.get(sync_path(sync_id))).json()["sync_run_counter"] == 2


async def test_trigger_on_a_paused_sync_is_a_200_no_op_by_default(emulator_client: httpx.AsyncClient) -> None:
    sync_id = (await create_sync(emulator_client))["sync_config_id"]
    before = (await emulator_client.post(sync_path(sync_id, "pause"))).json()
    response = await emulator_client.post(sync_path(sync_id, "trigger"))
    assert response.status_code == 200
    assert response.json()["status"] == "SKIPPED"
    assert response.json()["sync_job_id"] is None
    assert (await emulator_client.get(sync_path(sync_id))).json() == before


async def test_trigger_on_a_paused_sync_can_be_409(
    emulator_client: httpx.AsyncClient, emulator: Emulator
) -> None:
    emulator.behaviour.trigger_when_paused = "conflict"
    sync_id = (await create_sync(emulator_client))["sync_config_id"]
    await emulator_client.post(sync_path(sync_id, "pause"))
    body = assert_error(await emulator_client.post(sync_path(sync_id, "trigger")), 409, "AlreadyExistsError")
    assert body["error"]["details"] == {"sync_config_id": sync_id, "reason": "paused"}


# --- auth and namespace scoping --------------------------------------------------------------

ENDPOINT_CALLS = [
    ("POST", SYNCS_PATH),
    ("POST", f"{SYNCS_PATH}/list"),
    ("GET", f"{SYNCS_PATH}/sync_x"),
    ("PATCH", f"{SYNCS_PATH}/sync_x"),
    ("DELETE", f"{SYNCS_PATH}/sync_x"),
    ("POST", f"{SYNCS_PATH}/sync_x/pause"),
    ("POST", f"{SYNCS_PATH}/sync_x/resume"),
    ("POST", f"{SYNCS_PATH}/sync_x/trigger"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINT_CALLS)
@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Token sk_test_emulator",
        "Basic c2s6",
        "sk_test_emulator",
        "Bearer sk_wrong",
    ],
)
async def test_every_endpoint_needs_a_valid_bearer_key(
    emulator_app: Any, method: str, path: str, authorization: str | None
) -> None:
    headers = {"X-Namespace": "default"} | (
        {"Authorization": authorization} if authorization is not None else {}
    )
    async with asgi_client(emulator_app, headers=headers) as client:
        response = await client.request(
            method, path, json={"connection_id": DEFAULT_CONNECTION, "source_path": "p"}
        )
    assert_error(response, 401, "UnauthorizedError")


async def test_bearer_scheme_is_case_insensitive(emulator_app: Any) -> None:
    headers = {"Authorization": "bearer sk_test_emulator", "X-Namespace": "default"}
    async with asgi_client(emulator_app, headers=headers) as client:
        assert (await client.post(f"{SYNCS_PATH}/list")).status_code == 200


async def test_authentication_precedes_body_parsing(emulator_app: Any) -> None:
    async with asgi_client(emulator_app, headers={}) as client:
        response = await client.post(
            SYNCS_PATH, content=b"{not json", headers={"Content-Type": "application/json"}
        )
    assert_error(response, 401, "UnauthorizedError")


@pytest.mark.parametrize("status", [400, 422])
async def test_missing_namespace_is_400_or_as_configured(
    emulator_app: Any, emulator: Emulator, status: int
) -> None:
    emulator.behaviour.missing_namespace_status = status  # type: ignore[assignment]
    async with asgi_client(emulator_app, headers={"Authorization": "Bearer sk_test_emulator"}) as client:
        response = await client.post(f"{SYNCS_PATH}/list")
    assert_error(response, status, {400: "BadRequestError", 422: "ValidationError"}[status])


MULTI_TENANT_SEED = Seed(
    api_keys=[
        ApiKeySeed(key="sk_alpha", user_id="usr_alpha", internal_id="org_1", namespaces=["alpha"]),
        ApiKeySeed(key="sk_both", user_id="usr_both", internal_id="org_1"),
    ],
    namespaces=[
        NamespaceSeed(
            id="ns_alpha",
            name="alpha",
            buckets=[BucketSeed(id="bkt_shared")],
            connections=[ConnectionSeed(id="conn_a", provider=StorageProvider.S3)],
        ),
        NamespaceSeed(
            id="ns_beta",
            name="beta",
            buckets=[BucketSeed(id="bkt_shared")],
            connections=[
                ConnectionSeed(id="conn_b", provider=StorageProvider.S3),
                ConnectionSeed(id="conn_pg", provider=StorageProvider.POSTGRESQL),
            ],
        ),
    ],
)
SHARED = "/v1/buckets/bkt_shared/syncs"


@pytest.fixture
def tenants_app() -> Any:
    return create_app(EmulatorConfig(seed=MULTI_TENANT_SEED, time_scale=0))


async def test_namespace_by_id_or_name_and_scoping(tenants_app: Any) -> None:
    async with asgi_client(tenants_app, headers=auth_headers("sk_both", "alpha")) as alpha:
        created = await create_sync(alpha, SHARED, connection_id="conn_a")
        assert created["namespace_id"] == "ns_alpha"
        assert created["created_by_user_id"] == "usr_both"
    async with asgi_client(tenants_app, headers=auth_headers("sk_both", "ns_alpha")) as by_id:
        assert (await by_id.get(f"{SHARED}/{created['sync_config_id']}")).status_code == 200
    async with asgi_client(tenants_app, headers=auth_headers("sk_both", "beta")) as beta:
        # Same bucket id, other namespace: the sync is invisible.
        assert_error(await beta.get(f"{SHARED}/{created['sync_config_id']}"), 404, "NotFoundError")
        assert_error(await beta.post(f"{SHARED}/{created['sync_config_id']}/pause"), 404, "NotFoundError")
        assert (await beta.post(f"{SHARED}/list")).json()["total"] == 0
        # A connection of another namespace does not exist here.
        response = await beta.post(SHARED, json={"connection_id": "conn_a", "source_path": "p"})
        assert assert_error(response, 404, "NotFoundError")["error"]["details"]["resource"] == "connection"
        response = await beta.post(SHARED, json={"connection_id": "conn_pg", "source_path": "p"})
        assert_error(response, 400, "BadRequestError")


@pytest.mark.parametrize(
    ("configured", "expected"), [(403, ("ForbiddenError", 403)), (404, ("NotFoundError", 404))]
)
async def test_namespace_the_key_cannot_use(
    tenants_app: Any, configured: int, expected: tuple[str, int]
) -> None:
    tenants_app.state.emulator.behaviour = Behaviour(forbidden_namespace_status=configured)
    async with asgi_client(tenants_app, headers=auth_headers("sk_alpha", "beta")) as client:
        response = await client.post(f"{SHARED}/list")
    assert_error(response, expected[1], expected[0])


async def test_unknown_namespace_is_404(tenants_app: Any) -> None:
    async with asgi_client(tenants_app, headers=auth_headers("sk_both", "gamma")) as client:
        body = assert_error(await client.post(f"{SHARED}/list"), 404, "NotFoundError")
    assert body["error"]["details"] == {"resource": "namespace", "id": "gamma"}


# --- everything else under /v1, and the OpenAPI document -----------------------------------


async def test_unknown_route_and_wrong_method_use_the_envelope(emulator_client: httpx.AsyncClient) -> None:
    assert_error(await emulator_client.get("/v1/collections"), 404, "NotFoundError")
    response = await emulator_client.put(f"{SYNCS_PATH}/sync_x")
    assert_error(response, 405, "MethodNotAllowedError")
    assert response.headers["allow"] == "DELETE, GET, PATCH"


async def test_openapi_documents_exactly_the_v2_surface(emulator_client: httpx.AsyncClient) -> None:
    document = (await emulator_client.get("/openapi.json")).json()
    operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    base = "/v1/buckets/{bucket_id}/syncs"
    assert operations == {
        ("POST", base),
        ("POST", f"{base}/list"),
        ("GET", f"{base}/{{sync_config_id}}"),
        ("PATCH", f"{base}/{{sync_config_id}}"),
        ("DELETE", f"{base}/{{sync_config_id}}"),
        ("POST", f"{base}/{{sync_config_id}}/pause"),
        ("POST", f"{base}/{{sync_config_id}}/resume"),
        ("POST", f"{base}/{{sync_config_id}}/trigger"),
    }
    create = document["paths"][base]["post"]
    assert {p["name"] for p in create["parameters"]} == {"bucket_id", "authorization", "X-Namespace"}
    assert create["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorResponse"
    )
    list_params = {p["name"]: p for p in document["paths"][f"{base}/list"]["post"]["parameters"]}
    assert list_params["limit"]["schema"]["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 1000}
    assert list_params["offset"]["schema"]["anyOf"][0] == {"type": "integer", "minimum": 0, "maximum": 10000}
    assert (
        list_params["include_total"]["schema"]["type"],
        list_params["include_total"]["schema"]["default"],
    ) == (
        "boolean",
        False,
    )


async def test_clock_is_frozen_for_tests(emulator: Emulator) -> None:
    assert emulator.clock.now() == FROZEN_START
    emulator.clock.advance(90)
    assert emulator.clock.now() == FROZEN_START + timedelta(seconds=90)
