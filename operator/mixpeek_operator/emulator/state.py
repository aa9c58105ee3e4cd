"""The emulator's state: every sync, its schedule, and the operations both APIs perform on it.

Handlers are synchronous methods called from `async def` routes on one event loop, so each
operation is atomic without locks. Scheduled runs are evaluated lazily: before a request is
handled, `run_due()` executes every slot that is due (in slot order, each at its own
instant), so what a client observes is what a background scheduler would have produced.
"""

from __future__ import annotations

import base64
import bisect
import heapq
import math
import secrets
import string
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError

from mixpeek_operator.emulator.clock import EmulatorClock
from mixpeek_operator.emulator.config import EmulatorConfig
from mixpeek_operator.emulator.directory import Caller, Directory
from mixpeek_operator.emulator.errors import ApiError, invalid_body, not_found
from mixpeek_operator.emulator.records import SavedState, StateFile, SyncRecord, records_json
from mixpeek_operator.emulator.runs import record_failure, run_sync
from mixpeek_operator.emulator.seed import SYNC_PROVIDERS
from mixpeek_operator.emulator.traffic import FaultInjector, RequestStats
from mixpeek_operator.mixpeek.models import (
    ListSyncConfigurationsRequest,
    PaginationResponse,
    SyncConfiguration,
    SyncCreateRequest,
    SyncMode,
    SyncUpdateRequest,
    TaskStatus,
)

SYNC_ID_PREFIX = "sync_"
SYNC_ID_LENGTH = 16  # within the V1 pattern ^sync_[a-zA-Z0-9]{14,16}$
_ID_ALPHABET = string.ascii_letters + string.digits
# Admin patches may not move a sync to another tenant, bucket or id: that is delete + create.
IDENTITY_FIELDS = frozenset({"sync_config_id", "bucket_id", "namespace_id"})
_OLDEST = datetime.min.replace(tzinfo=UTC)
RunBlocker = Literal["paused", "inactive", "locked"]
FailWhen = Literal["now", "next_runs"]  # record failures at once, or arm the next runs


@dataclass(frozen=True, slots=True)
class BucketScope:
    caller: Caller
    bucket_id: str

    @property
    def key(self) -> tuple[str, str]:
        return self.caller.namespace.id, self.bucket_id


