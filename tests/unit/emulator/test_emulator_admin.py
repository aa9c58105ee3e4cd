"""The admin API: fault injection, out-of-band changes, request counts and log, reset, persistence, seeds."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from mixpeek_operator.emulator.app import create_app
from mixpeek_operator.emulator.config import Behaviour, EmulatorConfig
from mixpeek_operator.emulator.seed import DEFAULT_API_KEY, load_seed
from mixpeek_operator.emulator.state import Emulator
from mixpeek_operator.emulator.testing import (
    DEFAULT_CONNECTION,
    FROZEN_START,
    SYNCS_PATH,
    asgi_client,
    create_sync,
)

pytest_plugins = ["mixpeek_operator.emulator.pytest_plugin"]

ADMIN = "/_emulator"


async def set_faults(client: httpx.AsyncClient, *rules: dict[str, Any]) -> None:
    response = await client.put(f"{ADMIN}/faults", json=list(rules))
    assert response.status_code == 200, response.text


async def list_status(client: httpx.AsyncClient) -> int:
    return (await client.post(f"{SYNCS_PATH}/list")).status_code


# --- fault injection ---------------------------------------------------------------------------


async def test_latency_is_added_to_matching_requests(emulator_client: httpx.AsyncClient) -> None:
    await set_faults(emulator_client, {"latency_ms": 150})
    started = time.perf_counter()
    assert await list_status(emulator_client) == 200
    assert time.perf_counter() - started >= 0.15


@pytest.mark.parametrize(
    ("status", "error_type"), [(500, "InternalServerError"), (503, "InferenceServiceUnavailableError")]
)
async def test_server_errors_at_rate_one(
    emulator_client: httpx.AsyncClient, status: int, error_type: str
) -> None:
    await set_faults(emulator_client, {"error_rate": 1.0, "error_status": status})
    response = await emulator_client.post(f"{SYNCS_PATH}/list")
    assert response.status_code == status
    assert response.json()["error"]["type"] == error_type
    await emulator_client.delete(f"{ADMIN}/faults")
    assert await list_status(emulator_client) == 200


async def test_error_rate_is_a_seeded_probability() -> None:
    statuses = []
    for _ in range(2):
        app = create_app(EmulatorConfig(time_scale=0, random_seed=7))
        async with asgi_client(app) as client:
            await set_faults(client, {"error_rate": 0.5, "error_status": 502})
            statuses.append([await list_status(client) for _ in range(40)])
    assert statuses[0] == statuses[1]  # same seed, same dice
    assert 5 < statuses[0].count(502) < 35
    assert set(statuses[0]) == {200, 502}


async def test_rate_limit_rate_answers_a_seeded_share_with_retry_after() -> None:
    app = create_app(EmulatorConfig(time_scale=0, random_seed=7))
    async with asgi_client(app) as client:
        await set_faults(client, {"rate_limit_rate": 0.5, "retry_after_seconds": 1.5})
        responses = [await client.post(f"{SYNCS_PATH}/list") for _ in range(40)]
        log = (await client.get(f"{ADMIN}/requests")).json()["requests"]
    limited = [r for r in responses if r.status_code == 429]
    assert 5 < len(limited) < 35
    assert {r.headers["retry-after"] for r in limited} == {"1.5"}
    # The log says which answers carried a Retry-After, and when each request arrived.
    assert [e["retry_after"] for e in log] == [r.headers.get("retry-after") for r in responses]
    assert all(e["started_at"] <= e["at"] for e in log)


@pytest.mark.parametrize(("status", "error_type"), [(400, "BadRequestError"), (422, "ValidationError")])
async def test_injected_client_errors_carry_the_given_message(
    emulator_client: httpx.AsyncClient, status: int, error_type: str
) -> None:
    message = "source_path does not exist in the provider"
    rule = {"endpoint": "create", "error_count": 1, "error_status": status, "error_message": message}
    await set_faults(emulator_client, rule)
    response = await emulator_client.post(
        SYNCS_PATH, json={"connection_id": "conn_s3_demo", "source_path": "p"}
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == error_type
    assert message in error["message"]
    if status == 422:
        expected = [{"type": "value_error", "location": ["body"], "message": message}]
        assert error["details"]["validation_errors"] == expected
    assert (await emulator_client.get(f"{ADMIN}/syncs")).json()["total"] == 0  # refused before handling


async def test_response_delay_handles_at_once_and_answers_late(
    emulator_client: httpx.AsyncClient, emulator: Emulator
) -> None:
    await set_faults(emulator_client, {"endpoint": "create", "response_delay_seconds": 0.5})
    started = time.perf_counter()
    pending = asyncio.create_task(create_sync(emulator_client))
    await asyncio.sleep(0.2)
    assert not pending.done()
    assert len(emulator.all_syncs()) == 1  # created although the client has no answer yet
    assert emulator.stats.counts()["endpoint_status"]["create"] == {"200": 1}  # and counted
    created = await pending
    assert time.perf_counter() - started >= 0.5
    assert [r.sync_id for r in emulator.all_syncs()] == [created["sync_config_id"]]


async def test_error_count_fails_the_next_n_requests(emulator_client: httpx.AsyncClient) -> None:
    await set_faults(emulator_client, {"error_count": 2})
    assert [await list_status(emulator_client) for _ in range(3)] == [500, 500, 200]


async def test_rate_limit_with_retry_after_seconds(emulator_client: httpx.AsyncClient) -> None:
    await set_faults(emulator_client, {"rate_limit_count": 2, "retry_after_seconds": 7})
    for _ in range(2):
        response = await emulator_client.post(f"{SYNCS_PATH}/list")
        assert response.status_code == 429
        assert response.headers["retry-after"] == "7"
        body = response.json()
        assert body["error"]["type"] == "TooManyRequestsError"
        assert body["error"]["details"]["retry_after"] == 7
    assert await list_status(emulator_client) == 200


async def test_rate_limit_with_retry_after_http_date(emulator_client: httpx.AsyncClient) -> None:
    await set_faults(
        emulator_client, {"rate_limit_count": 1, "retry_after_seconds": 30, "retry_after_http_date": True}
    )
    response = await emulator_client.post(f"{SYNCS_PATH}/list")
    assert response.status_code == 429
    retry_at = parsedate_to_datetime(response.headers["retry-after"])
    assert abs((retry_at - datetime.now(UTC)).total_seconds() - 30) < 3


async def test_hang_delays_the_next_n_requests_then_answers(emulator_client: httpx.AsyncClient) -> None:
    await set_faults(emulator_client, {"hang_count": 1, "hang_seconds": 0.3})
    started = time.perf_counter()
    assert await list_status(emulator_client) == 200
    assert time.perf_counter() - started >= 0.3
    started = time.perf_counter()
    assert await list_status(emulator_client) == 200
    assert time.perf_counter() - started < 0.3


async def test_faults_can_be_scoped_to_an_endpoint_and_method(emulator_client: httpx.AsyncClient) -> None:
    sync_id = (await create_sync(emulator_client))["sync_config_id"]
    await set_faults(
        emulator_client, {"endpoint": "trigger", "error_count": 5}, {"method": "get", "error_count": 5}
    )
    assert await list_status(emulator_client) == 200
    assert (await emulator_client.post(f"{SYNCS_PATH}/{sync_id}/trigger")).status_code == 500
    assert (await emulator_client.get(f"{SYNCS_PATH}/{sync_id}")).status_code == 500
    assert (await emulator_client.post(f"{SYNCS_PATH}/{sync_id}/pause")).status_code == 200
    rules = (await emulator_client.get(f"{ADMIN}/faults")).json()["rules"]
    assert [(r["endpoint"], r["method"], r["error_count"]) for r in rules] == [
        ("trigger", None, 4),
        (None, "GET", 4),
    ]


async def test_the_first_erroring_rule_answers_and_later_counts_are_kept(
    emulator_client: httpx.AsyncClient,
) -> None:
    await set_faults(emulator_client, {"rate_limit_count": 1}, {"error_count": 1})
    assert [await list_status(emulator_client) for _ in range(3)] == [429, 500, 200]


async def test_faults_never_touch_the_admin_api(emulator_client: httpx.AsyncClient) -> None:
    await set_faults(emulator_client, {"error_rate": 1.0})
    assert (await emulator_client.get(f"{ADMIN}/health")).json() == {"status": "ok"}
    added = await emulator_client.post(f"{ADMIN}/faults", json={"latency_ms": 1})
    assert len(added.json()["rules"]) == 2


@pytest.mark.parametrize(
    "rule",
    [
        {"error_status": 399},
        {"error_status": 600},
        {"response_delay_seconds": -1},
        {"error_rate": 1.5},
        {"endpoint": "explode"},
        {"surprise": 1},
        {"hang_count": -1},
    ],
)
async def test_invalid_fault_rules_are_422(emulator_client: httpx.AsyncClient, rule: dict[str, Any]) -> None:
    assert (await emulator_client.post(f"{ADMIN}/faults", json=rule)).status_code == 422
    assert (await emulator_client.get(f"{ADMIN}/faults")).json() == {"rules": []}


# --- out-of-band changes -----------------------------------------------------------------------


async def public(client: httpx.AsyncClient, sync_id: str) -> httpx.Response:
    return await client.get(f"{SYNCS_PATH}/{sync_id}")


async def test_admin_pause_resume_are_visible_through_the_api(emulator_client: httpx.AsyncClient) -> None:
    sync_id = (await create_sync(emulator_client))["sync_config_id"]
    await emulator_client.post(f"{ADMIN}/syncs/{sync_id}/pause", json={"reason": "maintenance"})
    paused = (await public(emulator_client, sync_id)).json()
    assert (paused["paused"], paused["pause_reason"], paused["paused_by_user_id"]) == (
        True,
        "maintenance",
        "emulator-admin",
    )
    assert (paused["status"], paused["is_active"]) == ("SUSPENDED", False)
    await emulator_client.post(f"{ADMIN}/syncs/{sync_id}/resume")
    resumed = (await public(emulator_client, sync_id)).json()
    assert (resumed["paused"], resumed["status"], resumed["is_active"]) == (False, "ACTIVE", True)


async def test_admin_patch_sets_any_field(emulator_client: httpx.AsyncClient, emulator: Emulator) -> None:
    sync_id = (await create_sync(emulator_client))["sync_config_id"]
    emulator.clock.advance(2)
    fields = {
        "status": "FAILED",
        "last_error": "disk on fire",
        "total_files_synced": 42,
        "source_path": "moved",
    }
    patched = (await emulator_client.patch(f"{ADMIN}/syncs/{sync_id}", json=fields)).json()
    seen = (await public(emulator_client, sync_id)).json()
    assert seen == patched
    assert {k: seen[k] for k in fields} == fields
    assert seen["updated_at"] == "2026-01-01T00:00:02Z"


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"not_a_field": 1}, 422),
        ({"total_files_synced": "many"}, 422),
        ({"status": "PAUSED"}, 422),
        ({"bucket_id": "bkt_media"}, 400),
        ({"namespace_id": "ns_x"}, 400),
        ({"sync_config_id": "sync_x"}, 400),
    ],
)
async def test_admin_patch_refuses_unknown_invalid_and_identity_fields(
    emulator_client: httpx.AsyncClient, fields: dict[str, Any], status: int
) -> None:
    created = await create_sync(emulator_client)
    response = await emulator_client.patch(f"{ADMIN}/syncs/{created['sync_config_id']}", json=fields)
    assert response.status_code == status
    assert (await public(emulator_client, created["sync_config_id"])).json() == created


async def test_admin_delete_makes_the_sync_disappear(emulator_client: httpx.AsyncClient) -> None:
    sync_id = (await create_sync(emulator_client))["sync_config_id"]
    assert (await emulator_client.delete(f"{ADMIN}/syncs/{sync_id}")).status_code == 200
    assert (await public(emulator_client, sync_id)).status_code == 404
    assert (await emulator_client.get(f"{ADMIN}/syncs/{sync_id}")).status_code == 404


async def test_admin_fail_now_and_auto_suspend(
    emulator_client: httpx.AsyncClient, emulator: Emulator
) -> None:
    sync_id = (await create_sync(emulator_client))["sync_config_id"]
    failed = (
        await emulator_client.post(f"{ADMIN}/syncs/{sync_id}/fail", json={"message": "boom", "count": 2})
    ).json()
    assert (failed["status"], failed["last_error"], failed["consecutive_failures"]) == ("FAILED", "boom", 2)
    assert (failed["is_active"], failed["next_sync_at"]) == (True, "2026-01-01T00:00:05Z")
    await emulator_client.patch(f"{ADMIN}/behaviour", json={"auto_suspend_after": 3})
    suspended = (
        await emulator_client.post(f"{ADMIN}/syncs/{sync_id}/fail", json={"message": "again"})
    ).json()
    assert (suspended["status"], suspended["is_active"], suspended["next_sync_at"]) == (
        "SUSPENDED",
        False,
        None,
    )
    assert suspended["consecutive_failures"] == 3
    assert (await public(emulator_client, sync_id)).json() == suspended


async def test_last_error_is_capped_at_1000_characters(emulator_client: httpx.AsyncClient) -> None:
    sync_id = (await create_sync(emulator_client))["sync_config_id"]
    failed = (
        await emulator_client.post(f"{ADMIN}/syncs/{sync_id}/fail", json={"message": "e" * 1500})
    ).json()
    assert failed["last_error"] == "e" * 1000


async def test_admin_fail_next_runs(emulator_client: httpx.AsyncClient) -> None:
    sync_id = (await create_sync(emulator_client))["sync_config_id"]
    armed = await emulator_client.post(
        f"{ADMIN}/syncs/{sync_id}/fail", json={"message": "provider 503", "count": 1, "when": "next_runs"}
    )
    assert armed.json()["status"] == "PENDING"  # nothing happens until a run
    await emulator_client.post(f"{SYNCS_PATH}/{sync_id}/trigger")
    failed = (await public(emulator_client, sync_id)).json()
    assert (failed["status"], failed["last_error"], failed["sync_run_counter"]) == (
        "FAILED",
        "provider 503",
        1,
    )
    assert failed["total_files_synced"] == 0
    await emulator_client.post(f"{SYNCS_PATH}/{sync_id}/trigger")
    healthy = (await public(emulator_client, sync_id)).json()
    assert (healthy["status"], healthy["consecutive_failures"], healthy["total_files_synced"]) == (
        "ACTIVE",
        0,
        12,
    )


async def test_admin_bumps_counters(emulator_client: httpx.AsyncClient) -> None:
    sync_id = (await create_sync(emulator_client))["sync_config_id"]
    bumped = (
        await emulator_client.post(
            f"{ADMIN}/syncs/{sync_id}/counters", json={"total_files_failed": 3, "sync_run_counter": 2}
        )
    ).json()
    assert (bumped["total_files_failed"], bumped["sync_run_counter"], bumped["total_files_synced"]) == (
        3,
        2,
        0,
    )
    refused = await emulator_client.post(f"{ADMIN}/syncs/{sync_id}/counters", json={"total_files_failed": -1})
    assert refused.status_code == 422


async def test_admin_lists_every_sync_across_namespaces_and_buckets(
    emulator_client: httpx.AsyncClient,
) -> None:
    first = (await create_sync(emulator_client))["sync_config_id"]
    second = (await create_sync(emulator_client, path="/v1/buckets/bkt_media/syncs"))["sync_config_id"]
    everything = (await emulator_client.get(f"{ADMIN}/syncs")).json()
    assert ([s["sync_config_id"] for s in everything["results"]], everything["total"]) == ([second, first], 2)
    media = (await emulator_client.get(f"{ADMIN}/syncs", params={"bucket_id": "bkt_media"})).json()
    assert [s["sync_config_id"] for s in media["results"]] == [second]


# --- request counts and log ----------------------------------------------------------------------


async def test_request_counts_per_endpoint_method_and_status(emulator_client: httpx.AsyncClient) -> None:
    sync_id = (await create_sync(emulator_client))["sync_config_id"]
    await create_sync(emulator_client)
    await emulator_client.post(SYNCS_PATH, json={})  # 422
    await emulator_client.post(f"{SYNCS_PATH}/list")
    await emulator_client.get(f"{SYNCS_PATH}/{sync_id}")
    await emulator_client.patch(f"{SYNCS_PATH}/{sync_id}", json={"batch_size": 3})
    for action in ("pause", "resume", "trigger"):
        await emulator_client.post(f"{SYNCS_PATH}/{sync_id}/{action}")
    await emulator_client.delete(f"{SYNCS_PATH}/{sync_id}")
    await emulator_client.get(f"{SYNCS_PATH}/{sync_id}")  # 404
    await emulator_client.get("/v1/elsewhere")  # no such endpoint
    await emulator_client.get(f"{ADMIN}/health")  # never counted
    counts = (await emulator_client.get(f"{ADMIN}/requests/counts")).json()
    assert counts["endpoints"] == {
        "create": 3,
        "list": 1,
        "get": 2,
        "update": 1,
        "delete": 1,
        "pause": 1,
        "resume": 1,
        "trigger": 1,
        "other": 1,
    }
    assert counts["total"] == 12
    assert counts["endpoint_status"]["create"] == {"200": 2, "422": 1}
    assert counts["endpoint_status"]["get"] == {"200": 1, "404": 1}
    assert counts["methods"] == {"POST": 7, "GET": 3, "PATCH": 1, "DELETE": 1}
    assert counts["statuses"] == {"200": 9, "422": 1, "404": 2}


async def test_injected_faults_are_counted_and_logged(emulator_client: httpx.AsyncClient) -> None:
    await set_faults(emulator_client, {"rate_limit_count": 1})
    await list_status(emulator_client)
    counts = (await emulator_client.get(f"{ADMIN}/requests/counts")).json()
    assert counts["endpoint_status"]["list"] == {"429": 1}
    (entry,) = (await emulator_client.get(f"{ADMIN}/requests")).json()["requests"]
    assert (entry["endpoint"], entry["status"], entry["faults"]) == ("list", 429, ["rate_limit"])


async def test_request_log_has_no_headers_but_the_user_agent_and_no_keys(
    emulator_client: httpx.AsyncClient,
) -> None:
    await emulator_client.post(f"{SYNCS_PATH}/list", params={"limit": 5})
    await create_sync(emulator_client)
    log = (await emulator_client.get(f"{ADMIN}/requests")).json()["requests"]
    assert [(e["method"], e["path"], e["query"], e["status"]) for e in log] == [
        ("POST", f"{SYNCS_PATH}/list", "limit=5", 200),
        ("POST", SYNCS_PATH, "", 200),
    ]
    assert set(log[0]) == {
        "at", "started_at", "method", "path", "query", "endpoint", "status", "duration_ms", "faults",
        "retry_after", "user_agent", "sync_id",
    }  # fmt: skip
    text = json.dumps(log).lower()
    assert DEFAULT_API_KEY not in text
    assert "authorization" not in text
    assert (await emulator_client.get(f"{ADMIN}/requests", params={"limit": 1})).json()["requests"] == log[
        -1:
    ]
    await emulator_client.delete(f"{ADMIN}/requests")
    assert (await emulator_client.get(f"{ADMIN}/requests")).json()["requests"] == []
    assert (await emulator_client.get(f"{ADMIN}/requests/counts")).json()["total"] == 0


async def test_request_log_names_the_client_and_the_sync_each_request_acted_on(
    emulator_client: httpx.AsyncClient,
) -> None:
    """Who wrote which sync, for the sharding chaos test and bench: the User-Agent names the
    replica; a create logs the id it created, one sync's endpoints the path's, the rest none."""
    emulator_client.headers["User-Agent"] = "mixpeek-operator/1.2.3 (shard-1)"
    sync_id = (await create_sync(emulator_client))["sync_config_id"]
    one = f"{SYNCS_PATH}/{sync_id}"
    await emulator_client.get(one)
    await emulator_client.patch(one, json={"batch_size": 10})
    for action in ("pause", "resume", "trigger"):
        await emulator_client.post(f"{one}/{action}")
    await emulator_client.post(f"{SYNCS_PATH}/list")
    await emulator_client.post(SYNCS_PATH, json={"connection_id": "conn_missing", "source_path": "x/y"})
    await emulator_client.get(f"{SYNCS_PATH}/sync_missing")
    await emulator_client.delete(one)
    await emulator_client.get("/v1/elsewhere")
    log = (await emulator_client.get(f"{ADMIN}/requests")).json()["requests"]
    assert [(e["endpoint"], e["status"], e["sync_id"]) for e in log] == [
        ("create", 200, sync_id),
        ("get", 200, sync_id),
        ("update", 200, sync_id),
        ("pause", 200, sync_id),
        ("resume", 200, sync_id),
        ("trigger", 200, sync_id),
        ("list", 200, None),
        ("create", 404, None),  # nothing created
        ("get", 404, "sync_missing"),  # the one it asked for
        ("delete", 200, sync_id),
        ("other", 404, None),
    ]
    assert {e["user_agent"] for e in log} == {"mixpeek-operator/1.2.3 (shard-1)"}


async def test_a_create_failed_by_an_injected_fault_logs_no_sync(emulator_client: httpx.AsyncClient) -> None:
    await set_faults(emulator_client, {"endpoint": "create", "error_count": 1})
    response = await emulator_client.post(
        SYNCS_PATH, json={"connection_id": DEFAULT_CONNECTION, "source_path": "demo-bucket/videos"}
    )
    assert response.status_code == 500
    (entry,) = (await emulator_client.get(f"{ADMIN}/requests")).json()["requests"]
    assert (entry["endpoint"], entry["sync_id"], entry["faults"]) == ("create", None, ["error"])


# --- behaviour, reset ----------------------------------------------------------------------------


async def test_behaviour_can_be_read_and_changed_live(emulator_client: httpx.AsyncClient) -> None:
    assert (await emulator_client.get(f"{ADMIN}/behaviour")).json() == Behaviour().model_dump()
    changed = (
        await emulator_client.patch(f"{ADMIN}/behaviour", json={"trigger_when_paused": "conflict"})
    ).json()
    assert changed["trigger_when_paused"] == "conflict"
    for bad in ({"trigger_when_paused": "maybe"}, {"unknown": 1}, {"default_list_limit": 0}):
        assert (await emulator_client.patch(f"{ADMIN}/behaviour", json=bad)).status_code == 422
    assert (await emulator_client.get(f"{ADMIN}/behaviour")).json() == changed


async def test_reset_restores_the_seed_state(emulator_client: httpx.AsyncClient) -> None:
    await create_sync(emulator_client)
    await set_faults(emulator_client, {"latency_ms": 1})
    await emulator_client.patch(f"{ADMIN}/behaviour", json={"strict": True})
    assert (await emulator_client.post(f"{ADMIN}/reset")).json() == {"status": "reset"}
    assert (await emulator_client.get(f"{ADMIN}/faults")).json() == {"rules": []}
    assert (await emulator_client.get(f"{ADMIN}/behaviour")).json()["strict"] is False
    assert (await emulator_client.get(f"{ADMIN}/requests/counts")).json()["total"] == 0
    assert (await emulator_client.post(f"{SYNCS_PATH}/list")).json()["total"] == 0
    assert (await emulator_client.get(f"{ADMIN}/syncs")).json()["total"] == 0


# --- persistence ---------------------------------------------------------------------------------


def persistent_app(state_file: Path, start: datetime = FROZEN_START) -> FastAPI:
    return create_app(EmulatorConfig(time_scale=0, start_time=start, state_file=state_file))


async def test_state_file_survives_a_restart(tmp_path: Path) -> None:
    state_file = tmp_path / "state" / "emulator.json"
    async with asgi_client(persistent_app(state_file)) as client:
        first = await create_sync(client, metadata={"k": "v"})
        second = await create_sync(client)
        deleted = await create_sync(client)
        await client.delete(f"{SYNCS_PATH}/{deleted['sync_config_id']}")
        await client.post(f"{SYNCS_PATH}/{first['sync_config_id']}/pause")
        await client.post(f"{SYNCS_PATH}/{second['sync_config_id']}/trigger")
        await client.post(
            f"{ADMIN}/syncs/{second['sync_config_id']}/fail", json={"message": "x", "when": "next_runs"}
        )
        before = (await client.post(f"{SYNCS_PATH}/list")).json()
    assert json.loads(state_file.read_text())["version"] == 1
    # No temp file left behind; the changes since the last fold are in the journal.
    assert sorted(p.name for p in state_file.parent.iterdir()) == ["emulator.json", "emulator.json.journal"]

    restarted = persistent_app(state_file, start=FROZEN_START - timedelta(days=1))
    async with asgi_client(restarted) as client:
        assert (await client.post(f"{SYNCS_PATH}/list")).json() == before
        third = await create_sync(client)
        assert third["created_at"] >= second["created_at"]  # the clock did not go back
        listed = [s["sync_config_id"] for s in (await client.post(f"{SYNCS_PATH}/list")).json()["results"]]
        assert listed == [third["sync_config_id"], second["sync_config_id"], first["sync_config_id"]]
        # Bookkeeping survives too: the armed failure fires on the next run.
        await client.post(f"{SYNCS_PATH}/{second['sync_config_id']}/trigger")
        assert (await client.get(f"{SYNCS_PATH}/{second['sync_config_id']}")).json()["last_error"] == "x"


async def test_state_file_keeps_the_schedule(tmp_path: Path) -> None:
    state_file = tmp_path / "emulator.json"
    async with asgi_client(persistent_app(state_file)) as client:
        sync_id = (await create_sync(client, polling_interval_seconds=30))["sync_config_id"]
    restarted = persistent_app(state_file)
    restarted.state.emulator.advance(5)
    async with asgi_client(restarted) as client:
        assert (await client.get(f"{SYNCS_PATH}/{sync_id}")).json()["sync_run_counter"] == 1


# --- seeds ---------------------------------------------------------------------------------------


def test_seed_files_in_yaml_resolve_relative_roots(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    seed_file = tmp_path / "seed.yaml"
    seed_file.write_text(
        """
