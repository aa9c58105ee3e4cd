"""The bucket-sync wire contract, written once and run against every target (see conftest.py).

Raw httpx on purpose: this checks what goes over the wire, not what our client makes of it.
Where the reference marks a detail UNCONFIRMED, the assertion accepts every documented form.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:  # conftest is loaded by pytest, not imported at run time
    from .conftest import SyncFactory, Target

pytestmark = pytest.mark.contract


def error_type(response: httpx.Response) -> str:
    body: dict[str, Any] = response.json()
    return str(body["error"]["type"])


def test_create_returns_200_with_the_documented_defaults(target: Target, syncs: SyncFactory) -> None:
    sync = syncs.create()
    assert sync["sync_config_id"]
    assert (sync["bucket_id"], sync["connection_id"], sync["source_path"]) == (
        target.bucket_id,
        target.connection_id,
        target.source_path,
    )
    assert all(sync[key] for key in ("namespace_id", "internal_id", "created_by_user_id"))
    datetime.fromisoformat(sync["created_at"])
    datetime.fromisoformat(sync["updated_at"])
    documented_defaults = {
        "sync_mode": "continuous",
        "polling_interval_seconds": 300,
        "batch_size": 50,
        "skip_batch_submission": False,
        "create_object_on_confirm": True,
        "skip_duplicates": True,
        "is_active": True,
        "paused": False,
        "consecutive_failures": 0,
        "max_objects_per_run": 100000,
        "batch_chunk_size": 100,
        "max_batch_chunk_size": 1000,
        "resume_enabled": True,
        "resume_checkpoint_frequency": 1000,
        "file_filters": None,
        "schema_mapping": None,
    }
    assert {key: sync[key] for key in documented_defaults} == documented_defaults
    assert sync["metadata"] == syncs.marker


def test_get_returns_the_created_sync(api: httpx.Client, syncs: SyncFactory) -> None:
    created = syncs.create(batch_size=12, polling_interval_seconds=120, metadata={"purpose": "get"})
    response = api.get(syncs.path(created["sync_config_id"]))
    assert response.status_code == 200
    fetched = response.json()
    for key in ("sync_config_id", "bucket_id", "connection_id", "source_path", "created_at", "metadata"):
        assert fetched[key] == created[key], key
    assert (fetched["batch_size"], fetched["polling_interval_seconds"]) == (12, 120)


def test_list_is_newest_first_and_pages(target: Target, api: httpx.Client, syncs: SyncFactory) -> None:
    ours = [syncs.create()["sync_config_id"] for _ in range(3)]
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2, "include_total": True}
    for _ in range(100):  # a bound, in case a real bucket holds many syncs
        response = api.post(
            f"{target.syncs_path}/list", params=params, json={"connection_id": target.connection_id}
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert isinstance(page["total"], int)
        assert page["total"] >= 3
        assert len(page["results"]) <= 2
        assert all(s["connection_id"] == target.connection_id for s in page["results"])
        seen += [s["sync_config_id"] for s in page["results"]]
        cursor = (page.get("pagination") or {}).get("next_cursor")
        if cursor:
            params = {"limit": 2, "cursor": cursor}
        elif len(page["results"]) == 2:  # no cursor offered: page on by offset
            params = {"limit": 2, "offset": params.get("offset", 0) + 2}
        else:
            break
        if set(ours) <= set(seen):
            break
    assert [sync_id for sync_id in seen if sync_id in ours] == ours[::-1]


def test_patch_replaces_metadata_and_changes_only_what_is_sent(api: httpx.Client, syncs: SyncFactory) -> None:
    created = syncs.create(batch_size=10, metadata={"a": "1", "b": "2"})
    path = syncs.path(created["sync_config_id"])
    new_metadata = {**syncs.marker, "c": "3"}
    patched = api.patch(path, json={"metadata": new_metadata})
    assert patched.status_code == 200, patched.text
    assert patched.json()["metadata"] == new_metadata  # replaced, not merged
    assert patched.json()["batch_size"] == 10
    patched = api.patch(path, json={"batch_size": 20})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["batch_size"], patched.json()["metadata"]) == (20, new_metadata)
    assert api.get(path).json()["batch_size"] == 20


def test_pause_and_resume_flags(api: httpx.Client, syncs: SyncFactory) -> None:
    sync_id = syncs.create()["sync_config_id"]
    paused = api.post(syncs.path(sync_id, "pause"))
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused"] is True
    assert api.get(syncs.path(sync_id)).json()["paused"] is True
    resumed = api.post(syncs.path(sync_id, "resume"))
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["paused"] is False


def test_trigger_returns_a_sync_job_id(api: httpx.Client, syncs: SyncFactory) -> None:
    sync_id = syncs.create()["sync_config_id"]
    response = api.post(syncs.path(sync_id, "trigger"))
    assert response.status_code == 200, response.text
    job_id = response.json()["sync_job_id"]
    assert isinstance(job_id, str)
    assert job_id


def test_delete_then_404(api: httpx.Client, syncs: SyncFactory) -> None:
    sync_id = syncs.create()["sync_config_id"]
    assert api.delete(syncs.path(sync_id)).status_code == 200
    gone = api.get(syncs.path(sync_id))
    assert (gone.status_code, error_type(gone)) == (404, "NotFoundError")
    again = api.delete(syncs.path(sync_id))
    assert (again.status_code, error_type(again)) == (404, "NotFoundError")


@pytest.mark.parametrize("authorization", [None, "Bearer sk_not_a_real_key_0000"], ids=["missing", "unknown"])
def test_requests_without_a_valid_key_are_401(target: Target, authorization: str | None) -> None:
    headers = {"X-Namespace": target.namespace} | ({"Authorization": authorization} if authorization else {})
    with httpx.Client(base_url=target.base_url, headers=headers, timeout=30) as client:
        response = client.post(f"{target.syncs_path}/list")
    assert (response.status_code, error_type(response)) == (401, "UnauthorizedError")


def test_out_of_bounds_batch_size_is_422(target: Target, api: httpx.Client, syncs: SyncFactory) -> None:
    body = {"connection_id": target.connection_id, "source_path": target.source_path, "batch_size": 101}
    response = api.post(target.syncs_path, json=body)
    if response.status_code == 200:  # clean up before failing
        syncs.created.append(response.json()["sync_config_id"])
    assert response.status_code == 422, response.text
    payload = response.json()
    # The wire shape is UNCONFIRMED (reference §6.2): Mixpeek's envelope or FastAPI's default.
    if "detail" in payload:
        locations = [item["loc"] for item in payload["detail"]]
    else:
        assert payload["error"]["type"] == "ValidationError"
        locations = [item["location"] for item in payload["error"]["details"]["validation_errors"]]
    assert any("batch_size" in location for location in locations)
