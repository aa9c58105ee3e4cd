"""Simulated sync runs: schedule, clock, real folder walks with file_filters, incremental runs, failures."""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from mixpeek_operator.emulator.clock import EmulatorClock
from mixpeek_operator.emulator.config import EmulatorConfig
from mixpeek_operator.emulator.seed import (
    DEFAULT_SEED,
    BucketSeed,
    ConnectionSeed,
    NamespaceSeed,
    Seed,
    StorageProvider,
)
from mixpeek_operator.emulator.sources import SYNTHETIC_FILES
from mixpeek_operator.emulator.state import Emulator
from mixpeek_operator.emulator.testing import FROZEN_START, SYNCS_PATH, create_sync

pytest_plugins = ["mixpeek_operator.emulator.pytest_plugin"]

T0 = datetime(2025, 6, 1, tzinfo=UTC)
# The provider folder under the local connection's root: path -> (size in bytes, mtime in days after T0).
MEDIA_FILES: dict[str, tuple[int, int]] = {
    "clip1.mp4": (1000, 0),
    "clip2.mp4": (3000, 1),
    "drafts/cut.mp4": (500, 2),
    "photo.jpg": (2000, 3),
    "notes.txt": (10, 4),
    "data.bin": (4096, 5),
    "sub/deep/movie.mov": (7000, 6),
}
MEDIA_BYTES = sum(size for size, _ in MEDIA_FILES.values())


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def iso(seconds_after_start: float) -> str:
    return (FROZEN_START + timedelta(seconds=seconds_after_start)).isoformat().replace("+00:00", "Z")


def write_file(path: Path, size: int, mtime: datetime) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (mtime.timestamp(), mtime.timestamp()))


@pytest.fixture
def provider_root(tmp_path: Path) -> Path:
    root = tmp_path / "provider"
    for rel, (size, days) in MEDIA_FILES.items():
        write_file(root / "media" / rel, size, day(days))
    write_file(root / "other" / "outside.mp4", 123, day(0))  # outside the source path
    return root


@pytest.fixture
def emulator_config(provider_root: Path) -> EmulatorConfig:
    namespace = DEFAULT_SEED.namespaces[0]
    local = ConnectionSeed(id="conn_local", provider=StorageProvider.S3, root=provider_root)
    seed = Seed(
        api_keys=DEFAULT_SEED.api_keys,
        namespaces=[
            NamespaceSeed(
                id=namespace.id,
                name=namespace.name,
                buckets=[BucketSeed(id="bkt_demo")],
                connections=[*namespace.connections, local],
            )
        ],
    )
    return EmulatorConfig(seed=seed, time_scale=0, start_time=FROZEN_START)


