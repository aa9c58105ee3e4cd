"""One level-based, idempotent reconcile of a `BucketSync`: desired spec vs observed
remote sync → the remote calls that close the gap → the new status. No kopf here.

The decision flow of crossplane-runtime's managed reconciler: deletion and the finalizer,
the management and deletion policies, the reconcile-paused annotation, then observe →
create or replace → update → trigger, and the conditions each outcome ends in. The
Mixpeek side is external.py (how a remote sync is found, created, changed and deleted);
status writes and Events are status.py's `StatusReport`. The same function serves every
trigger (a watch event, a request annotation, a Secret change, a remote change seen by the
observer), so behaviour never depends on what woke it up. Remote state comes from the
observer's cache of the bucket's listing when it is fresh, so a converged object costs no
remote call at all.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from mixpeek_operator import desired, external
from mixpeek_operator.api.v1alpha1 import BucketSyncSpec, BucketSyncStatus, DeletionPolicy, ManagementPolicy
from mixpeek_operator.constants import (
    RECONCILE_PAUSED,
    RECONCILE_REQUESTED_AT,
    TRIGGER_REQUESTED_AT,
    Reason,
)
from mixpeek_operator.credentials import CredentialError, Credentials, CredentialStore
from mixpeek_operator.keys import ListingScope
from mixpeek_operator.managed import KubeWriter as KubeWriter
from mixpeek_operator.managed import ObjectGone as ObjectGone
from mixpeek_operator.managed import ObjectState as ObjectState
from mixpeek_operator.managed import StatusWriteError as StatusWriteError
from mixpeek_operator.mixpeek import (
    BadRequestError,
    MixpeekClient,
    MixpeekError,
    NotFoundError,
    UnprocessableEntityError,
)
from mixpeek_operator.mixpeek.models import SyncConfiguration
from mixpeek_operator.status import StatusReport, reconcile_paused, retrying, settled, stalled

log = logging.getLogger("mixpeek_operator.reconcile")

# How long to wait before retrying with credentials Mixpeek rejected; a Secret change retries at once.
AUTH_RETRY_SECONDS = 300.0


@dataclass
class ReconcileContext:
    writer: KubeWriter
    credentials: CredentialStore
    client_for: Callable[[Credentials], MixpeekClient]
    remote: external.RemoteCache
    now: Callable[[], datetime]
    on_drift_corrected: Callable[[str], None] = lambda field_name: None
    # uids whose remote create this process sent but has not yet seen recorded (external.py)
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


@dataclass
class _Run:
    """State of one reconcile pass."""

    obj: ObjectState
    ctx: ReconcileContext
    report: StatusReport
    remote_id: str | None = None  # the remote sync this pass is working on, once found
    group: ListingScope | None = None
    handled: dict[str, Any] = field(default_factory=dict)  # request echoes for the final write

    async def connect(self, spec: BucketSyncSpec) -> external.External:
        return await external.connect(self.obj, spec, self.ctx, self.report.event)


async def reconcile(obj: ObjectState, ctx: ReconcileContext) -> Outcome:
    report = StatusReport(
        before=obj.status,
        generation=obj.generation,
        now=ctx.now,
        send_patch=functools.partial(ctx.writer.patch_status, obj),
        send_event=functools.partial(ctx.writer.event, obj),
        status=obj.status,
        stored=obj.stored_status,
    )
    run = _Run(obj=obj, ctx=ctx, report=report)
    try:
        if obj.deleting:
            return await _finalize(run)
        if needs_finalizer(obj) and not obj.has_finalizer:
            # First, before any remote call: whatever this pass finds or creates, deleting the
            # object must reach it (a finalizer someone stripped is restored here too).
            await ctx.writer.add_finalizer(obj)
        if obj.annotations.get(RECONCILE_PAUSED, "").strip().lower() == "true":
            await report.write(reconcile_paused(obj.status), observed=False, extra={})
            return Outcome(result="paused")
        return await _converge(run)
    except StatusWriteError as exc:
        log.warning("status not written, will retry: %s", exc, extra={"object": obj.ref})
        return Outcome(result="error")
    except ObjectGone:
        log.debug("deleted while being reconciled", extra={"object": obj.ref})
        report.events.clear()  # about an object that no longer exists
        return Outcome(result="deleted")
    except asyncio.CancelledError:
        # The work was cancelled (leadership or shard lost): another replica may be working on
        # this object now, so not one more write, not even the Events of what was done.
        report.events.clear()
        raise
    finally:
        await report.post_events()


def needs_finalizer(obj: ObjectState) -> bool:
    """Whether a live object must hold our finalizer: `Full` objects own (or may own, or come to
    own) a remote sync whose deletion or release (Orphan) deletion must reach. `ObserveOnly` ones
    never write remotely, deletion included; a switch to `Full` adds it before the first write."""
    return obj.spec is not None and obj.spec.management_policy == ManagementPolicy.FULL


def pending_trigger(annotations: Mapping[str, str], status: BucketSyncStatus) -> str | None:
    """The trigger annotation's value when it has not been handled yet (one run per value)."""
    trigger = annotations.get(TRIGGER_REQUESTED_AT)
    return trigger if trigger and status.last_handled_trigger_at != trigger else None


