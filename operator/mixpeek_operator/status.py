"""Status bookkeeping: conditions, and the minimal merge patch between two statuses.

Status is handled as the camelCase JSON the API server stores, so what we compare is
exactly what we would write: a status patch is sent only when this JSON changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with second precision, as Kubernetes writes it."""
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ConditionUpdate:
    type: ConditionType
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str


def tri_state(value: bool | None) -> str:
    return "Unknown" if value is None else ("True" if value else "False")


def apply_conditions(
    current: Iterable[Mapping[str, Any]] | None,
    updates: Iterable[ConditionUpdate],
    *,
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """New condition list: `lastTransitionTime` moves only when a condition's status flips."""
    by_type = {str(c.get("type")): dict(c) for c in current or []}
    for update in updates:
        previous = by_type.get(update.type)
        flipped = previous is None or previous.get("status") != update.status
        by_type[update.type] = {
            "type": str(update.type),
            "status": update.status,
            "reason": update.reason,
            "message": update.message[:MESSAGE_MAX_LENGTH],
            "lastTransitionTime": timestamp(now)
            if flipped or not previous or not previous.get("lastTransitionTime")
            else previous["lastTransitionTime"],
            "observedGeneration": generation,
        }
    ordered = [by_type.pop(kind) for kind in CONDITION_ORDER if kind in by_type]
    # Conditions written by someone else are kept, after ours.
    return ordered + [by_type[key] for key in sorted(by_type)]


def find_condition(status: Mapping[str, Any] | None, kind: ConditionType) -> Mapping[str, Any] | None:
    for condition in (status or {}).get("conditions") or []:
        if condition.get("type") == kind:
            found: Mapping[str, Any] = condition
            return found
    return None


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