async def get(client: httpx.AsyncClient, sync_id: str) -> dict[str, Any]:
    response = await client.get(f"{SYNCS_PATH}/{sync_id}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def trigger(client: httpx.AsyncClient, sync_id: str) -> dict[str, Any]:
    response = await client.post(f"{SYNCS_PATH}/{sync_id}/trigger")
    assert response.status_code == 200, response.text
    return await get(client, sync_id)


async def local_sync(client: httpx.AsyncClient, **fields: Any) -> str:
    fields = {"connection_id": "conn_local", "source_path": "/media", **fields}
    return str((await create_sync(client, **fields))["sync_config_id"])


def counts(sync: dict[str, Any]) -> tuple[int, int, int]:
    return sync["total_files_discovered"], sync["total_files_synced"], sync["total_bytes_synced"]


# --- synthetic listing (connections without a root) -------------------------------------------


async def test_synthetic_listing_gives_the_documented_counts(emulator_client: httpx.AsyncClient) -> None:
    assert len(SYNTHETIC_FILES) == 12
    assert sum(f.size for f in SYNTHETIC_FILES) == 19_886_080
    sync_id = (await create_sync(emulator_client))["sync_config_id"]
    synced = await trigger(emulator_client, sync_id)
    assert counts(synced) == (12, 12, 19_886_080)
    assert synced["batches_created"] == 1  # ceil(12 / 50)
    assert len(synced["batch_ids"]) == len(synced["task_ids"]) == 1
    assert synced["resume_objects_processed"] == 12


@pytest.mark.parametrize(
    ("filters", "expected_files", "expected_bytes"),
    [
        ({"include_patterns": ["*.mp4"]}, 2, 4_194_304 + 2_097_152),
        ({"exclude_patterns": ["*/drafts/*"]}, 11, 19_886_080 - 2_097_152),
        ({"mime_types": ["image/*"]}, 3, 524_288 + 65_536 + 1_048_576),
    ],
)
async def test_synthetic_listing_honours_file_filters(
    emulator_client: httpx.AsyncClient, filters: dict[str, Any], expected_files: int, expected_bytes: int
) -> None:
    sync_id = (await create_sync(emulator_client, file_filters=filters))["sync_config_id"]
    synced = await trigger(emulator_client, sync_id)
    assert counts(synced) == (expected_files, expected_files, expected_bytes)


# --- a real folder ------------------------------------------------------------------------------

ALL = set(MEDIA_FILES)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        pytest.param(None, ALL, id="no-filters"),
        pytest.param({"include_patterns": ["*.mp4"]}, {"clip1.mp4", "clip2.mp4", "drafts/cut.mp4"}, id="ext"),
        pytest.param({"include_patterns": ["sub/*"]}, {"sub/deep/movie.mov"}, id="include-by-path"),
        pytest.param({"include_patterns": ["clip?.mp4"]}, {"clip1.mp4", "clip2.mp4"}, id="include-by-name"),
        pytest.param({"include_patterns": ["*.jpg", "*.txt"]}, {"photo.jpg", "notes.txt"}, id="include-any"),
        pytest.param({"include_patterns": []}, ALL, id="empty-include-list"),
        pytest.param({"include_patterns": ["*.MP4"]}, set(), id="case-sensitive"),
        pytest.param({"exclude_patterns": ["drafts/*"]}, ALL - {"drafts/cut.mp4"}, id="exclude-folder"),
        # Patterns see the path relative to the walked folder, so `*/drafts/*` needs a parent folder.
        pytest.param({"exclude_patterns": ["*/drafts/*"]}, ALL, id="exclude-needs-parent"),
        pytest.param(
            {"exclude_patterns": ["*.bin", "notes.*"]}, ALL - {"data.bin", "notes.txt"}, id="exclude-name"
        ),
        pytest.param(
            {"include_patterns": ["*.mp4"], "exclude_patterns": ["cut.mp4"]},
            {"clip1.mp4", "clip2.mp4"},
            id="include-then-exclude",
        ),
        pytest.param(
            {"min_size_bytes": 1000, "max_size_bytes": 3000},
            {"clip1.mp4", "clip2.mp4", "photo.jpg"},
            id="sizes",
        ),
        pytest.param({"min_size_bytes": 4096}, {"data.bin", "sub/deep/movie.mov"}, id="min-size-inclusive"),
        pytest.param({"max_size_bytes": 10}, {"notes.txt"}, id="max-size-inclusive"),
        pytest.param(
            {"modified_after": day(1).isoformat()},
            ALL - {"clip1.mp4", "clip2.mp4"},
            id="modified-after-is-strict",
        ),
        pytest.param({"modified_before": day(1).isoformat()}, {"clip1.mp4"}, id="modified-before-is-strict"),
        pytest.param(
            {"modified_after": day(0).isoformat(), "modified_before": day(3).isoformat()},
            {"clip2.mp4", "drafts/cut.mp4"},
            id="modified-window",
        ),
        pytest.param(
            {"modified_after": "2025-06-03T00:00:00"},
            {"photo.jpg", "notes.txt", "data.bin", "sub/deep/movie.mov"},
            id="naive-dates-are-utc",
        ),
        pytest.param(
            {"modified_after": "2025-06-03T02:00:00+02:00"},
            {"photo.jpg", "notes.txt", "data.bin", "sub/deep/movie.mov"},
            id="offset-dates",
        ),
        pytest.param(
            {"mime_types": ["video/*"]},
            {"clip1.mp4", "clip2.mp4", "drafts/cut.mp4", "sub/deep/movie.mov"},
            id="mime-wildcard",
        ),
        pytest.param(
            {"mime_types": ["image/jpeg", "TEXT/*"]}, {"photo.jpg", "notes.txt"}, id="mime-case-blind"
        ),
        pytest.param({"mime_types": ["application/octet-stream"]}, {"data.bin"}, id="mime-unknown"),
        pytest.param(
            {
                "include_patterns": ["*.mp4", "*.mov"],
                "exclude_patterns": ["drafts/*"],
                "min_size_bytes": 1000,
                "mime_types": ["video/*"],
            },
            {"clip1.mp4", "clip2.mp4", "sub/deep/movie.mov"},
            id="all-combined",
        ),
    ],
)
async def test_folder_walk_counts_exactly_what_the_filters_allow(
    emulator_client: httpx.AsyncClient, filters: dict[str, Any] | None, expected: set[str]
) -> None:
    sync_id = await local_sync(emulator_client, file_filters=filters, batch_size=2)
    synced = await trigger(emulator_client, sync_id)
    expected_bytes = sum(MEDIA_FILES[path][0] for path in expected)
    assert counts(synced) == (len(expected), len(expected), expected_bytes)
    assert synced["batches_created"] == math.ceil(len(expected) / 2)
    assert synced["status"] == "ACTIVE"
    assert synced["last_error"] is None


