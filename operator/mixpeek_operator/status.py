"""Status bookkeeping: conditions, the condition sets a reconcile ends in, the minimal merge
patch between two statuses, and one reconcile's status writes and Events (`StatusReport`).

Status is read once into `BucketSyncStatus` and written as its camelCase JSON dump, the
form the API server stores; what we compare is exactly what we would write, so a status
patch is sent only when that JSON changes. Events are posted only on transitions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError

from mixpeek_operator.api.v1alpha1 import BucketSyncStatus, Condition, ConditionStatus
from mixpeek_operator.constants import RECONCILE_PAUSED, ConditionType, Reason

# Conditions are always written in this order, so equal content means equal JSON.
CONDITION_ORDER: tuple[ConditionType, ...] = (
    ConditionType.READY,
    ConditionType.RECONCILING,
    ConditionType.STALLED,
    ConditionType.REMOTE_HEALTHY,
    ConditionType.RECONCILE_PAUSED,
)

MESSAGE_MAX_LENGTH = 1024


@dataclass(frozen=True)
class ConditionUpdate:
    type: ConditionType
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str


def apply_conditions(
    current: Iterable[Condition] | None,
    updates: Iterable[ConditionUpdate],
    *,
    generation: int,
    now: datetime,
) -> list[Condition]:
    """New condition list: `lastTransitionTime` moves only when a condition's status flips."""
    by_type = {c.type: c for c in current or []}
    for update in updates:
        previous = by_type.get(update.type)
        flipped = previous is None or previous.status != update.status
        kept = None if flipped or previous is None else previous.last_transition_time
        by_type[update.type] = Condition(
            type=str(update.type),
            status=ConditionStatus(update.status),
            reason=update.reason,
            message=update.message[:MESSAGE_MAX_LENGTH],
            last_transition_time=kept or now.astimezone(UTC).replace(microsecond=0),
            observed_generation=generation,
        )
    ordered = [by_type.pop(kind) for kind in CONDITION_ORDER if kind in by_type]
    # Conditions written by someone else are kept, after ours.
    return ordered + [by_type[key] for key in sorted(by_type)]


def find_condition(status: BucketSyncStatus | None, kind: ConditionType) -> Condition | None:
    for condition in (status.conditions if status else None) or []:
        if condition.type == kind:
            return condition
    return None


def status_json(status: BucketSyncStatus) -> dict[str, Any]:
    """The status as the API server stores it (camelCase, no nulls)."""
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def parse_status(raw: Mapping[str, Any] | None) -> BucketSyncStatus:
    """The stored status; one that does not parse (a hand edit) counts as empty and is rewritten."""
    try:
        return BucketSyncStatus.model_validate(raw or {})
    except ValidationError:
        return BucketSyncStatus()


def merge_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """The smallest RFC 7386 merge patch turning `old` into `new` (lists are replaced whole)."""
    old = old or {}
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            nested = merge_patch(before, value)
            if nested:
                patch[key] = nested
        elif key not in old or before != value:
            patch[key] = value
    return patch


# --- the condition sets a reconcile ends in ----------------------------------------------------


def settled(reason: str, message: str, *more: ConditionUpdate) -> list[ConditionUpdate]:
    """Ready: the work is done for this generation (`more`: e.g. the remote's health)."""
    return [
        ConditionUpdate(ConditionType.READY, "True", reason, message),
        ConditionUpdate(ConditionType.RECONCILING, "False", "Succeeded", ""),
        ConditionUpdate(ConditionType.STALLED, "False", "Succeeded", ""),
        *more,
        ConditionUpdate(ConditionType.RECONCILE_PAUSED, "False", "Active", ""),
    ]


def stalled(reason: str, message: str) -> list[ConditionUpdate]:
    """Only a human can fix it."""
    return [
        ConditionUpdate(ConditionType.READY, "False", reason, message),
        ConditionUpdate(ConditionType.RECONCILING, "False", reason, message),
        ConditionUpdate(ConditionType.STALLED, "True", reason, message),
        ConditionUpdate(ConditionType.RECONCILE_PAUSED, "False", "Active", ""),
    ]


