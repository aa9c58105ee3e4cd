"""An in-memory Kubernetes API for the in-process benchmarks (soak.py): the calls the engine and
the Secret guard make (`writer.KubeApi`, `secret_guard.SecretGuardApi`), applied the way the API
server applies them (finalizers hold a deletion, `deletionTimestamp`, resourceVersions), with
watch events delivered asynchronously through a queue, as a watch stream delivers them.

It stands in for kube-apiserver only where the question is the operator's own state over
months of churn, which a real control plane would make slow to compress into minutes; the
Mixpeek side stays the real emulator over loopback.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from mixpeek_operator.kube import EventType, JsonObject, KubeNotFound, ObjectReference, Resource

Key = tuple[str, str, str]  # (plural, namespace, name)
WatchEvent = tuple[str, str, dict[str, Any]]  # (plural, type, body)


def apply_merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """`target` with an RFC 7386 merge patch applied (as the API server applies status patches)."""
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = apply_merge_patch(merged[key], value)
        else:
            merged[key] = value
    return merged


class MemKube:
    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.watch: asyncio.Queue[WatchEvent] = asyncio.Queue()
        self.writes: Counter[str] = Counter()
        self._revision = itertools.count(1)
        self._uid = itertools.count(1)

    # --- what users do ----------------------------------------------------------------------

    def create(self, plural: str, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        meta.update(
            uid=f"uid-{next(self._uid)}",
            generation=1,
            creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        self._store(plural, body, "ADDED")

    def update(self, plural: str, namespace: str, name: str, changes: Mapping[str, Any]) -> None:
        body = self._get(plural, namespace, name)
        body.update(copy.deepcopy(dict(changes)))
        self._store(plural, body, "MODIFIED")

    def delete(self, plural: str, namespace: str, name: str) -> None:
        body = self.objects.get((plural, namespace, name))
        if body is None:
            return
        meta = body["metadata"]
        if meta.get("finalizers"):
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                self._store(plural, body, "MODIFIED")
            return
        del self.objects[(plural, namespace, name)]
        self.watch.put_nowait((plural, "DELETED", copy.deepcopy(body)))

    def count(self, plural: str) -> int:
        return sum(1 for key in self.objects if key[0] == plural)

    # --- the API the operator calls ---------------------------------------------------------

    async def add_finalizer(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        finalizer: str,
        *,
        current: JsonObject | None = None,
    ) -> JsonObject:
        body = self._get(resource.plural, namespace or "", name)
        finalizers = body["metadata"].setdefault("finalizers", [])
        if finalizer not in finalizers:
            finalizers.append(finalizer)
            self.writes["finalizer"] += 1
            self._store(resource.plural, body, "MODIFIED")
        return copy.deepcopy(body)

    async def remove_finalizer(
        self, resource: Resource, namespace: str | None, name: str, finalizer: str
    ) -> JsonObject | None:
        body = self.objects.get((resource.plural, namespace or "", name))
        if body is None:
            return None
        meta = body["metadata"]
        if finalizer in (meta.get("finalizers") or []):
            meta["finalizers"].remove(finalizer)
            self.writes["finalizer"] += 1
            if meta.get("deletionTimestamp") and not meta["finalizers"]:
                self.delete(resource.plural, namespace or "", name)
                return None
            self._store(resource.plural, body, "MODIFIED")
        return copy.deepcopy(body)

    async def patch_status(
        self, resource: Resource, namespace: str | None, name: str, patch: JsonObject
    ) -> JsonObject:
        body = self._get(resource.plural, namespace or "", name)
        body["status"] = apply_merge_patch(body.get("status") or {}, patch["status"])
        self.writes["status"] += 1
        self._store(resource.plural, body, "MODIFIED")
        return copy.deepcopy(body)

    async def create_event(
        self, involved: ObjectReference, *, type: EventType, reason: str, message: str
    ) -> JsonObject:
        self.writes["event"] += 1
        return {}

    async def get_object(self, resource: Resource, namespace: str | None, name: str) -> JsonObject | None:
        body = self.objects.get((resource.plural, namespace or "", name))
        return copy.deepcopy(body) if body is not None else None

    async def list_objects(self, resource: Resource, namespace: str | None = None) -> list[JsonObject]:
        return [
            copy.deepcopy(body)
            for (kind, ns, _), body in self.objects.items()
            if kind == resource.plural and namespace in (None, ns)
        ]

    # --- internals --------------------------------------------------------------------------

    def _get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        body = self.objects.get((plural, namespace, name))
        if body is None:
            raise KubeNotFound(404, "NotFound", f'{plural} "{name}" not found', f"{plural}/{name}")
        return body

    def _store(self, plural: str, body: dict[str, Any], event: str) -> None:
        meta = body["metadata"]
        meta["resourceVersion"] = str(next(self._revision))
        self.objects[(plural, meta["namespace"], meta["name"])] = body
        self.watch.put_nowait((plural, event, copy.deepcopy(body)))