async def test_skip_batch_submission_creates_no_batches(emulator_client: httpx.AsyncClient) -> None:
    sync_id = await local_sync(emulator_client, skip_batch_submission=True)
    synced = await trigger(emulator_client, sync_id)
    assert counts(synced) == (7, 7, MEDIA_BYTES)
    assert (synced["batches_created"], synced["batch_ids"], synced["task_ids"]) == (0, [], [])


async def test_later_runs_are_incremental(emulator_client: httpx.AsyncClient, provider_root: Path) -> None:
    sync_id = await local_sync(emulator_client)
    first = await trigger(emulator_client, sync_id)
    assert counts(first) == (7, 7, MEDIA_BYTES)
    assert first["batches_created"] == 1

    write_file(provider_root / "media" / "new.mp4", 111, day(10))
    write_file(provider_root / "media" / "clip1.mp4", 1000, day(11))  # modified since the last run
    second = await trigger(emulator_client, sync_id)
    assert counts(second) == (9, 9, MEDIA_BYTES + 111 + 1000)
    assert (second["sync_run_counter"], second["batches_created"]) == (2, 2)

    unchanged = await trigger(emulator_client, sync_id)
    assert counts(unchanged) == counts(second)
    assert (unchanged["sync_run_counter"], unchanged["batches_created"]) == (3, 2)
    assert unchanged["resume_objects_processed"] == 0

    # The watermark is the newest mtime already synced: a file arriving with an older mtime is missed.
    write_file(provider_root / "media" / "backdated.mp4", 5, day(3))
    assert counts(await trigger(emulator_client, sync_id)) == counts(second)


async def test_max_objects_per_run_leaves_the_rest_for_the_next_run(
    emulator_client: httpx.AsyncClient, emulator: Emulator
) -> None:
    sync_id = await local_sync(emulator_client)
    emulator.admin_patch(sync_id, {"max_objects_per_run": 3})
    # Oldest first: clip1 (1000), clip2 (3000), cut (500); then photo, notes, data; then movie.
    assert counts(await trigger(emulator_client, sync_id)) == (7, 3, 4500)
    assert counts(await trigger(emulator_client, sync_id)) == (11, 6, 4500 + 6106)
    assert counts(await trigger(emulator_client, sync_id)) == (12, 7, MEDIA_BYTES)


@pytest.mark.parametrize(
    ("source_path", "message"),
    [("/nope", "source_path '/nope' not found"), ("../other", "escapes the connection's folder")],
)
async def test_an_unlistable_source_fails_the_run(
    emulator_client: httpx.AsyncClient, provider_root: Path, source_path: str, message: str
) -> None:
    sync_id = await local_sync(emulator_client, source_path=source_path)
    failed = await trigger(emulator_client, sync_id)
    assert failed["status"] == "FAILED"
    assert message in failed["last_error"]
    assert (failed["consecutive_failures"], failed["sync_run_counter"]) == (1, 1)
    assert counts(failed) == (0, 0, 0)
    assert failed["last_sync_at"] is None
    assert failed["is_active"] is True


async def test_a_success_after_failures_resets_the_failure_count(
    emulator_client: httpx.AsyncClient, provider_root: Path
) -> None:
    sync_id = await local_sync(emulator_client, source_path="later")
    await trigger(emulator_client, sync_id)
    assert (await trigger(emulator_client, sync_id))["consecutive_failures"] == 2
    write_file(provider_root / "later" / "a.txt", 42, day(0))
    recovered = await trigger(emulator_client, sync_id)
    assert (recovered["status"], recovered["consecutive_failures"]) == ("ACTIVE", 0)
    assert counts(recovered) == (1, 1, 42)
    assert "not found" in recovered["last_error"]  # the most recent error stays visible