class Emulator:
    def __init__(self, config: EmulatorConfig, clock: EmulatorClock | None = None) -> None:
        self.config = config
        self.clock = clock or EmulatorClock(config.start_time, config.time_scale)
        self.directory = Directory(config.seed)
        self.behaviour = config.behaviour.model_copy()
        self.faults = FaultInjector(config.random_seed)
        self.stats = RequestStats(config.request_log_size)
        self._records: dict[str, SyncRecord] = {}
        self._by_bucket: dict[tuple[str, str], dict[str, SyncRecord]] = {}
        # Per bucket, (listing key, id) in ascending order: a page is a slice found by bisection,
        # not a filter and sort of the bucket per page (paging a bucket of N was O(N² log N)).
        self._order: dict[tuple[str, str], list[tuple[tuple[datetime, int], str]]] = {}
        self._due: list[tuple[datetime, int, str]] = []  # heap of (slot, seq, id); stale entries skipped
        self._next_seq = 1
        self._state = StateFile(config.state_file) if config.state_file is not None else None
        saved = self._state.load() if self._state is not None else None
        if saved is not None:
            self._restore(saved)

    # --- the public API, scoped to the caller's namespace and the path's bucket -------------

    def create_sync(self, scope: BucketScope, request: SyncCreateRequest) -> SyncRecord:
        namespace_id, bucket_id = scope.key
        connection = self.directory.connection(namespace_id, request.connection_id)
        if connection is None:
            raise not_found("connection", request.connection_id)
        if connection.provider not in SYNC_PROVIDERS:
            raise ApiError(
                400,
                f"Provider {connection.provider.value} does not support bucket syncs",
                details={"connection_id": connection.id, "provider": connection.provider.value},
            )
        now = self.clock.now()
        config = SyncConfiguration(
            sync_config_id=self._new_sync_id(),
            bucket_id=bucket_id,
            connection_id=request.connection_id,
            internal_id=scope.caller.api_key.internal_id,
            namespace_id=namespace_id,
            source_path=request.source_path,
            file_filters=request.file_filters,
            schema_mapping=request.schema_mapping,
            sync_mode=request.sync_mode,
            polling_interval_seconds=request.polling_interval_seconds,
            batch_size=request.batch_size,
            skip_batch_submission=request.skip_batch_submission,
            metadata=request.metadata or {},
            created_at=now,
            updated_at=now,
            created_by_user_id=scope.caller.api_key.user_id,
        )
        record = SyncRecord(config=config, seq=self._next_seq)
        self._next_seq += 1
        self._add(record)
        self._schedule(record, now + timedelta(seconds=self.behaviour.initial_run_delay_seconds))
        self._commit(record)
        return record

    def list_syncs(
        self,
        scope: BucketScope,
        filters: ListSyncConfigurationsRequest | None,
        *,
        limit: int | None,
        offset: int | None,
        cursor: str | None,
        include_total: bool,
    ) -> str:
        """The `SyncListResponse` JSON: newest first; a cursor takes precedence over offset."""
        limit = limit or self.behaviour.default_list_limit
        order = self._order.get(scope.key, [])
        records = self._by_bucket.get(scope.key, {})
        # Walk newest first from the cursor (or the start) and stop one past the page.
        end = bisect.bisect_left(order, (_decode_cursor(cursor), "")) if cursor else len(order)
        skip = 0 if cursor else offset or 0  # a cursor takes precedence over offset
        page: list[SyncRecord] = []
        more = False
        for index in range(end - 1, -1, -1):
            record = records[order[index][1]]
            if not _passes(record.config, filters):
                continue
            if skip:
                skip -= 1
            elif len(page) == limit:
                more = True
                break
            else:
                page.append(record)
        if filters is None:
            total, before = len(order), len(order) - end + (0 if cursor else offset or 0)
        else:  # only a filtered listing counts its matches
            matching = [i for i, (_, id_) in enumerate(order) if _passes(records[id_].config, filters)]
            total = len(matching)
            before = total - bisect.bisect_left(matching, end) + (0 if cursor else offset or 0)
        pagination = PaginationResponse(next_cursor=_encode_cursor(page[-1]) if more and page else None)
        if include_total:
            pagination.total = total
            pagination.page = before // limit + 1
            pagination.page_size = limit
            pagination.total_pages = math.ceil(total / limit)
        pagination_json = pagination.model_dump_json()
        return f'{{"results":{records_json(page)},"pagination":{pagination_json},"total":{total}}}'

    def get_sync(self, scope: BucketScope, sync_id: str) -> SyncRecord:
        record = self._by_bucket.get(scope.key, {}).get(sync_id)
        if record is None:
            raise not_found("sync_configuration", sync_id)
        return record

    def update_sync(self, scope: BucketScope, sync_id: str, request: SyncUpdateRequest) -> SyncRecord:
        """Only keys present and non-null change; `description` is accepted but not part of the model."""
        record = self.get_sync(scope, sync_id)
        was_halted = _halted(record.config)
        for name in sorted(request.model_fields_set - {"description"}):
            value = getattr(request, name)
            if value is not None:
                setattr(record.config, name, value)
        record.config.updated_at = now = self.clock.now()
        self._settle(record, was_halted, now)
        return record

    def delete_sync(self, scope: BucketScope, sync_id: str) -> dict[str, Any]:
        self._remove(self.get_sync(scope, sync_id))
        return {"success": True, "sync_config_id": sync_id}

    def pause_sync(self, scope: BucketScope, sync_id: str) -> SyncRecord:
        return self._pause(self.get_sync(scope, sync_id), scope.caller.api_key.user_id, reason=None)

    def resume_sync(self, scope: BucketScope, sync_id: str) -> SyncRecord:
        return self._resume(self.get_sync(scope, sync_id))

    def trigger_sync(self, scope: BucketScope, sync_id: str) -> dict[str, Any]:
        record = self.get_sync(scope, sync_id)
        now = self.clock.now()
        blocker = _run_blocker(record.config, now)
        if blocker is not None:
            if self.behaviour.trigger_when_paused == "conflict":
                raise ApiError(
                    409,
                    f"Sync configuration is {blocker}; resume it before triggering",
                    details={"sync_config_id": sync_id, "reason": blocker},
                )
            return {
                "sync_job_id": None,
                "sync_config_id": sync_id,
                "status": TaskStatus.SKIPPED.value,
                "message": f"sync configuration is {blocker}; nothing was run",
            }
        job_id = str(uuid.uuid4())
        self._run(record, now, job_id)
        if record.config.sync_mode == SyncMode.INITIAL_ONLY or _halted(record.config):
            self._schedule(record, None)  # this run replaced the pending one, or auto-suspended
        self._commit(record)
        return {"sync_job_id": job_id, "sync_config_id": sync_id, "status": TaskStatus.PENDING.value}

    # --- the admin API: any sync by id, out-of-band changes ------------------------------

    def find(self, sync_id: str) -> SyncRecord:
        record = self._records.get(sync_id)
        if record is None:
            raise not_found("sync_configuration", sync_id)
        return record

    def all_syncs(self, namespace_id: str | None = None, bucket_id: str | None = None) -> list[SyncRecord]:
        """Every stored sync (optionally of one namespace and/or bucket), newest first."""
        return sorted(
            (
                r
                for r in self._records.values()
                if namespace_id in (None, r.config.namespace_id) and bucket_id in (None, r.config.bucket_id)
            ),
            key=_listing_key,
            reverse=True,
        )

    def admin_patch(self, sync_id: str, fields: Mapping[str, Any]) -> SyncRecord:
        """Set any model fields (validated as the model's types); updated_at moves unless given."""
        record = self.find(sync_id)
        unknown = sorted(set(fields) - set(SyncConfiguration.model_fields))
        if unknown:
            raise ApiError(422, f"Not sync configuration fields: {unknown}", details={"fields": unknown})
        identity = sorted(set(fields) & IDENTITY_FIELDS)
        if identity:
            raise ApiError(
                400, f"Identity fields cannot be patched: {identity}", details={"fields": identity}
            )
        try:
            config = SyncConfiguration.model_validate({**record.config.model_dump(), **fields})
        except ValidationError as exc:
            raise invalid_body(exc) from exc
        was_halted = _halted(record.config)
        now = self.clock.now()
        if "updated_at" not in fields:
            config.updated_at = now
        self._unorder(record)
        record.config = config
        self._order_in(record)  # created_at may have moved
        if "next_sync_at" in fields:
            self._schedule(record, config.next_sync_at)
        self._settle(record, was_halted, now)
        return record

    def admin_delete(self, sync_id: str) -> None:
        self._remove(self.find(sync_id))

    def admin_pause(self, sync_id: str, *, user_id: str, reason: str | None) -> SyncRecord:
        return self._pause(self.find(sync_id), user_id, reason)

    def admin_resume(self, sync_id: str) -> SyncRecord:
        return self._resume(self.find(sync_id))

    def admin_fail(self, sync_id: str, *, message: str, count: int, when: FailWhen) -> SyncRecord:
        """`now`: record `count` failures at once (may auto-suspend); `next_runs`: arm the next runs."""
        record = self.find(sync_id)
        if when == "next_runs":
            record.failing_runs, record.failing_message = count, message
            self._commit(record)
            return record
        was_halted = _halted(record.config)
        now = self.clock.now()
        for _ in range(count):
            record_failure(record.config, message, now, self.behaviour.auto_suspend_after)
        self._settle(record, was_halted, now)
        return record

    def admin_bump(self, sync_id: str, increments: Mapping[str, int]) -> SyncRecord:
        record = self.find(sync_id)
        for name, amount in increments.items():
            setattr(record.config, name, getattr(record.config, name) + amount)
        record.config.updated_at = now = self.clock.now()
        self._settle(record, _halted(record.config), now)
        return record

    def advance(self, seconds: float) -> int:
        self.clock.advance(seconds)
        return self.run_due()

    def run_due(self) -> int:
        """Run every slot due by now, oldest first; returns how many runs happened."""
        now = self.clock.now()
        attempts: Counter[str] = Counter()
        runs = 0
        while self._due and self._due[0][0] <= now:
            at, _, sync_id = heapq.heappop(self._due)
            record = self._records.get(sync_id)
            if record is None or record.config.next_sync_at != at:
                continue  # deleted or rescheduled since this entry was pushed
            attempts[sync_id] += 1
            blocker = _run_blocker(record.config, at)
            if blocker is None:
                self._run(record, at, str(uuid.uuid4()))
                runs += 1
            self._schedule(record, self._next_slot(record.config, at, now, attempts[sync_id], blocker))
        if attempts:
            self._commit(*(self._records[i] for i in attempts if i in self._records))
        return runs

    def reset(self) -> None:
        """Back to the seed: no syncs, no faults, no counts, the configured behaviour. Time keeps going."""
        self._records.clear()
        self._by_bucket.clear()
        self._order.clear()
        self._due.clear()
        self._next_seq = 1
        self.faults.rules.clear()
        self.stats.clear()
        self.behaviour = self.config.behaviour.model_copy()
        if self._state is not None:
            self._state.snapshot(self.clock.now(), self._next_seq, [])

    # --- internals ----------------------------------------------------------------------

    def _pause(self, record: SyncRecord, user_id: str, reason: str | None) -> SyncRecord:
        config = record.config
        if config.paused:
            return record  # idempotent: the first pause's time and user stay
        was_halted = _halted(config)
        now = self.clock.now()
        config.paused, config.paused_at, config.paused_by_user_id = True, now, user_id
        config.pause_reason = reason
        if self.behaviour.pause_deactivates:
            config.is_active, config.status = False, TaskStatus.SUSPENDED
        config.updated_at = now
        self._settle(record, was_halted, now)
        return record

    def _resume(self, record: SyncRecord) -> SyncRecord:
        """Clears the pause fields and re-activates; also lifts an auto-suspension. Idempotent."""
        config = record.config
        if not _halted(config):
            return record
        now = self.clock.now()
        config.paused, config.is_active = False, True
        config.paused_at = config.paused_by_user_id = config.pause_reason = None
        if config.status == TaskStatus.SUSPENDED:
            config.status = TaskStatus.ACTIVE
        config.updated_at = now
        self._settle(record, True, now)
        return record

    def _settle(self, record: SyncRecord, was_halted: bool, now: datetime) -> None:
        """After a change: stop scheduling a halted sync, restart a freshly un-halted one, persist."""
        if _halted(record.config):
            self._schedule(record, None)
        elif was_halted:
            self._schedule(record, _resume_slot(record.config, now))
        record.changed()
        self._commit(record)

    def _next_slot(
        self,
        config: SyncConfiguration,
        at: datetime,
        now: datetime,
        attempts: int,
        blocker: RunBlocker | None,
    ) -> datetime | None:
        if _halted(config) or (config.sync_mode == SyncMode.INITIAL_ONLY and blocker is None):
            return None
        interval = _interval(config)
        slot = at + interval
        if attempts >= self.behaviour.max_catch_up_runs and slot <= now:
            slot += interval * ((now - slot) // interval + 1)  # give up on older missed slots
        return slot

    def _run(self, record: SyncRecord, at: datetime, run_id: str) -> None:
        connection = self.directory.connection(record.config.namespace_id, record.config.connection_id)
        run_sync(record, connection, at, run_id, self.behaviour.auto_suspend_after)
        record.changed()

    def _schedule(self, record: SyncRecord, at: datetime | None) -> None:
        record.config.next_sync_at = at
        record.changed()
        if at is not None:
            heapq.heappush(self._due, (at, record.seq, record.sync_id))

    def _new_sync_id(self) -> str:
        while True:
            sync_id = SYNC_ID_PREFIX + "".join(secrets.choice(_ID_ALPHABET) for _ in range(SYNC_ID_LENGTH))
            if sync_id not in self._records:
                return sync_id

    def _add(self, record: SyncRecord) -> None:
        self._records[record.sync_id] = record
        bucket = self._by_bucket.setdefault((record.config.namespace_id, record.config.bucket_id), {})
        bucket[record.sync_id] = record
        self._order_in(record)

    def _remove(self, record: SyncRecord) -> None:
        self._unorder(record)
        del self._records[record.sync_id]
        del self._by_bucket[(record.config.namespace_id, record.config.bucket_id)][record.sync_id]
        self._commit(deleted=record.sync_id)

    def _order_in(self, record: SyncRecord) -> None:
        order = self._order.setdefault((record.config.namespace_id, record.config.bucket_id), [])
        bisect.insort(order, (_listing_key(record), record.sync_id))

    def _unorder(self, record: SyncRecord) -> None:
        order = self._order[(record.config.namespace_id, record.config.bucket_id)]
        entry = (_listing_key(record), record.sync_id)
        del order[bisect.bisect_left(order, entry)]

    def _commit(self, *changed: SyncRecord, deleted: str | None = None) -> None:
        """Persist a change (see records.StateFile) before it is answered."""
        if self._state is None:
            return
        now, deletes = self.clock.now(), [deleted] if deleted else []
        fold = self._state.record(now, self._next_seq, list(changed), deletes, len(self._records))
        if fold or not self._state.path.exists():
            self._state.snapshot(now, self._next_seq, list(self._records.values()))

    def _restore(self, saved: SavedState) -> None:
        self.clock.restart_at(saved.clock)
        self._next_seq = saved.next_seq
        for record in sorted(saved.records, key=lambda r: r.seq):
            self._add(record)
            if record.config.next_sync_at is not None:
                heapq.heappush(self._due, (record.config.next_sync_at, record.seq, record.sync_id))


def _halted(config: SyncConfiguration) -> bool:
    return config.paused or not config.is_active


def _run_blocker(config: SyncConfiguration, at: datetime) -> RunBlocker | None:
    if config.paused:
        return "paused"
    if not config.is_active:
        return "inactive"
    if config.locked_by_worker_id and (config.lock_expires_at is None or config.lock_expires_at > at):
        return "locked"  # an expired lock is stale and does not block
    return None


def _interval(config: SyncConfiguration) -> timedelta:
    return timedelta(seconds=max(config.polling_interval_seconds, 1))  # admin patches are unbounded


def _resume_slot(config: SyncConfiguration, now: datetime) -> datetime | None:
    """Continuous: polling restarts one interval from now. initial_only: now, unless it already succeeded."""
    if config.sync_mode == SyncMode.CONTINUOUS:
        return now + _interval(config)
    return now if config.last_sync_at is None else None


def _passes(config: SyncConfiguration, filters: ListSyncConfigurationsRequest | None) -> bool:
    if filters is None:
        return True
    return (
        filters.connection_id in (None, config.connection_id)
        and filters.status in (None, config.status)
        and filters.is_active in (None, config.is_active)
    )


def _listing_key(record: SyncRecord) -> tuple[datetime, int]:
    return record.config.created_at or _OLDEST, record.seq


def _encode_cursor(record: SyncRecord) -> str:
    created_at, seq = _listing_key(record)
    return base64.urlsafe_b64encode(f"{seq}|{created_at.isoformat()}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        seq, _, created = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().partition("|")
        created_at = datetime.fromisoformat(created)
        if created_at.tzinfo is None:
            raise ValueError("cursor timestamp has no zone")
        return created_at, int(seq)
    except ValueError as exc:  # covers binascii.Error and UnicodeDecodeError
        raise ApiError(
            400, "Invalid cursor: pass pagination.next_cursor back unchanged", details={"cursor": cursor}
        ) from exc
