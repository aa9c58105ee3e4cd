"""The engine's cache of `BucketSync` objects: one record per object, kept current by watch
events and by the bodies our own writes return, and what each record's last reconcile acted on.

An event whose `trigger_snapshot` equals what the last reconcile acted on needs no reconcile:
our own status writes never wake an object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from mixpeek_operator.constants import FINALIZER, ConditionType
from mixpeek_operator.keys import ObjectKey, key_of
from mixpeek_operator.leancache import READ_ANNOTATIONS, lean_body


def _resource_version(body: Mapping[str, Any]) -> int | None:
    # Opaque by contract, etcd revisions in practice; when it is not a number, do not order.
    value = str((body.get("metadata") or {}).get("resourceVersion") or "")
    return int(value) if value.isdigit() else None


class TriggerSnapshot(NamedTuple):
    """What a reconcile acts on; an event that leaves it unchanged needs no reconcile."""

    uid: Any
    generation: Any
    deleting: bool
    # A finalizer someone removed is restored by a reconcile, so its removal triggers one.
    has_finalizer: bool
    # The request annotations: a change means "reconcile now"; the lean cache keeps only these.
    annotations: tuple[Any, ...]


def trigger_snapshot(body: Mapping[str, Any]) -> TriggerSnapshot:
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return TriggerSnapshot(
        meta.get("uid"),
        meta.get("generation"),
        bool(meta.get("deletionTimestamp")),
        FINALIZER in (meta.get("finalizers") or ()),
        tuple(annotations.get(name) for name in READ_ANNOTATIONS),
    )


def _ready_condition(body: Mapping[str, Any]) -> Mapping[str, Any]:
    # Read straight from the JSON: this runs for every object at every metrics scrape.
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition.get("type") == ConditionType.READY:
            found: Mapping[str, Any] = condition
            return found
    return {}


def uid_of(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("uid"))


@dataclass
class TrackedObject:
    """Everything the engine keeps about one `BucketSync`."""

    body: dict[str, Any]
    handled: TriggerSnapshot | None = None  # trigger_snapshot() of the last reconcile
    ready_reported: bool = False  # time to Ready is observed once per object
    draining: bool = False  # label shards: handed over to another replica, never reconciled here again

    def newer_than(self, body: Mapping[str, Any]) -> bool:
        held, incoming = _resource_version(self.body), _resource_version(body)
        return held is not None and incoming is not None and incoming < held

    def mark_handled(self) -> None:
        """A reconcile of the current body starts: later events are compared against it."""
        self.handled = trigger_snapshot(self.body)

    def readiness(self) -> tuple[str, str]:
        """(status, reason) of the Ready condition."""
        ready = _ready_condition(self.body)
        return (str(ready.get("status", "Unknown")), str(ready.get("reason", "")))

    def age(self, now: datetime) -> float | None:
        """Seconds since the object was created, or None when the body does not say."""
        created = (self.body.get("metadata") or {}).get("creationTimestamp")
        if not created:
            return None
        return max(0.0, (now - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds())

    def needs_reconcile(self, body: Mapping[str, Any]) -> bool:
        """Whether an event carrying `body` changed what the last reconcile acted on."""
        snapshot, handled = trigger_snapshot(body), self.handled
        if handled is not None and snapshot.has_finalizer and not handled.has_finalizer:
            # A finalizer added (by our reconcile, or at admission) is no reason to reconcile; its
            # removal is, and is compared against this from now on.
            handled = self.handled = handled._replace(has_finalizer=True)
        return handled != snapshot


class ObjectCache(dict[ObjectKey, TrackedObject]):
    """The records by object key (lean bodies: only what the operator reads)."""

    def put(self, body: Mapping[str, Any]) -> TrackedObject:
        """Cache `body` unless what we hold is newer (a late watch event); returns the record."""
        key = key_of(body)
        record = self.get(key)
        if record is None:
            record = self[key] = TrackedObject(lean_body(body))
        elif not record.newer_than(body):
            record.body = lean_body(body)
        return record

    def readiness(self, owns: Callable[[Mapping[str, Any]], bool]) -> Iterator[tuple[str, str]]:
        """(Ready status, reason) of each object `owns` accepts."""
        for record in list(self.values()):
            if owns(record.body):
                yield record.readiness()