async def test_consecutive_failures_auto_suspend(
    emulator_client: httpx.AsyncClient, emulator: Emulator, provider_root: Path
) -> None:
    sync_id = await local_sync(emulator_client, source_path="missing", polling_interval_seconds=30)
    emulator.advance(5 + 3 * 30)  # runs at +5, +35, +65, +95
    four = await get(emulator_client, sync_id)
    assert (four["consecutive_failures"], four["status"], four["next_sync_at"]) == (4, "FAILED", iso(125))
    emulator.advance(30)
    suspended = await get(emulator_client, sync_id)
    assert (suspended["consecutive_failures"], suspended["status"]) == (5, "SUSPENDED")
    assert (suspended["is_active"], suspended["paused"], suspended["next_sync_at"]) == (False, False, None)
    assert "5 consecutive failures" in suspended["pause_reason"]
    emulator.advance(600)
    assert (await get(emulator_client, sync_id))["sync_run_counter"] == 5

    write_file(provider_root / "missing" / "x.bin", 9, day(0))
    resumed = (await emulator_client.post(f"{SYNCS_PATH}/{sync_id}/resume")).json()
    assert (resumed["status"], resumed["is_active"], resumed["pause_reason"]) == ("ACTIVE", True, None)
    assert resumed["next_sync_at"] == iso(725 + 30)
    emulator.advance(30)
    healthy = await get(emulator_client, sync_id)
    assert (healthy["status"], healthy["consecutive_failures"], healthy["total_files_synced"]) == (
        "ACTIVE",
        0,
        1,
    )


# --- the schedule ------------------------------------------------------------------------------


async def test_continuous_sync_runs_every_polling_interval(
    emulator_client: httpx.AsyncClient, emulator: Emulator
) -> None:
    sync_id = (await create_sync(emulator_client, polling_interval_seconds=60))["sync_config_id"]
    emulator.advance(4.9)
    pending = await get(emulator_client, sync_id)
    assert (pending["status"], pending["sync_run_counter"], pending["next_sync_at"]) == ("PENDING", 0, iso(5))
    emulator.advance(0.1)
    first = await get(emulator_client, sync_id)
    assert (first["status"], first["sync_run_counter"]) == ("ACTIVE", 1)
    assert (first["last_sync_at"], first["next_sync_at"]) == (iso(5), iso(65))
    assert counts(first) == (12, 12, 19_886_080)
    assert emulator.advance(120) == 2
    third = await get(emulator_client, sync_id)
    assert (third["sync_run_counter"], third["last_sync_at"], third["next_sync_at"]) == (
        3,
        iso(125),
        iso(185),
    )
    assert counts(third) == counts(first)  # nothing changed at the source since


async def test_initial_only_runs_once_then_completes(
    emulator_client: httpx.AsyncClient, emulator: Emulator
) -> None:
    sync_id = (await create_sync(emulator_client, sync_mode="initial_only"))["sync_config_id"]
    emulator.advance(5)
    done = await get(emulator_client, sync_id)
    assert (done["status"], done["sync_run_counter"], done["next_sync_at"]) == ("COMPLETED", 1, None)
    emulator.advance(10_000)
    assert (await get(emulator_client, sync_id))["sync_run_counter"] == 1


async def test_trigger_replaces_the_pending_initial_run(
    emulator_client: httpx.AsyncClient, emulator: Emulator
) -> None:
    sync_id = (await create_sync(emulator_client, sync_mode="initial_only"))["sync_config_id"]
    done = await trigger(emulator_client, sync_id)
    assert (done["status"], done["next_sync_at"]) == ("COMPLETED", None)
    emulator.advance(60)
    assert (await get(emulator_client, sync_id))["sync_run_counter"] == 1


@pytest.mark.parametrize(
    ("mode", "resumed_next"), [("continuous", iso(100 + 60)), ("initial_only", iso(100))]
)
async def test_paused_syncs_do_not_run_until_resumed(
    emulator_client: httpx.AsyncClient, emulator: Emulator, mode: str, resumed_next: str
) -> None:
    sync_id = (await create_sync(emulator_client, sync_mode=mode, polling_interval_seconds=60))[
        "sync_config_id"
    ]
    await emulator_client.post(f"{SYNCS_PATH}/{sync_id}/pause")
    emulator.advance(100)
    assert (await get(emulator_client, sync_id))["sync_run_counter"] == 0
    resumed = (await emulator_client.post(f"{SYNCS_PATH}/{sync_id}/resume")).json()
    assert resumed["next_sync_at"] == resumed_next
    emulator.advance(60)
    assert (await get(emulator_client, sync_id))["sync_run_counter"] == 1


async def test_is_active_false_stops_and_true_restarts_the_schedule(
    emulator_client: httpx.AsyncClient, emulator: Emulator
) -> None:
    sync_id = (await create_sync(emulator_client, polling_interval_seconds=30))["sync_config_id"]
    inactive = (await emulator_client.patch(f"{SYNCS_PATH}/{sync_id}", json={"is_active": False})).json()
    assert inactive["next_sync_at"] is None
    emulator.advance(300)
    assert (await get(emulator_client, sync_id))["sync_run_counter"] == 0
    active = (await emulator_client.patch(f"{SYNCS_PATH}/{sync_id}", json={"is_active": True})).json()
    assert active["next_sync_at"] == iso(330)


