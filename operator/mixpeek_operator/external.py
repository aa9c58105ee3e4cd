"""The Mixpeek side of a `BucketSync` (crossplane-runtime's ExternalClient): find the remote
sync an object owns, create, replace, update, trigger, delete or release it, and say what
of it the status shows.

Every remote write is reported as an Event through the reconcile's recorder, since only
this side knows what it changed; conditions, status and the order of the steps are the
reconcile's (reconcile.py). Identity lives in `status.syncConfigId` and in the ownership
marker every remote sync carries in its metadata (re-sent by every PATCH: desired.patch_for).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from mixpeek_operator import desired
from mixpeek_operator.api.v1alpha1 import BucketSyncSpec, RemoteStatus, ReplacementPolicy, SyncMetrics
from mixpeek_operator.constants import OWNER_REF_KEY, OWNER_UID_KEY, ConditionType, Reason
from mixpeek_operator.credentials import Credentials, CredentialStore
from mixpeek_operator.keys import ListingScope, ObjectKey
from mixpeek_operator.managed import KubeWriter, ObjectState
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
from mixpeek_operator.status import ConditionUpdate, EventKind


class RemoteCache(Protocol):
    """The observer's view of remote syncs, per (credential, namespace, bucket)."""

    def join(self, obj: ObjectKey, group: ListingScope, client: MixpeekClient) -> None: ...

    async def lookup(
        self, group: ListingScope, sync_id: str
    ) -> SyncConfiguration | Literal["unknown"] | None: ...

    async def owned(self, group: ListingScope, uid: str, ref: str) -> list[SyncConfiguration] | None:
        """The bucket's syncs marked as this object's (its uid, or its namespace/name with any uid),
        newest first; None when there is no listing yet (then the caller lists)."""

    def remember(self, group: ListingScope, sync: SyncConfiguration) -> None: ...

    def forget(self, group: ListingScope, sync_id: str) -> None: ...


class Wiring(Protocol):
    """What this side uses of the reconcile's context (reconcile.ReconcileContext)."""

    @property
    def writer(self) -> KubeWriter: ...

    @property
    def credentials(self) -> CredentialStore: ...

    @property
    def client_for(self) -> Callable[[Credentials], MixpeekClient]: ...

    @property
    def remote(self) -> RemoteCache: ...

    @property
    def on_drift_corrected(self) -> Callable[[str], None]: ...

    @property
    def create_attempts(self) -> set[str]: ...


Recorder = Callable[[EventKind, str, str], None]


class Stalled(Exception):
    """Only a human can fix this (the reconcile reports it as `Stalled=True`)."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def classify(error: MixpeekError) -> tuple[Reason, bool]:
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


def retry_after(error: MixpeekError) -> float | None:
    """How long the server asked us to wait (429 Retry-After), if it did."""
    return error.retry_after if isinstance(error, APIStatusError) else None


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


async def connect(obj: ObjectState, spec: BucketSyncSpec, wiring: Wiring, record: Recorder) -> External:
    """Resolve the object's credentials (CredentialError when they cannot be) and its client."""
    creds = await wiring.credentials.resolve(
        obj.key, spec.credentials_ref.name if spec.credentials_ref else None, spec.mixpeek_namespace
    )
    return External(
        obj=obj,
        spec=spec,
        wiring=wiring,
        record=record,
        creds=creds,
        client=wiring.client_for(creds),
        scope=ListingScope(creds.fingerprint, creds.namespace, spec.bucket_id),
        recorded=ListingScope(
            creds.fingerprint,
            obj.status.mixpeek_namespace or creds.namespace,
            obj.status.bucket_id or spec.bucket_id,
        ),
    )


