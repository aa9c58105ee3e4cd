"""The shard benchmark's pure helpers (hack/bench/stats.py): moves between owner snapshots and
double writes per sync in the emulator's request log; and the packages its replicas run with."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from hack.bench import runtime, stats
from hack.localcluster import REPO_ROOT
from mixpeek_operator.mixpeek import user_agent

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def entry(
    endpoint: str, sync_id: str | None, replica: str | None, start: float, end: float
) -> dict[str, Any]:
    """A request log entry as the emulator writes it (times: seconds after T0)."""
    return {
        "endpoint": endpoint,
        "sync_id": sync_id,
        "user_agent": user_agent(replica),
        "started_at": (T0 + timedelta(seconds=start)).isoformat(),
        "at": (T0 + timedelta(seconds=end)).isoformat(),
    }


def test_the_replica_is_read_back_from_the_operator_s_user_agent() -> None:
    assert stats.replica_of(user_agent("shard-3")) == "shard-3"
    assert stats.replica_of(user_agent()) is None
    assert stats.replica_of(None) is None
    assert stats.replica_of("python-httpx/0.28") is None


def test_moves_count_owner_changes_only() -> None:
    before = {"a": "s0", "b": "s1", "c": None, "d": "s2", "gone": "s0"}
    after = {"a": "s0", "b": "s4", "c": "s4", "d": None, "new": "s1"}
    # c was labelled for the first time; d lost its label (no new owner yet); gone and new
    # exist on one side only: none of these is a move.
    assert stats.moves(before, after) == {"b": ("s1", "s4")}
    assert len(stats.moves(before, after)) / len(before) == 0.2


def test_writes_of_one_replica_at_a_time_are_no_conflict() -> None:
    log = [
        entry("create", "sync_1", "s0", 0.0, 0.1),
        entry("update", "sync_1", "s0", 1.0, 1.1),
        # handed over: s4 writes only after s0's last write answered
        entry("update", "sync_1", "s4", 1.2, 1.3),
        entry("trigger", "sync_1", "s4", 2.0, 2.1),
        entry("update", "sync_2", "s1", 0.5, 3.0),
        entry("get", "sync_2", "s4", 1.0, 1.1),  # a read is not a write
        entry("list", None, "s4", 1.0, 1.1),
        entry("create", None, "s1", 1.0, 1.1),  # a failed create names no sync
    ]
    conflicts = stats.write_conflicts(stats.remote_writes(log))
    assert (conflicts.writes, conflicts.syncs, conflicts.handed_over) == (5, 2, ("sync_1",))
    assert conflicts.double_writes == 0
    assert conflicts.to_json()["syncs_handed_over_with_writes"] == 1


def test_overlapping_writes_of_two_replicas_are_a_double_write() -> None:
    log = [
        entry("update", "sync_1", "s0", 0.0, 2.0),
        entry("update", "sync_1", "s4", 1.0, 1.5),  # s0's update still in flight
        entry("update", "sync_2", "s0", 0.0, 2.0),
        entry("update", "sync_2", "s0", 1.0, 1.5),  # the same replica: not a conflict here
    ]
    conflicts = stats.write_conflicts(stats.remote_writes(log))
    assert (conflicts.overlapping, conflicts.interleaved) == (("sync_1",), ())
    assert conflicts.double_writes == 1


def test_an_old_owner_writing_after_the_new_one_is_a_double_write() -> None:
    log = [
        entry("update", "sync_1", "s0", 0.0, 0.1),
        entry("pause", "sync_1", "s4", 1.0, 1.1),
        entry("resume", "sync_1", "s0", 2.0, 2.1),  # s0 again, after s4 took over
        entry("delete", "sync_2", None, 0.0, 0.1),
    ]
    conflicts = stats.write_conflicts(stats.remote_writes(log))
    assert (conflicts.overlapping, conflicts.interleaved) == ((), ("sync_1",))
    assert (conflicts.double_writes, conflicts.unattributed) == (1, 1)


def test_the_replicas_run_with_what_the_image_installs() -> None:
    """hack/bench/runtime.py installs the extras the Dockerfile's wheel build names, so a change
    to the image's packages is a change to what the benchmark measures."""
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    built = re.findall(r'pip wheel [^\n]*"\.\[([a-z,]+)\]"', dockerfile)
    assert built == [runtime.EXTRAS]
