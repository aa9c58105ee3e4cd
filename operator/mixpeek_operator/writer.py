"""The engine's Kubernetes writes for the reconcile (managed.KubeWriter): the finalizer, the
status subresource and Events of a `BucketSync`. Every body a write returns refreshes the
object cache, so the watch event of our own write finds nothing new to reconcile."""

from __future__ import annotations

import logging
from typing import Any, Literal, Protocol

from mixpeek_operator.constants import API_VERSION, FINALIZER, KIND
from mixpeek_operator.keys import ObjectKey
from mixpeek_operator.kube import (
    BUCKETSYNCS,
    EventType,
    JsonObject,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    ObjectReference,
    Resource,
    is_kube_outage,
)
from mixpeek_operator.managed import ObjectGone, ObjectState, StatusWriteError
from mixpeek_operator.metrics import OperatorMetrics
from mixpeek_operator.object_cache import ObjectCache
from mixpeek_operator.secret_guard import FinalizerApi

log = logging.getLogger("mixpeek_operator.engine")


class KubeApi(FinalizerApi, Protocol):
    """The Kubernetes calls the engine makes (kube.KubeClient)."""

    async def patch_status(
        self, resource: Resource, namespace: str | None, name: str, patch: JsonObject
    ) -> JsonObject: ...

    async def create_event(
        self, involved: ObjectReference, *, type: EventType, reason: str, message: str
    ) -> JsonObject: ...

    async def get_object(self, resource: Resource, namespace: str | None, name: str) -> JsonObject | None: ...


class ObjectWriter:
    """managed.KubeWriter over the Kubernetes API, keeping the object records current."""

    def __init__(self, kube: KubeApi, objects: ObjectCache, metrics: OperatorMetrics) -> None:
        self._kube = kube
        self._objects = objects
        self._metrics = metrics

    async def add_finalizer(self, obj: ObjectState) -> None:
        record = self._objects.get(obj.key)
        try:
            body = await self._kube.add_finalizer(
                BUCKETSYNCS,
                obj.namespace,
                obj.name,
                FINALIZER,
                current=record.body if record else None,
            )
        except KubeNotFound as exc:
            raise ObjectGone(str(exc)) from exc  # deleted meanwhile: its DELETED event drops the record
        if FINALIZER not in ((body.get("metadata") or {}).get("finalizers") or ()):
            raise ObjectGone("being deleted; no finalizer can be added")
        self._objects.put(body)

    async def remove_finalizer(self, obj: ObjectState) -> None:
        body = await self._kube.remove_finalizer(BUCKETSYNCS, obj.namespace, obj.name, FINALIZER)
        if body is not None:
            self._objects.put(body)

    async def patch_status(self, obj: ObjectState, patch: dict[str, Any]) -> None:
        try:
            body = await self._kube.patch_status(BUCKETSYNCS, obj.namespace, obj.name, {"status": patch})
        except KubeNotFound:
            return  # deleted meanwhile: no status to report; its DELETED event drops the record
        except KubeError as exc:
            if is_kube_outage(exc):
                raise  # the engine reports an outage once per object, not once per failed write
            raise StatusWriteError(str(exc)) from exc
        self._objects.put(body)

    async def event(
        self, obj: ObjectState, kind: Literal["Normal", "Warning"], reason: str, message: str
    ) -> None:
        self._metrics.count_event(reason)
        log.info("%s: %s", reason, message, extra={"object": obj.ref, "reason": reason})
        reference = ObjectReference(
            api_version=API_VERSION, kind=KIND, namespace=obj.namespace, name=obj.name, uid=obj.uid
        )
        try:
            await self._kube.create_event(reference, type=kind, reason=reason, message=message)
        except Exception as exc:  # an Event is best effort; never fail a reconcile for it
            # During an outage the reconcile's own failed write reports it, once.
            level = logging.DEBUG if isinstance(exc, KubeError) and is_kube_outage(exc) else logging.WARNING
            log.log(level, "could not post event %s: %s", reason, exc, extra={"object": obj.ref})

    async def owner_exists(self, namespace: str, name: str, uid: str) -> bool:
        cached = self._objects.get(ObjectKey(namespace, name))
        if cached is not None:
            return bool((cached.body.get("metadata") or {}).get("uid") == uid)
        try:
            body = await self._kube.get_object(BUCKETSYNCS, namespace, name)
        except KubeForbidden:
            # A namespace we may not read: assume the owner lives rather than take its sync.
            return True
        return body is not None and (body.get("metadata") or {}).get("uid") == uid