async def _converge(run: _Run) -> Outcome:
    obj, report = run.obj, run.report
    try:
        if obj.spec is None:
            raise external.Stalled(Reason.INVALID_SPEC, obj.spec_error or "spec is invalid")
        ext = await run.connect(obj.spec)
        run.group = ext.scope
        ext.join()
        if obj.spec.management_policy == ManagementPolicy.OBSERVE_ONLY:
            return await _observe_only(run, ext)
        return await _manage(run, ext)
    except (external.Stalled, CredentialError) as exc:
        await report.write(stalled(exc.reason, exc.message), observed=True, extra={})
        return Outcome(result="stalled")
    except MixpeekError as exc:
        reason, needs_human = external.classify(exc)
        message = str(exc)
        if isinstance(exc, NotFoundError) and run.remote_id is not None:
            # The sync vanished between our read and our write: the next pass recreates it.
            reason, needs_human = Reason.REMOTE_NOT_FOUND, False
            if run.group is not None:
                run.ctx.remote.forget(run.group, run.remote_id)
        if needs_human:
            await report.write(stalled(reason, message), observed=True, extra={})
            # Credentials and missing buckets/connections can be fixed outside this object: retry slowly.
            requeue = (
                None if isinstance(exc, BadRequestError | UnprocessableEntityError) else AUTH_RETRY_SECONDS
            )
            return Outcome(result="stalled", requeue_after=requeue)
        await report.write(retrying(reason, message, converged=obj.converged), observed=False, extra={})
        return Outcome(result="error", retry_after=external.retry_after(exc))


async def _manage(run: _Run, ext: external.External) -> Outcome:
    obj, spec = run.obj, ext.spec
    converged_before = obj.converged

    found = await ext.observe()
    remote = await ext.create() if found is None else (await ext.replace_if_needed(found) or found)
    if remote is not found:  # a new remote sync
        converged_before = False
        # Record its identity the moment it is known: at once when more remote calls follow
        # (they may fail), otherwise the final status write below carries it.
        if spec.paused != remote.paused or obj.annotations.get(TRIGGER_REQUESTED_AT):
            await run.report.patch(run.report.status.model_copy(update=ext.identity(remote)))

    sync_id = run.remote_id = remote.sync_config_id or ""
    remote = await ext.update(remote, correcting=converged_before)
    trigger = pending_trigger(obj.annotations, obj.status)
    if trigger:
        await ext.trigger(sync_id)
        run.handled["last_handled_trigger_at"] = trigger

    remaining = desired.drift(spec, obj.owner, remote)
    reason = Reason.PAUSED if spec.paused else Reason.SYNCED
    message = f"remote sync {sync_id} matches generation {obj.generation}"
    if spec.paused:
        message = f"remote sync {sync_id} is paused as requested (generation {obj.generation})"
    await _write_final(run, ext, remote, remaining, reason, message)
    return Outcome(result="success", ready=True, group=ext.scope)


async def _observe_only(run: _Run, ext: external.External) -> Outcome:
    obj, spec = run.obj, ext.spec
    remote = await ext.observe_only()
    drift = desired.drift(spec, obj.owner, remote)
    if spec.paused != remote.paused:
        drift.append(
            desired.FieldDiff("spec.paused", "paused", json.dumps(spec.paused), json.dumps(remote.paused))
        )
    message = f"observing remote sync {remote.sync_config_id} (ObserveOnly)"
    if drift:
        message += f"; {len(drift)} field(s) differ from spec, see status.drift"
    await _write_final(run, ext, remote, drift, Reason.SYNCED, message)
    return Outcome(result="success", ready=True, group=ext.scope)


async def _write_final(
    run: _Run,
    ext: external.External,
    remote: SyncConfiguration,
    drift: list[desired.FieldDiff],
    ready_reason: Reason,
    ready_message: str,
) -> None:
    requested = run.obj.annotations.get(RECONCILE_REQUESTED_AT)
    extra: dict[str, Any] = {
        **ext.observation(remote),
        "drift": [entry.to_status() for entry in drift] or None,
        **({"last_handled_reconcile_at": requested} if requested else {}),
        **run.handled,
    }
    updates = settled(ready_reason, ready_message, external.remote_health(remote))
    await run.report.write(updates, observed=True, extra=extra)


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
            await (await run.connect(spec)).delete()
        except (CredentialError, MixpeekError) as exc:
            return await _deletion_blocked(run, exc)
    await run.ctx.writer.remove_finalizer(obj)
    return Outcome(result="deleted")


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
        await (await run.connect(spec)).release(sync_id)
    except (CredentialError, MixpeekError) as exc:
        note = f"; its ownership marker could not be removed ({exc})"
    message = f"left remote sync {sync_id} in place (deletionPolicy Orphan){note}"
    run.report.event("Normal", "Orphaned", message)


async def _deletion_blocked(run: _Run, exc: CredentialError | MixpeekError) -> Outcome:
    message = (
        f"cannot delete remote sync {run.obj.status.sync_config_id or '(unknown id)'}: {exc}. "
        "Fix the credentials, or set spec.deletionPolicy: Orphan to leave the remote sync in place"
    )
    if isinstance(exc, CredentialError) or external.classify(exc)[1]:
        reason = exc.reason if isinstance(exc, CredentialError) else external.classify(exc)[0]
        await run.report.write(stalled(reason, message), observed=False, extra={})
        return Outcome(result="stalled", requeue_after=AUTH_RETRY_SECONDS)
    updates = retrying(Reason.DELETING, message, converged=run.obj.converged)
    await run.report.write(updates, observed=False, extra={})
    return Outcome(result="error", retry_after=external.retry_after(exc))