async def test_a_new_polling_interval_applies_after_the_next_run(
    emulator_client: httpx.AsyncClient, emulator: Emulator
) -> None:
    sync_id = (await create_sync(emulator_client, polling_interval_seconds=60))["sync_config_id"]
    emulator.advance(10)  # first run at +5, next at +65
    patched = (
        await emulator_client.patch(f"{SYNCS_PATH}/{sync_id}", json={"polling_interval_seconds": 120})
    ).json()
    assert patched["next_sync_at"] == iso(65)
    emulator.advance(55)
    assert (await get(emulator_client, sync_id))["next_sync_at"] == iso(185)


async def test_long_gaps_run_a_bounded_number_of_missed_slots(
    emulator_client: httpx.AsyncClient, emulator: Emulator
) -> None:
    emulator.behaviour.max_catch_up_runs = 3
    sync_id = (await create_sync(emulator_client, polling_interval_seconds=30))["sync_config_id"]
    assert emulator.advance(3005) == 3  # +5, +35, +65; then older missed slots are skipped
    caught_up = await get(emulator_client, sync_id)
    assert (caught_up["sync_run_counter"], caught_up["next_sync_at"]) == (3, iso(3035))  # stays on the grid


async def test_a_held_lock_blocks_runs_until_it_expires(
    emulator_client: httpx.AsyncClient, emulator: Emulator
) -> None:
    sync_id = (await create_sync(emulator_client, polling_interval_seconds=30))["sync_config_id"]
    emulator.admin_patch(sync_id, {"locked_by_worker_id": "worker-1", "lock_expires_at": iso(100)})
    refused = (await emulator_client.post(f"{SYNCS_PATH}/{sync_id}/trigger")).json()
    assert (refused["status"], refused["sync_job_id"]) == ("SKIPPED", None)
    assert "locked" in refused["message"]
    emulator.advance(100)  # slots +5, +35, +65, +95 fall inside the lock
    assert (await get(emulator_client, sync_id))["sync_run_counter"] == 0
    emulator.advance(25)  # +125: the lock is stale
    assert (await get(emulator_client, sync_id))["sync_run_counter"] == 1


async def test_time_scale_runs_the_clock_faster_and_reads_run_what_is_due(
    emulator_client: httpx.AsyncClient, emulator: Emulator
) -> None:
    wall = [0.0]
    emulator.clock = EmulatorClock(FROZEN_START, time_scale=60, wall=lambda: wall[0])
    sync_id = (await create_sync(emulator_client, polling_interval_seconds=30))["sync_config_id"]
    wall[0] = 1.0  # one real second = one emulated minute: slots +5 and +35 are due
    synced = await get(emulator_client, sync_id)
    assert (synced["sync_run_counter"], synced["last_sync_at"], synced["next_sync_at"]) == (
        2,
        iso(35),
        iso(65),
    )


async def test_admin_clock_endpoints(emulator_client: httpx.AsyncClient) -> None:
    await create_sync(emulator_client, polling_interval_seconds=30)
    advanced = (await emulator_client.post("/_emulator/clock/advance", json={"seconds": 65})).json()
    assert advanced == {"now": (FROZEN_START + timedelta(seconds=65)).isoformat(), "runs": 3}
    assert (await emulator_client.post("/_emulator/run-due")).json()["runs"] == 0
    clock = (await emulator_client.get("/_emulator/clock")).json()
    assert clock == {"now": advanced["now"], "time_scale": 0}
    refused = await emulator_client.post("/_emulator/clock/advance", json={"seconds": -1})
    assert refused.status_code == 422


def test_clock_scales_advances_and_never_goes_back() -> None:
    wall = [100.0]
    clock = EmulatorClock(FROZEN_START, time_scale=10, wall=lambda: wall[0])
    wall[0] = 102.5
    assert clock.now() == FROZEN_START + timedelta(seconds=25)
    assert clock.advance(5) == FROZEN_START + timedelta(seconds=30)
    clock.restart_at(FROZEN_START)  # earlier: ignored
    assert clock.now() == FROZEN_START + timedelta(seconds=30)
    clock.restart_at(FROZEN_START + timedelta(hours=1))
    assert clock.now() == FROZEN_START + timedelta(hours=1)
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="time_scale"):
        EmulatorClock(time_scale=-1)