api_keys:
  - {key: sk_a, user_id: usr_a, internal_id: org_a, namespaces: [prod]}
namespaces:
  - id: ns_prod
    name: prod
    buckets: [{id: bkt_a}]
    connections:
      - {id: conn_local, provider: s3, root: data}
      - {id: conn_drive, provider: google_drive}
"""
    )
    seed = load_seed(seed_file)
    connections = seed.namespaces[0].connections
    assert connections[0].root == (tmp_path / "data").resolve()
    assert connections[1].root is None


def test_seed_files_in_json(tmp_path: Path) -> None:
    seed_file = tmp_path / "seed.json"
    seed_file.write_text(
        json.dumps(
            {
                "api_keys": [{"key": "k", "user_id": "u", "internal_id": "o"}],
                "namespaces": [{"id": "ns_1", "name": "one", "buckets": [{"id": "b"}]}],
            }
        )
    )
    assert load_seed(seed_file).namespaces[0].buckets[0].id == "b"


@pytest.mark.parametrize(
    ("api_keys", "namespaces", "message"),
    [
        ([], [{"id": "n", "name": "n"}], "at least 1"),
        (
            [{"key": "k", "user_id": "u", "internal_id": "o", "namespaces": ["nope"]}],
            [{"id": "n", "name": "n"}],
            "unknown",
        ),
        (
            [{"key": "k", "user_id": "u", "internal_id": "o"}] * 2,
            [{"id": "n", "name": "n"}],
            "duplicate api key",
        ),
        (
            [{"key": "k", "user_id": "u", "internal_id": "o"}],
            [{"id": "n", "name": "a"}, {"id": "n", "name": "b"}],
            "namespace id",
        ),
        (
            [{"key": "k", "user_id": "u", "internal_id": "o"}],
            [{"id": "n", "name": "n", "buckets": [{"id": "b"}, {"id": "b"}]}],
            "bucket id",
        ),
        (
            [{"key": "k", "user_id": "u", "internal_id": "o"}],
            [{"id": "n", "name": "n", "connections": [{"id": "c", "provider": "dropbox"}]}],
            "provider",
        ),
    ],
)
def test_inconsistent_seeds_are_refused(
    tmp_path: Path, api_keys: list[Any], namespaces: list[Any], message: str
) -> None:
    seed_file = tmp_path / "seed.json"
    seed_file.write_text(json.dumps({"api_keys": api_keys, "namespaces": namespaces}))
    with pytest.raises(ValueError, match=message):
        load_seed(seed_file)