def retrying(reason: str, message: str, *, converged: bool) -> list[ConditionUpdate]:
    """Still being worked on; a blip does not un-ready an object whose generation already converged."""
    updates = [
        ConditionUpdate(ConditionType.RECONCILING, "True", reason, message),
        ConditionUpdate(ConditionType.STALLED, "False", reason, ""),
        ConditionUpdate(ConditionType.RECONCILE_PAUSED, "False", "Active", ""),
    ]
    if not converged:
        updates.append(ConditionUpdate(ConditionType.READY, "False", reason, message))
    return updates


def reconcile_paused(status: BucketSyncStatus) -> list[ConditionUpdate]:
    """The request annotation holds the object: Ready stays as last observed (Unknown if never)."""
    updates = [
        ConditionUpdate(
            ConditionType.RECONCILE_PAUSED,
            "True",
            Reason.RECONCILE_PAUSED,
            f"annotation {RECONCILE_PAUSED}=true: the operator makes no remote calls for this object",
        )
    ]
    if find_condition(status, ConditionType.READY) is None:
        updates.append(
            ConditionUpdate(
                ConditionType.READY, "Unknown", Reason.RECONCILE_PAUSED, "reconciliation is paused"
            )
        )
    return updates


# --- one reconcile's writes --------------------------------------------------------------------

EventKind = Literal["Normal", "Warning"]

# Every camelCase key BucketSyncStatus knows; other keys in a stored status are left alone.
_STATUS_ALIASES = frozenset(info.alias or name for name, info in BucketSyncStatus.model_fields.items())


@dataclass
class StatusReport:
    """One reconcile's status writes and Events (crossplane-runtime's status and event recorder).

    Events are collected as the work happens and posted before the status write that reports
    the same transition, so whoever sees the new status finds the Event that explains it.
    """

    before: BucketSyncStatus  # as read when the reconcile started: transitions are judged against it
    generation: int
    now: Callable[[], datetime]
    send_patch: Callable[[dict[str, Any]], Awaitable[None]]
    send_event: Callable[[EventKind, str, str], Awaitable[None]]
    status: BucketSyncStatus  # as last written to the API server
    stored: Mapping[str, Any]  # its JSON
    events: list[tuple[EventKind, str, str]] = field(default_factory=list)

    def event(self, kind: EventKind, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))

    async def post_events(self) -> None:
        """Post the Events collected so far."""
        pending, self.events = self.events, []
        for kind, reason, message in pending:
            await self.send_event(kind, reason, message)

    async def write(
        self, updates: list[ConditionUpdate], *, observed: bool, extra: Mapping[str, Any]
    ) -> None:
        """Compose the new status (`extra`: fields to set, None removes) and patch it if anything changed."""
        changes = dict(extra)
        if observed:
            changes["observed_generation"] = self.generation
        changes["conditions"] = apply_conditions(
            self.status.conditions, updates, generation=self.generation, now=self.now()
        )
        new = self.status.model_copy(update=changes)
        self._report_transitions(new)
        await self.post_events()
        await self.patch(new)

    async def patch(self, new: BucketSyncStatus) -> None:
        """Send the minimal merge patch from the stored status to `new`, if there is one."""
        # Fields of a newer operator version, unknown to this model, are left as they are.
        unknown = {key: value for key, value in self.stored.items() if key not in _STATUS_ALIASES}
        stored = {**unknown, **status_json(new)}
        patch = merge_patch(self.stored, stored)
        if patch:
            await self.send_patch(patch)
        self.status, self.stored = new, stored

    def _report_transitions(self, new: BucketSyncStatus) -> None:
        """Warning Events for a new Stalled reason and for the remote turning unhealthy."""
        before_stalled = find_condition(self.before, ConditionType.STALLED)
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
            self.event("Warning", "Stalled", f"{after_stalled.reason}: {after_stalled.message}")
        before_health = find_condition(self.before, ConditionType.REMOTE_HEALTHY)
        after_health = find_condition(new, ConditionType.REMOTE_HEALTHY)
        if (
            after_health
            and after_health.status == ConditionStatus.FALSE
            and (not before_health or before_health.status != ConditionStatus.FALSE)
        ):
            self.event("Warning", str(after_health.reason), str(after_health.message))
