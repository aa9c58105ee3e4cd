"""Status bookkeeping: conditions, and the minimal merge patch between two statuses.

Status is read once into `BucketSyncStatus` and written as its camelCase JSON dump, the
form the API server stores; what we compare is exactly what we would write, so a status
patch is sent only when that JSON changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from mixpeek_operator.api.v1alpha1 import BucketSyncStatus, Condition, ConditionStatus
from mixpeek_operator.constants import ConditionType

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
