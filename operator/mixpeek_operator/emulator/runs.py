"""One simulated sync run, and the failure bookkeeping shared by runs and the admin API."""

from __future__ import annotations

import math
import uuid
from datetime import datetime

from mixpeek_operator.emulator.records import SyncRecord
from mixpeek_operator.emulator.seed import ConnectionSeed
from mixpeek_operator.emulator.sources import FileSelector, SourceError, list_source
from mixpeek_operator.mixpeek.models import LAST_ERROR_MAX_LENGTH, SyncConfiguration, SyncMode, TaskStatus


def run_sync(
    record: SyncRecord,
    connection: ConnectionSeed | None,
    at: datetime,
    run_id: str,
    auto_suspend_after: int | None,
) -> None:
    """List the source, keep what file_filters allow and what changed since the watermark, count it.
    The caller calls `record.changed()` afterwards."""
    config = record.config
    config.sync_run_counter += 1
    config.current_sync_run_id = run_id
    config.updated_at = at
    if record.failing_runs > 0:
        record.failing_runs -= 1
        record_failure(config, record.failing_message, at, auto_suspend_after)
        return
    try:
        if connection is None:
            raise SourceError(f"connection {config.connection_id!r} no longer exists")
        files = list_source(connection.root, config.source_path)
    except SourceError as exc:
        record_failure(config, str(exc), at, auto_suspend_after)
        return

    selector = FileSelector(config.file_filters)
    watermark = record.source_watermark_ns
    fresh = sorted(
        (f for f in files if (watermark is None or f.mtime_ns > watermark) and selector.matches(f)),
        key=lambda f: (f.mtime_ns, f.path),
    )
    synced = fresh[: max(config.max_objects_per_run, 0)]
    if len(synced) < len(fresh):
        # Capped: stop just below the first file left over, so the next run picks it up.
        record.source_watermark_ns = fresh[len(synced)].mtime_ns - 1
    elif synced:
        record.source_watermark_ns = synced[-1].mtime_ns

    config.total_files_discovered += len(fresh)
    config.total_files_synced += len(synced)
    config.total_bytes_synced += sum(f.size for f in synced)
    config.resume_objects_processed = len(synced)
    if not config.skip_batch_submission and synced:
        batches = math.ceil(len(synced) / max(config.batch_size, 1))  # admin patches are unbounded
        config.batches_created += batches
        for _ in range(batches):
            config.batch_ids.append(f"btch_{uuid.uuid4().hex[:16]}")
            config.task_ids.append(f"task_{uuid.uuid4().hex[:16]}")
    config.last_sync_at = at
    config.consecutive_failures = 0
    config.status = TaskStatus.COMPLETED if config.sync_mode == SyncMode.INITIAL_ONLY else TaskStatus.ACTIVE


def record_failure(
    config: SyncConfiguration, message: str, at: datetime, auto_suspend_after: int | None
) -> None:
    """A failed attempt: last_error, consecutive_failures++, FAILED; SUSPENDED at the threshold."""
    config.last_error = message[:LAST_ERROR_MAX_LENGTH]
    config.consecutive_failures += 1
    config.status = TaskStatus.FAILED
    config.updated_at = at
    if auto_suspend_after is not None and config.consecutive_failures >= auto_suspend_after:
        config.status = TaskStatus.SUSPENDED
        config.is_active = False
        config.pause_reason = f"auto-suspended after {config.consecutive_failures} consecutive failures"
