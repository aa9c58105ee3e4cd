"""One level-based, idempotent reconcile of a `BucketSync`: desired spec vs observed
remote sync → the remote calls that close the gap → the new status. No kopf here.

The same function serves every trigger (a watch event, a request annotation, a
Secret change, a remote change seen by the observer), so behaviour never depends on
what woke it up. Design notes:

- Remote state comes from the observer's cache of the bucket's list (one paged list
  per credential, namespace and bucket) when it is fresh; a GET is made only when it
  is not, so a converged object costs no remote call at all.
- Create is crash-safe without a human, and costs no extra write. Our finalizer is on
  the object before the POST (added at admission by the chart's MutatingAdmissionPolicy,
  or by us when it is missing), so a remote sync never exists without it. Before
  creating, an object with no `status.syncConfigId` is matched (by the ownership marker
  in the remote metadata) against the bucket's listing, which this process fetched
  after it started: so after any earlier attempt by a process that has since died. An
  attempt by this process whose outcome is unknown (a POST that timed out) is the one
  case the listing may predate: those objects are remembered (`create_attempts`) and
  looked up with a fresh list by connection. The same check adopts the old remote sync
  when a manifest is re-applied after a cluster was rebuilt.
- Every PATCH re-sends the ownership marker (Mixpeek replaces metadata wholesale).
- Status is written only when its JSON changes; Events only on transitions.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from mixpeek_operator import desired
from mixpeek_operator.api.v1alpha1 import (
    BucketSyncSpec,
    BucketSyncStatus,
    ConditionStatus,
    DeletionPolicy,
    ManagementPolicy,
    RemoteStatus,
    ReplacementPolicy,
    SyncMetrics,
)
from mixpeek_operator.constants import (
    FINALIZER,
    OWNER_REF_KEY,
    OWNER_UID_KEY,
    RECONCILE_PAUSED,
    RECONCILE_REQUESTED_AT,
    TRIGGER_REQUESTED_AT,
    ConditionType,
    Reason,
)
from mixpeek_operator.credentials import CredentialError, Credentials, CredentialStore
from mixpeek_operator.keys import ListingScope, ObjectKey
from mixpeek_operator.mixpeek import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    MixpeekClient,
    MixpeekError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableEntityError,
)
from mixpeek_operator.mixpeek.models import (
    ListSyncConfigurationsRequest,
    SyncConfiguration,
    SyncUpdateRequest,
    TaskStatus,
)
from mixpeek_operator.status import (
    ConditionUpdate,
    apply_conditions,
    find_condition,
    merge_patch,
    parse_status,
    status_json,
)

log = logging.getLogger("mixpeek_operator.reconcile")

# How long to wait before retrying with credentials Mixpeek rejected; a Secret change retries at once.
AUTH_RETRY_SECONDS = 300.0


# Every camelCase key BucketSyncStatus knows; other keys in a stored status are left alone.
_STATUS_ALIASES = frozenset(field.alias or name for name, field in BucketSyncStatus.model_fields.items())


# --- the object ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectState:
    """The parts of a `BucketSync` the reconcile reads."""

    namespace: str
    name: str
    uid: str
    generation: int
    annotations: Mapping[str, str]
    finalizers: tuple[str, ...]
    deleting: bool
    spec: BucketSyncSpec | None
    spec_error: str | None
    status: BucketSyncStatus
    stored_status: Mapping[str, Any]  # the JSON as stored: the base of our minimal patches

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(self.namespace, self.name)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ObjectState:
        meta = body.get("metadata") or {}
        spec: BucketSyncSpec | None = None
        spec_error: str | None = None
        try:
            spec = BucketSyncSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            # Admission validates the same schema, so this only happens with a stale CRD.
            spec_error = "; ".join(
                f"spec.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
        return cls(
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation") or 0),
            annotations=dict(meta.get("annotations") or {}),
            finalizers=tuple(meta.get("finalizers") or ()),
            deleting=bool(meta.get("deletionTimestamp")),
            spec=spec,
            spec_error=spec_error,
            status=parse_status(body.get("status")),
            stored_status=dict(body.get("status") or {}),
        )

    @property
    def reconcile_paused(self) -> bool:
        return self.annotations.get(RECONCILE_PAUSED, "").strip().lower() == "true"

    @property
    def converged(self) -> bool:
        """Ready, for the current generation."""
        ready = find_condition(self.status, ConditionType.READY)
        return (
            ready is not None
            and ready.status == ConditionStatus.TRUE
            and self.status.observed_generation == self.generation
        )

    @property
    def has_finalizer(self) -> bool:
        return FINALIZER in self.finalizers

    @property
    def owner(self) -> dict[str, str]:
        return desired.owner_metadata(self.uid, self.namespace, self.name)


# --- what the reconcile talks to -----------------------------------------------------------


class StatusWriteError(Exception):
    """`KubeWriter.patch_status` was refused by the API server; the reconcile is retried with backoff."""


class KubeWriter(Protocol):
    """The Kubernetes writes a reconcile makes; each returns nothing the reconcile needs.

    `patch_status` raises StatusWriteError when the API server refuses the write; an outage (no
    answer, 429, 5xx) propagates as the Kubernetes error, which the engine reports once per outage.
    """

    async def add_finalizer(self, obj: ObjectState) -> None: ...

    async def remove_finalizer(self, obj: ObjectState) -> None: ...

    async def patch_status(self, obj: ObjectState, patch: dict[str, Any]) -> None: ...

    async def event(
        self, obj: ObjectState, kind: Literal["Normal", "Warning"], reason: str, message: str
    ) -> None: ...

    async def owner_exists(self, namespace: str, name: str, uid: str) -> bool: ...


class RemoteCache(Protocol):
    """The observer's view of remote syncs, per (credential, namespace, bucket)."""

    def join(self, obj: ObjectKey, group: ListingScope, client: MixpeekClient) -> None: ...

    async def lookup(
        self, group: ListingScope, sync_id: str
    ) -> SyncConfiguration | Literal["unknown"] | None: ...

    async def listing(self, group: ListingScope) -> list[SyncConfiguration] | None:
        """The bucket's syncs, newest first; None when there is no listing yet (then the caller lists)."""

    def remember(self, group: ListingScope, sync: SyncConfiguration) -> None: ...

    def forget(self, group: ListingScope, sync_id: str) -> None: ...


