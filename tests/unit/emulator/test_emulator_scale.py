"""The emulator at the scale the benchmarks drive it: one bucket of thousands of syncs, paged
through and persisted without per-page or per-change work that grows with the bucket."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from mixpeek_operator.emulator import state as state_module
from mixpeek_operator.emulator.config import EmulatorConfig
from mixpeek_operator.emulator.state import BucketScope, Emulator
from mixpeek_operator.emulator.testing import FROZEN_START
from mixpeek_operator.mixpeek.models import ListSyncConfigurationsRequest, SyncCreateRequest

N = 3000


def emulator(state_file: Path | None = None) -> tuple[Emulator, BucketScope]:
    emu = Emulator(EmulatorConfig(time_scale=0, start_time=FROZEN_START, state_file=state_file))
    caller = emu.directory.caller("Bearer sk_test_emulator", "default", emu.behaviour)
    return emu, BucketScope(caller, "bkt_demo")


def create(emu: Emulator, scope: BucketScope, n: int) -> list[str]:
    request = SyncCreateRequest(connection_id="conn_s3_demo", source_path="demo-bucket/videos")
    return [emu.create_sync(scope, request).sync_id for _ in range(n)]


def page_through(
    emu: Emulator, scope: BucketScope, limit: int, filters: ListSyncConfigurationsRequest | None = None
) -> list[str]:
    ids, cursor = [], None
    while True:
        body = json.loads(
            emu.list_syncs(scope, filters, limit=limit, offset=None, cursor=cursor, include_total=False)
        )
        ids += [sync["sync_config_id"] for sync in body["results"]]
        cursor = body["pagination"]["next_cursor"]
        if not cursor:
            return ids


def test_paging_a_big_bucket_visits_each_sync_about_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: each page re-filtered and re-sorted the whole bucket and scanned it for the
    cursor, so paging through N syncs cost O(N² log N)."""
    emu, scope = emulator()
    created = create(emu, scope, N)
    checked = 0
    real_passes = state_module._passes

    def counting_passes(*args: Any) -> bool:
        nonlocal checked
        checked += 1
        return real_passes(*args)

    monkeypatch.setattr(state_module, "_passes", counting_passes)
    assert page_through(emu, scope, limit=10) == created[::-1]  # newest first, each once
    assert checked <= 2 * N


def test_a_filtered_listing_pages_the_same_syncs() -> None:
    emu, scope = emulator()
    created = create(emu, scope, 250)
    filters = ListSyncConfigurationsRequest(connection_id="conn_s3_demo")
    assert page_through(emu, scope, limit=7, filters=filters) == created[::-1]
    assert page_through(emu, scope, limit=7, filters=ListSyncConfigurationsRequest(connection_id="x")) == []


def test_each_change_is_persisted_without_rewriting_the_state_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: every create rewrote the whole state file (quadratic in the bucket)."""
    state_file = tmp_path / "emulator.json"
    rewrites = 0
    real_replace = os.replace

    def counting_replace(*args: Any) -> None:
        nonlocal rewrites
        rewrites += 1
        real_replace(*args)

    monkeypatch.setattr(os, "replace", counting_replace)
    emu, scope = emulator(state_file)
    created = create(emu, scope, N)
    emu.delete_sync(scope, created[0])
    assert rewrites <= 5
    # A crash now (no shutdown, nothing flushed on exit): a new process sees every change.
    restarted, scope = emulator(state_file)
    assert page_through(restarted, scope, limit=1000) == created[:0:-1]


def test_a_change_torn_by_a_crash_is_dropped_and_the_rest_kept(tmp_path: Path) -> None:
    state_file = tmp_path / "emulator.json"
    emu, scope = emulator(state_file)
    created = create(emu, scope, 3)
    journal = state_file.with_name("emulator.json.journal")
    journal.write_text(journal.read_text() + '{"clock": "2026-01-0')  # the write a crash cut short
    restarted, scope = emulator(state_file)
    assert page_through(restarted, scope, limit=10) == created[::-1]