@dataclass(frozen=True)
class External:
    """One object's remote side for one reconcile (what `connect` returns)."""

    obj: ObjectState
    spec: BucketSyncSpec
    wiring: Wiring
    record: Recorder
    creds: Credentials
    client: MixpeekClient
    scope: ListingScope  # where the spec wants the remote sync
    recorded: ListingScope  # where status says it lives (differs while it moves)

    def join(self) -> None:
        """Join the scope's shared listing: starts (or reuses) it; lookups wait for it."""
        self.wiring.remote.join(self.obj.key, self.scope, self.client)

    # --- observe ---------------------------------------------------------------------------

    async def observe(self) -> SyncConfiguration | None:
        """The remote sync this object owns (or is told to adopt); None means create one."""
        obj, spec = self.obj, self.spec
        known_id = obj.status.sync_config_id
        if known_id:
            self.wiring.create_attempts.discard(obj.uid)  # its create is on record
            remote = await self._fetch(self.recorded, known_id)
            if remote is not None:
                await self._check_owner(remote)
                return remote
            if spec.sync_config_id == known_id:
                raise Stalled(
                    Reason.REMOTE_NOT_FOUND,
                    f"adopted remote sync {known_id} no longer exists; spec.syncConfigId is immutable, so "
                    "recreate this object without it to let the operator create a new remote sync",
                )
            self.record(
                "Normal", "Recreated", f"remote sync {known_id} was deleted out of band; creating a new one"
            )
            return None
        if spec.sync_config_id:
            remote = await self._fetch(self.scope, spec.sync_config_id)
            if remote is None:
                raise Stalled(
                    Reason.REMOTE_NOT_FOUND,
                    f"spec.syncConfigId {spec.sync_config_id} not found in bucket {spec.bucket_id}",
                )
            await self._check_owner(remote)
            self.record("Normal", "Adopted", f"adopted existing remote sync {spec.sync_config_id}")
            return remote
        found = await self._owned(self.scope, fresh=obj.uid in self.wiring.create_attempts)
        if found is not None:
            self.wiring.create_attempts.discard(obj.uid)  # found, and now in the remote cache
            await self._check_owner(found)
            self.record(
                "Normal",
                "Adopted",
                f"found remote sync {found.sync_config_id} created for this object; adopted it",
            )
        return found

    async def observe_only(self) -> SyncConfiguration:
        """The remote sync an `ObserveOnly` object watches (admission requires its id)."""
        spec = self.spec
        assert spec.sync_config_id is not None
        remote = await self._fetch(self.scope, spec.sync_config_id)
        if remote is None:
            raise Stalled(
                Reason.REMOTE_NOT_FOUND,
                f"remote sync {spec.sync_config_id} not found in bucket {spec.bucket_id} "
                "(managementPolicy ObserveOnly never creates one)",
            )
        return remote

    async def _owned(self, scope: ListingScope, *, fresh: bool) -> SyncConfiguration | None:
        """The newest remote sync in `scope` marked as this object's: the one an earlier create
        made, or the old one of a manifest re-applied after a cluster was rebuilt.

        Why an object never gets two remote syncs, with no write before the POST: `create` is
        reached only after this found nothing. The shared listing read here was fetched by this
        process after it started, so it holds every sync an earlier process created before it
        died. The one create it may predate is this process's own: `create` marks the object in
        `create_attempts` before the POST and clears the mark once the answer is in the cache,
        or was a refusal (4xx: nothing was created). A mark that stays means the outcome is
        unknown (a timeout, a 5xx), and then (`fresh`) the connection is listed again, after
        that POST, so a sync the server did create is found and adopted. One reconcile per
        object at a time (workqueue.py) keeps two passes from both getting past this lookup.
        """
        remote, connection_id = self.wiring.remote, self.spec.connection_id
        # Without a shared listing (not listed since this process started: its first listing
        # failed, e.g. under 429s, or is still under way) a listing of this connection alone,
        # rather than waiting for the shared one.
        candidates = None if fresh else await remote.owned(scope, self.obj.uid, self.obj.ref)
        if candidates is None:
            listing = await self.client.list_all_syncs(
                scope.bucket, ListSyncConfigurationsRequest(connection_id=connection_id)
            )
            candidates = listing.syncs
            for sync in candidates:
                remote.remember(scope, sync)
        for sync in candidates:  # newest first
            if sync.connection_id == connection_id and self._is_ours(sync):
                return sync
        return None

    def _is_ours(self, remote: SyncConfiguration) -> bool:
        uid, ref = desired.owner_of(remote)
        return uid == self.obj.uid or (uid is not None and ref == self.obj.ref)

    async def _check_owner(self, remote: SyncConfiguration) -> None:
        """A remote sync marked as another live object's is a conflict, never silently shared."""
        uid, ref = desired.owner_of(remote)
        if uid is None or uid == self.obj.uid:
            return
        namespace, _, name = (ref or "").partition("/")
        if name and await self.wiring.writer.owner_exists(namespace, name, uid):
            raise Stalled(
                Reason.OWNERSHIP_CONFLICT,
                f"remote sync {remote.sync_config_id} is managed by BucketSync {ref} (uid {uid})",
            )
        # The marked owner is gone (deleted with deletionPolicy Orphan, or a rebuilt cluster): take over.

    async def _fetch(self, scope: ListingScope, sync_id: str) -> SyncConfiguration | None:
        """The remote sync: from the fresh cache when possible, else a GET (None when it is gone)."""
        cache = self.wiring.remote
        cached = await cache.lookup(scope, sync_id)
        if cached != "unknown":
            return cached
        try:
            remote = await self.client.get_sync(scope.bucket, sync_id)
        except NotFoundError:
            cache.forget(scope, sync_id)
            return None
        cache.remember(scope, remote)
        return remote

    def identity(self, remote: SyncConfiguration) -> dict[str, Any]:
        """The status fields that say where the remote sync lives."""
        return {
            "sync_config_id": remote.sync_config_id,
            "bucket_id": self.spec.bucket_id,
            "mixpeek_namespace": self.creds.namespace,
        }

    def observation(self, remote: SyncConfiguration) -> dict[str, Any]:
        """The status fields that show the remote sync (crossplane's `status.atProvider`)."""
        block, metrics = remote_status_block(remote)
        return {
            **self.identity(remote),
            "remote": block,
            "metrics": metrics,
            "credentials_fingerprint": self.creds.fingerprint,
        }

    # --- create, replace, update, trigger ------------------------------------------------

    async def create(self) -> SyncConfiguration:
        obj, spec, attempts = self.obj, self.spec, self.wiring.create_attempts
        try:
            request = desired.create_request(spec, obj.owner)
        except desired.SpecConversionError as exc:
            raise Stalled(Reason.INVALID_SPEC, str(exc)) from exc
        attempts.add(obj.uid)  # until the answer is known: see `_owned`
        try:
            remote = await self.client.create_sync(spec.bucket_id, request)
        except APIStatusError as exc:
            # A 4xx answer is a refusal, and the client repeats a create only where the server
            # surely did nothing: no sync to look for (no list per retry under 429s).
            if exc.status_code < 500:
                attempts.discard(obj.uid)
            raise
        self.wiring.remote.remember(self.scope, remote)
        attempts.discard(obj.uid)
        self.record(
            "Normal", "Created", f"created remote sync {remote.sync_config_id} in bucket {spec.bucket_id}"
        )
        return remote

    async def replace_if_needed(self, remote: SyncConfiguration) -> SyncConfiguration | None:
        """Create-only changes (and a move to another bucket or namespace) need a new remote sync."""
        spec = self.spec
        changes = replacement_changes(spec, remote, recorded=self.recorded, wanted=self.scope)
        if not changes:
            return None
        refusal = replacement_refusal(spec, remote, changes)
        if refusal is not None:
            raise Stalled(Reason.INVALID_SPEC, refusal)
        old_id = remote.sync_config_id or ""
        await self._delete(old_id)
        new = await self.create()
        self.record(
            "Normal",
            "Recreated",
            f"replaced remote sync {old_id} with {new.sync_config_id} because {', '.join(changes)} changed",
        )
        return new

    async def update(self, remote: SyncConfiguration, *, correcting: bool) -> SyncConfiguration:
        """PATCH exactly the patchable fields that differ, then match the pause state.

        `correcting`: the object had converged, so a difference is an out-of-band change.
        """
        obj, spec, client, cache = self.obj, self.spec, self.client, self.wiring.remote
        sync_id = remote.sync_config_id or ""
        drift = desired.drift(spec, obj.owner, remote)
        update = desired.patch_for(spec, obj.owner, remote)
        if update is not None:
            remote = await client.update_sync(spec.bucket_id, sync_id, update)
            cache.remember(self.scope, remote)
            fields = sorted({d.field for d in drift if d.remote_field in update.model_fields_set})
            if correcting:
                for name in fields:
                    self.wiring.on_drift_corrected(name)
                what = ", ".join(fields)
                self.record("Normal", "DriftCorrected", f"corrected out-of-band changes to {what}")
            else:
                self.record("Normal", "Updated", f"updated remote sync {sync_id}: {', '.join(fields)}")
        if desired.pause_action(spec, remote) is not None:
            remote = await (client.pause_sync if spec.paused else client.resume_sync)(spec.bucket_id, sync_id)
            cache.remember(self.scope, remote)
            verb = "Paused" if spec.paused else "Resumed"
            if correcting:
                self.wiring.on_drift_corrected("spec.paused")
                self.record(
                    "Normal",
                    "DriftCorrected",
                    f"remote pause state was changed out of band; {verb.lower()} it",
                )
            else:
                self.record("Normal", verb, f"{verb.lower()} remote sync {sync_id}")
        return remote

    async def trigger(self, sync_id: str) -> None:
        job = await self.client.trigger_sync(self.spec.bucket_id, sync_id)
        job_id = job.sync_job_id or "unknown"
        self.record("Normal", "Triggered", f"triggered a run of {sync_id} (job {job_id})")

    # --- delete, release ------------------------------------------------------------------

    async def delete(self) -> None:
        """Delete the object's remote sync, found by marker if a create may have gone unrecorded."""
        sync_id = self.obj.status.sync_config_id
        if not sync_id:
            found = await self._owned(self.recorded, fresh=True)
            sync_id = found.sync_config_id if found else None
        if sync_id:
            await self._delete(sync_id)
            self.record("Normal", "Deleted", f"deleted remote sync {sync_id}")

    async def _delete(self, sync_id: str) -> None:
        with contextlib.suppress(NotFoundError):  # already gone is as good as deleted
            await self.client.delete_sync(self.recorded.bucket, sync_id)
        self.wiring.remote.forget(self.recorded, sync_id)

    async def release(self, sync_id: str) -> None:
        """Orphan: drop our ownership marker so another object can adopt the sync later."""
        bucket = self.recorded.bucket
        try:
            remote = await self.client.get_sync(bucket, sync_id)
        except NotFoundError:
            return
        marker = (OWNER_UID_KEY, OWNER_REF_KEY)
        kept = {k: v for k, v in (remote.metadata or {}).items() if k not in marker}
        if kept != remote.metadata:
            await self.client.update_sync(bucket, sync_id, SyncUpdateRequest(metadata=kept))