@dataclass
class ReconcileContext:
    writer: KubeWriter
    credentials: CredentialStore
    client_for: Callable[[Credentials], MixpeekClient]
    remote: RemoteCache
    now: Callable[[], datetime]
    on_drift_corrected: Callable[[str], None] = lambda field_name: None
    # uids whose remote create this process sent but has not yet seen recorded in status
    create_attempts: set[str] = field(default_factory=set)


@dataclass
class Outcome:
    result: Literal["success", "stalled", "error", "paused", "deleted"]
    # Seconds until this object must be reconciled again; None: only when something changes.
    requeue_after: float | None = None
    # The server asked us to wait this long (429 Retry-After); never retry sooner.
    retry_after: float | None = None
    ready: bool = False
    group: ListingScope | None = None


class _Stalled(Exception):
    def __init__(self, reason: Reason, message: str, *, requeue_after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.requeue_after = requeue_after


# --- helpers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Connection:
    """One object's remote side, resolved once per reconcile (crossplane-runtime's Connect)."""

    spec: BucketSyncSpec
    creds: Credentials
    client: MixpeekClient
    scope: ListingScope  # where the spec wants the remote sync
    recorded: ListingScope  # where status says it lives (differs while it moves)


async def _connect(run: _Run, spec: BucketSyncSpec) -> _Connection:
    obj, ctx = run.obj, run.ctx
    creds = await ctx.credentials.resolve(
        obj.key, spec.credentials_ref.name if spec.credentials_ref else None, spec.mixpeek_namespace
    )
    return _Connection(
        spec=spec,
        creds=creds,
        client=ctx.client_for(creds),
        scope=ListingScope(creds.fingerprint, creds.namespace, spec.bucket_id),
        recorded=ListingScope(
            creds.fingerprint,
            obj.status.mixpeek_namespace or creds.namespace,
            obj.status.bucket_id or spec.bucket_id,
        ),
    )


def remote_status_block(remote: SyncConfiguration) -> tuple[RemoteStatus, SyncMetrics]:
    """`status.remote` and `status.metrics` from the remote sync (no locks, cursors or ids)."""
    block = RemoteStatus(
        status=remote.status.value,
        is_active=remote.is_active,
        paused=remote.paused,
        last_sync_at=remote.last_sync_at,
        next_sync_at=remote.next_sync_at,
        consecutive_failures=remote.consecutive_failures,
        sync_run_counter=remote.sync_run_counter,
        last_error=(remote.last_error or None) and remote.last_error[:1000],
    )
    metrics = SyncMetrics(
        files_discovered=remote.total_files_discovered,
        files_synced=remote.total_files_synced,
        files_failed=remote.total_files_failed,
        bytes_synced=remote.total_bytes_synced,
        batches_created=remote.batches_created,
    )
    return block, metrics


def remote_health(remote: SyncConfiguration) -> ConditionUpdate:
    if remote.status == TaskStatus.FAILED:
        return ConditionUpdate(
            ConditionType.REMOTE_HEALTHY,
            "False",
            Reason.REMOTE_FAILED,
            remote.last_error or "Mixpeek reports the sync as FAILED",
        )
    if remote.status == TaskStatus.SUSPENDED and not remote.paused:
        detail = f": {remote.last_error}" if remote.last_error else ""
        return ConditionUpdate(
            ConditionType.REMOTE_HEALTHY,
            "False",
            Reason.AUTO_SUSPENDED,
            f"Mixpeek suspended the sync after {remote.consecutive_failures} consecutive failures{detail}",
        )
    return ConditionUpdate(
        ConditionType.REMOTE_HEALTHY, "True", Reason.ACTIVE, f"Mixpeek status {remote.status.value}"
    )


def _owner_of(remote: SyncConfiguration) -> tuple[str | None, str | None]:
    meta = remote.metadata or {}
    uid, ref = meta.get(OWNER_UID_KEY), meta.get(OWNER_REF_KEY)
    return (str(uid) if uid else None, str(ref) if ref else None)


# --- the reconcile -------------------------------------------------------------------------


@dataclass
class _Run:
    """State of one reconcile pass."""

    obj: ObjectState
    ctx: ReconcileContext
    status: BucketSyncStatus  # as last written to the API server
    stored: Mapping[str, Any]  # its JSON
    events: list[tuple[Literal["Normal", "Warning"], str, str]] = field(default_factory=list)
    remote_id: str | None = None  # the remote sync this pass is working on, once found
    group: ListingScope | None = None
    handled: dict[str, Any] = field(default_factory=dict)  # request echoes for the final write

    def event(self, kind: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append((kind, reason, message))


async def reconcile(obj: ObjectState, ctx: ReconcileContext) -> Outcome:
    run = _Run(obj=obj, ctx=ctx, status=obj.status, stored=obj.stored_status)
    try:
        if obj.deleting:
            return await _finalize(run)
        if obj.reconcile_paused:
            return await _reconcile_paused(run)
        return await _converge(run)
    except StatusWriteError as exc:
        log.warning("status not written, will retry: %s", exc, extra={"object": obj.ref})
        return Outcome(result="error")
    finally:
        await _post_events(run)


async def _post_events(run: _Run) -> None:
    """Post the Events collected so far (before the status that reports the same transition)."""
    pending, run.events = run.events, []
    for kind, reason, message in pending:
        await run.ctx.writer.event(run.obj, kind, reason, message)


async def _write_status(
    run: _Run, updates: list[ConditionUpdate], *, observed: bool, extra: Mapping[str, Any]
) -> None:
    """Compose the new status (`extra`: fields to set, None removes) and patch it if anything changed."""
    obj, ctx = run.obj, run.ctx
    changes = dict(extra)
    if observed:
        changes["observed_generation"] = obj.generation
    changes["conditions"] = apply_conditions(
        run.status.conditions, updates, generation=obj.generation, now=ctx.now()
    )
    new = run.status.model_copy(update=changes)
    _report_transitions(run, new)
    # Events first: whoever sees the new status finds the Event that explains it.
    await _post_events(run)
    await _patch_status(run, new)


def _report_transitions(run: _Run, new: BucketSyncStatus) -> None:
    """Warning Events for a new Stalled reason and for the remote turning unhealthy."""
    before_stalled = find_condition(run.obj.status, ConditionType.STALLED)
    after_stalled = find_condition(new, ConditionType.STALLED)
    if (
        after_stalled
        and after_stalled.status == ConditionStatus.TRUE
        and (
            not before_stalled
            or before_stalled.status != ConditionStatus.TRUE
            or before_stalled.reason != after_stalled.reason
        )
    ):
        run.event("Warning", "Stalled", f"{after_stalled.reason}: {after_stalled.message}")
    before_health = find_condition(run.obj.status, ConditionType.REMOTE_HEALTHY)
    after_health = find_condition(new, ConditionType.REMOTE_HEALTHY)
    if (
        after_health
        and after_health.status == ConditionStatus.FALSE
        and (not before_health or before_health.status != ConditionStatus.FALSE)
    ):
        run.event("Warning", str(after_health.reason), str(after_health.message))


async def _patch_status(run: _Run, new: BucketSyncStatus) -> None:
    """Send the minimal merge patch from the stored status to `new`, if there is one."""
    # Fields of a newer operator version, unknown to this model, are left as they are.
    unknown = {key: value for key, value in run.stored.items() if key not in _STATUS_ALIASES}
    stored = {**unknown, **status_json(new)}
    patch = merge_patch(run.stored, stored)
    if patch:
        await run.ctx.writer.patch_status(run.obj, patch)
    run.status, run.stored = new, stored


def _annotation_echoes(run: _Run) -> dict[str, Any]:
    requested = run.obj.annotations.get(RECONCILE_REQUESTED_AT)
    return {"last_handled_reconcile_at": requested} if requested else {}


async def _reconcile_paused(run: _Run) -> Outcome:
    updates = [
        ConditionUpdate(
            ConditionType.RECONCILE_PAUSED,
            "True",
            Reason.RECONCILE_PAUSED,
            f"annotation {RECONCILE_PAUSED}=true: the operator makes no remote calls for this object",
        )
    ]
    if find_condition(run.obj.status, ConditionType.READY) is None:
        updates.append(
            ConditionUpdate(
                ConditionType.READY, "Unknown", Reason.RECONCILE_PAUSED, "reconciliation is paused"
            )
        )
    await _write_status(run, updates, observed=False, extra={})
    return Outcome(result="paused")


def _stalled_updates(reason: Reason, message: str) -> list[ConditionUpdate]:
    return [
        ConditionUpdate(ConditionType.READY, "False", reason, message),
        ConditionUpdate(ConditionType.RECONCILING, "False", reason, message),
        ConditionUpdate(ConditionType.STALLED, "True", reason, message),
        ConditionUpdate(ConditionType.RECONCILE_PAUSED, "False", "Active", ""),
    ]


def _retry_updates(run: _Run, reason: Reason, message: str) -> list[ConditionUpdate]:
    updates = [
        ConditionUpdate(ConditionType.RECONCILING, "True", reason, message),
        ConditionUpdate(ConditionType.STALLED, "False", reason, ""),
        ConditionUpdate(ConditionType.RECONCILE_PAUSED, "False", "Active", ""),
    ]
    if not run.obj.converged:  # a blip does not un-ready an object whose generation already converged
        updates.append(ConditionUpdate(ConditionType.READY, "False", reason, message))
    return updates


def _classify(error: MixpeekError) -> tuple[Reason, bool]:
    """(reason, needs a human)."""
    # A 404 here names the bucket or connection of the spec (a missing sync is handled
    # where it is looked up), so it is the spec that needs fixing.
    if isinstance(error, BadRequestError | UnprocessableEntityError | NotFoundError):
        return Reason.INVALID_SPEC, True
    if isinstance(error, AuthenticationError | PermissionDeniedError):
        return Reason.AUTH_FAILED, True
    if isinstance(error, RateLimitError):
        return Reason.RATE_LIMITED, False
    return Reason.PROGRESSING_WITH_RETRY, False


async def _converge(run: _Run) -> Outcome:
    obj = run.obj
    try:
        if obj.spec is None:
            raise _Stalled(Reason.INVALID_SPEC, obj.spec_error or "spec is invalid")
        conn = await _connect(run, obj.spec)
        run.group = conn.scope
        # Joining the scope starts (or reuses) its listing, which lookups wait for.
        run.ctx.remote.join(obj.key, conn.scope, conn.client)
        if obj.spec.management_policy == ManagementPolicy.OBSERVE_ONLY:
            return await _observe_only(run, conn)
        return await _manage(run, conn)
    except _Stalled as stalled:
        await _write_status(run, _stalled_updates(stalled.reason, stalled.message), observed=True, extra={})
        return Outcome(result="stalled", requeue_after=stalled.requeue_after)
    except CredentialError as exc:
        await _write_status(run, _stalled_updates(exc.reason, exc.message), observed=True, extra={})
        return Outcome(result="stalled")
    except MixpeekError as exc:
        reason, needs_human = _classify(exc)
        message = str(exc)
        if isinstance(exc, NotFoundError) and run.remote_id is not None:
            # The sync vanished between our read and our write: the next pass recreates it.
            reason, needs_human = Reason.REMOTE_NOT_FOUND, False
            if run.group is not None:
                run.ctx.remote.forget(run.group, run.remote_id)
        if needs_human:
            await _write_status(run, _stalled_updates(reason, message), observed=True, extra={})
            # Credentials and missing buckets/connections can be fixed outside this object: retry slowly.
            requeue = (
                None if isinstance(exc, BadRequestError | UnprocessableEntityError) else AUTH_RETRY_SECONDS
            )
            return Outcome(result="stalled", requeue_after=requeue)
        await _write_status(run, _retry_updates(run, reason, message), observed=False, extra={})
        retry_after = exc.retry_after if isinstance(exc, APIStatusError) else None
        return Outcome(result="error", retry_after=retry_after)


async def _fetch(
    run: _Run, client: MixpeekClient, scope: ListingScope, sync_id: str
) -> SyncConfiguration | None:
    """The remote sync: from the fresh cache when possible, else a GET (None when it is gone)."""
    cached = await run.ctx.remote.lookup(scope, sync_id)
    if cached != "unknown":
        return cached
    try:
        remote = await client.get_sync(scope.bucket, sync_id)
    except NotFoundError:
        run.ctx.remote.forget(scope, sync_id)
        return None
    run.ctx.remote.remember(scope, remote)
    return remote


async def _observe_only(run: _Run, conn: _Connection) -> Outcome:
    obj, spec = run.obj, conn.spec
    assert spec.sync_config_id is not None  # admission requires it for ObserveOnly
    remote = await _fetch(run, conn.client, conn.scope, spec.sync_config_id)
    if remote is None:
        raise _Stalled(
            Reason.REMOTE_NOT_FOUND,
            f"remote sync {spec.sync_config_id} not found in bucket {spec.bucket_id} "
            "(managementPolicy ObserveOnly never creates one)",
        )
    drift = desired.drift(spec, obj.owner, remote)
    if spec.paused != remote.paused:
        drift.append(
            desired.FieldDiff("spec.paused", "paused", _json_bool(spec.paused), _json_bool(remote.paused))
        )
    message = f"observing remote sync {remote.sync_config_id} (ObserveOnly)"
    if drift:
        message += f"; {len(drift)} field(s) differ from spec, see status.drift"
    await _write_final(run, conn, remote, drift, Reason.SYNCED, message)
    return Outcome(result="success", ready=True, group=conn.scope)


def _json_bool(value: bool) -> str:
    return "true" if value else "false"


async def _write_final(
    run: _Run,
    conn: _Connection,
    remote: SyncConfiguration,
    drift: list[desired.FieldDiff],
    ready_reason: Reason,
    ready_message: str,
) -> None:
    remote_block, metrics = remote_status_block(remote)
    updates = [
        ConditionUpdate(ConditionType.READY, "True", ready_reason, ready_message),
        ConditionUpdate(ConditionType.RECONCILING, "False", "Succeeded", ""),
        ConditionUpdate(ConditionType.STALLED, "False", "Succeeded", ""),
        remote_health(remote),
        ConditionUpdate(ConditionType.RECONCILE_PAUSED, "False", "Active", ""),
    ]
    extra: dict[str, Any] = {
        "sync_config_id": remote.sync_config_id,
        "bucket_id": conn.spec.bucket_id,
        "mixpeek_namespace": conn.creds.namespace,
        "remote": remote_block,
        "metrics": metrics,
        "drift": [entry.to_status() for entry in drift] or None,
        "credentials_fingerprint": conn.creds.fingerprint,
        **_annotation_echoes(run),
    }
    extra.update(run.handled)
    await _write_status(run, updates, observed=True, extra=extra)


async def _manage(run: _Run, conn: _Connection) -> Outcome:
    obj, ctx = run.obj, run.ctx
    spec, client, group = conn.spec, conn.client, conn.scope
    converged_before = obj.converged

    remote = await _locate(run, conn)
    if remote is None:
        remote = await _create(run, conn)
        converged_before = False
    else:
        replaced = await _replace_if_needed(run, conn, remote)
        if replaced is not None:
            remote = replaced
            converged_before = False

    sync_id = run.remote_id = remote.sync_config_id or ""
    # Patchable fields: one PATCH with exactly the fields that differ.
    drift = desired.drift(spec, obj.owner, remote)
    update = desired.patch_for(spec, obj.owner, remote)
    if update is not None:
        remote = await client.update_sync(spec.bucket_id, sync_id, update)
        ctx.remote.remember(group, remote)
        fields = sorted({d.field for d in drift if d.remote_field in update.model_fields_set})
        if converged_before:
            for name in fields:
                ctx.on_drift_corrected(name)
            run.event("Normal", "DriftCorrected", f"corrected out-of-band changes to {', '.join(fields)}")
        else:
            run.event("Normal", "Updated", f"updated remote sync {sync_id}: {', '.join(fields)}")

    # Pause state: spec.paused drives /pause and /resume.
    if desired.pause_action(spec, remote) is not None:
        remote = await (client.pause_sync if spec.paused else client.resume_sync)(spec.bucket_id, sync_id)
        ctx.remote.remember(group, remote)
        verb = "Paused" if spec.paused else "Resumed"
        if converged_before:
            ctx.on_drift_corrected("spec.paused")
            run.event(
                "Normal", "DriftCorrected", f"remote pause state was changed out of band; {verb.lower()} it"
            )
        else:
            run.event("Normal", verb, f"{verb.lower()} remote sync {sync_id}")

    # Trigger: once per distinct annotation value.
    trigger = pending_trigger(obj.annotations, obj.status)
    if trigger:
        job = await client.trigger_sync(spec.bucket_id, sync_id)
        run.event("Normal", "Triggered", f"triggered a run of {sync_id} (job {job.sync_job_id or 'unknown'})")
        run.handled["last_handled_trigger_at"] = trigger

    remaining = desired.drift(spec, obj.owner, remote)
    reason = Reason.PAUSED if spec.paused else Reason.SYNCED
    message = f"remote sync {sync_id} matches generation {obj.generation}"
    if spec.paused:
        message = f"remote sync {sync_id} is paused as requested (generation {obj.generation})"
    await _write_final(run, conn, remote, remaining, reason, message)
    return Outcome(result="success", ready=True, group=group)


async def _locate(run: _Run, conn: _Connection) -> SyncConfiguration | None:
    """Find the remote sync this object owns (or is told to adopt); None means create one."""
    obj, ctx, spec = run.obj, run.ctx, conn.spec
    known_id = obj.status.sync_config_id
    if known_id:
        ctx.create_attempts.discard(obj.uid)
        remote = await _fetch(run, conn.client, conn.recorded, known_id)
        if remote is not None:
            await _check_owner(run, remote)
            return remote
        if spec.sync_config_id == known_id:
            raise _Stalled(
                Reason.REMOTE_NOT_FOUND,
                f"adopted remote sync {known_id} no longer exists; spec.syncConfigId is immutable, so "
                "recreate this object without it to let the operator create a new remote sync",
            )
        run.event(
            "Normal", "Recreated", f"remote sync {known_id} was deleted out of band; creating a new one"
        )
        return None
    if spec.sync_config_id:
        remote = await _fetch(run, conn.client, conn.scope, spec.sync_config_id)
        if remote is None:
            raise _Stalled(
                Reason.REMOTE_NOT_FOUND,
                f"spec.syncConfigId {spec.sync_config_id} not found in bucket {spec.bucket_id}",
            )
        await _check_owner(run, remote)
        run.event("Normal", "Adopted", f"adopted existing remote sync {spec.sync_config_id}")
        return remote
    # No identity yet. A previous attempt may have created it, or the object may be a
    # re-applied manifest whose old remote sync still exists (see the module docstring).
    found = await _find_owned(run, conn, conn.scope, fresh=obj.uid in ctx.create_attempts)
    if found is not None:
        ctx.create_attempts.discard(obj.uid)  # found, and now in the remote cache
        await _check_owner(run, found)
        run.event(
            "Normal",
            "Adopted",
            f"found remote sync {found.sync_config_id} created for this object; adopted it",
        )
    return found


def _is_ours(remote: SyncConfiguration, obj: ObjectState) -> bool:
    uid, ref = _owner_of(remote)
    return uid == obj.uid or (uid is not None and ref == obj.ref)


async def _find_owned(
    run: _Run, conn: _Connection, scope: ListingScope, *, fresh: bool
) -> SyncConfiguration | None:
    """The newest remote sync in `scope` marked as this object's: listed now, or from the cache."""
    remote, connection_id = run.ctx.remote, conn.spec.connection_id
    # The bucket's shared listing when there is one; without it (not listed since this process
    # started: its first listing failed, e.g. under 429s, or is still under way) a listing of
    # this connection alone, rather than waiting for the shared one.
    candidates = None if fresh else await remote.listing(scope)
    if candidates is None:
        listing = await conn.client.list_all_syncs(
            scope.bucket, ListSyncConfigurationsRequest(connection_id=connection_id)
        )
        candidates = listing.syncs
        for sync in candidates:
            remote.remember(scope, sync)
    for sync in candidates:  # newest first
        if sync.connection_id == connection_id and _is_ours(sync, run.obj):
            return sync
    return None


async def _check_owner(run: _Run, remote: SyncConfiguration) -> None:
    """A remote sync marked as another live object's is a conflict, never silently shared."""
    uid, ref = _owner_of(remote)
    obj = run.obj
    if uid is None or uid == obj.uid:
        return
    namespace, _, name = (ref or "").partition("/")
    if name and await run.ctx.writer.owner_exists(namespace, name, uid):
        raise _Stalled(
            Reason.OWNERSHIP_CONFLICT,
            f"remote sync {remote.sync_config_id} is managed by BucketSync {ref} (uid {uid})",
        )
    # The marked owner is gone (deleted with deletionPolicy Orphan, or a rebuilt cluster): take over.


async def _create(run: _Run, conn: _Connection) -> SyncConfiguration:
    obj, ctx, spec = run.obj, run.ctx, conn.spec
    if not obj.has_finalizer:
        await ctx.writer.add_finalizer(obj)  # no remote sync may exist without our finalizer
    try:
        request = desired.create_request(spec, obj.owner)
    except desired.SpecConversionError as exc:
        raise _Stalled(Reason.INVALID_SPEC, str(exc)) from exc
    ctx.create_attempts.add(obj.uid)  # until the answer is in the remote cache
    try:
        remote = await conn.client.create_sync(spec.bucket_id, request)
    except APIStatusError as exc:
        # A 4xx answer is a refusal, and the client repeats a create only where the server
        # surely did nothing: no sync to look for (no list per retry under 429s).
        if exc.status_code < 500:
            ctx.create_attempts.discard(obj.uid)
        raise
    ctx.remote.remember(conn.scope, remote)
    ctx.create_attempts.discard(obj.uid)
    run.event("Normal", "Created", f"created remote sync {remote.sync_config_id} in bucket {spec.bucket_id}")
    # Record the identity the moment it is known: at once when more remote calls follow
    # (they may fail), otherwise the final status write right after this carries it.
    if spec.paused != remote.paused or obj.annotations.get(TRIGGER_REQUESTED_AT):
        identity = {
            "sync_config_id": remote.sync_config_id,
            "bucket_id": spec.bucket_id,
            "mixpeek_namespace": conn.creds.namespace,
        }
        await _patch_status(run, run.status.model_copy(update=identity))
    return remote


def pending_trigger(annotations: Mapping[str, str], status: BucketSyncStatus) -> str | None:
    """The trigger annotation's value when it has not been handled yet (one run per value)."""
    trigger = annotations.get(TRIGGER_REQUESTED_AT)
    return trigger if trigger and status.last_handled_trigger_at != trigger else None


def replacement_changes(
    spec: BucketSyncSpec, remote: SyncConfiguration, *, recorded: ListingScope, wanted: ListingScope
) -> list[str]:
    """Spec paths whose change only a new remote sync can carry out (create-only fields, a move)."""
    changes = [d.field for d in desired.create_only_differences(spec, remote)]
    if recorded.bucket != wanted.bucket:
        changes.append("spec.bucketId")
    if recorded.mixpeek_namespace != wanted.mixpeek_namespace:
        changes.append("spec.mixpeekNamespace")
    return changes


def replacement_refusal(spec: BucketSyncSpec, remote: SyncConfiguration, changes: list[str]) -> str | None:
    """Why `changes` may not replace the remote sync (Reject, or an adopted sync), or None: recreate."""
    what = ", ".join(changes)
    if spec.replacement_policy == ReplacementPolicy.REJECT:
        return (
            f"{what} differ(s) from remote sync {remote.sync_config_id}, and replacementPolicy is Reject; "
            "set replacementPolicy: Recreate to replace the remote sync"
        )
    if spec.sync_config_id:
        return (
            f"{what} differ(s) from the adopted remote sync {spec.sync_config_id}; "
            "an adopted sync is never replaced"
        )
    return None


async def _replace_if_needed(
    run: _Run, conn: _Connection, remote: SyncConfiguration
) -> SyncConfiguration | None:
    """Create-only changes (and a move to another bucket or namespace) need a new remote sync."""
    spec = conn.spec
    changes = replacement_changes(spec, remote, recorded=conn.recorded, wanted=conn.scope)
    if not changes:
        return None
    what = ", ".join(changes)
    refusal = replacement_refusal(spec, remote, changes)
    if refusal is not None:
        raise _Stalled(Reason.INVALID_SPEC, refusal)
    old_id = remote.sync_config_id or ""
    with contextlib.suppress(NotFoundError):  # already gone is as good as deleted
        await conn.client.delete_sync(conn.recorded.bucket, old_id)
    run.ctx.remote.forget(conn.recorded, old_id)
    new = await _create(run, conn)
    run.event(
        "Normal",
        "Recreated",
        f"replaced remote sync {old_id} with {new.sync_config_id} because {what} changed",
    )
    return new


# --- deletion ------------------------------------------------------------------------------


async def _finalize(run: _Run) -> Outcome:
    obj = run.obj
    run.ctx.create_attempts.discard(obj.uid)
    if not obj.has_finalizer:
        return Outcome(result="deleted")
    spec = obj.spec
    if spec is None or spec.management_policy == ManagementPolicy.OBSERVE_ONLY:
        pass  # never ours to delete
    elif spec.deletion_policy == DeletionPolicy.ORPHAN:
        await _orphan(run, spec)
    else:
        try:
            await _delete_remote(run, spec)
        except (CredentialError, MixpeekError) as exc:
            return await _deletion_blocked(run, exc)
    await run.ctx.writer.remove_finalizer(obj)
    return Outcome(result="deleted")


async def _delete_remote(run: _Run, spec: BucketSyncSpec) -> None:
    conn = await _connect(run, spec)
    sync_id = run.obj.status.sync_config_id
    if not sync_id:  # a create may have happened without being recorded
        found = await _find_owned(run, conn, conn.recorded, fresh=True)
        sync_id = found.sync_config_id if found else None
    if sync_id:
        with contextlib.suppress(NotFoundError):  # already gone is as good as deleted
            await conn.client.delete_sync(conn.recorded.bucket, sync_id)
        run.ctx.remote.forget(conn.recorded, sync_id)
        run.event("Normal", "Deleted", f"deleted remote sync {sync_id}")


async def _orphan(run: _Run, spec: BucketSyncSpec) -> None:
    """Leave the remote sync; release our ownership marker if Mixpeek can still be reached.

    Orphaning never waits on credentials: it is the documented way out of a deletion that
    is stuck on them. Without them, the marker stays (a later adopter takes over a sync
    whose marked owner no longer exists anyway).
    """
    sync_id = run.obj.status.sync_config_id
    if not sync_id:
        return
    note = ""
    try:
        conn = await _connect(run, spec)
        await _release(conn.client, conn.recorded.bucket, sync_id)
    except (CredentialError, MixpeekError) as exc:
        note = f"; its ownership marker could not be removed ({exc})"
    run.event("Normal", "Orphaned", f"left remote sync {sync_id} in place (deletionPolicy Orphan){note}")


async def _deletion_blocked(run: _Run, exc: CredentialError | MixpeekError) -> Outcome:
    message = (
        f"cannot delete remote sync {run.obj.status.sync_config_id or '(unknown id)'}: {exc}. "
        "Fix the credentials, or set spec.deletionPolicy: Orphan to leave the remote sync in place"
    )
    if isinstance(exc, CredentialError) or _classify(exc)[1]:
        reason = exc.reason if isinstance(exc, CredentialError) else _classify(exc)[0]
        await _write_status(run, _stalled_updates(reason, message), observed=False, extra={})
        return Outcome(result="stalled", requeue_after=AUTH_RETRY_SECONDS)
    await _write_status(run, _retry_updates(run, Reason.DELETING, message), observed=False, extra={})
    retry_after = exc.retry_after if isinstance(exc, APIStatusError) else None
    return Outcome(result="error", retry_after=retry_after)


async def _release(client: MixpeekClient, bucket: str, sync_id: str) -> None:
    """Orphan: drop our ownership marker so another object can adopt the sync later."""
    try:
        remote = await client.get_sync(bucket, sync_id)
    except NotFoundError:
        return
    kept = {k: v for k, v in (remote.metadata or {}).items() if k not in (OWNER_UID_KEY, OWNER_REF_KEY)}
    if kept != remote.metadata:
        await client.update_sync(bucket, sync_id, SyncUpdateRequest(metadata=kept))
