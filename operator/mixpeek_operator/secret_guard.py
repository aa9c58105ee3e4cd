"""An in-use finalizer on credentials Secrets, so a Secret outlives the objects that need it.

Tools that remove a Secret and its `BucketSync` together (`helm uninstall`, an Argo CD or
Flux prune, `kubectl delete -f`) delete the Secret first or at the same moment. Without
the Secret the operator could not delete the remote sync, and the object would wait for a
human. Crossplane solves the same problem for its ProviderConfigs with a usage finalizer;
this is that pattern for the Secrets named by `spec.credentialsRef`:

- before an object is reconciled (so before any remote create), its Secret gets the
  finalizer `mixpeek.com/secret-in-use`;
- a Secret deleted while in use stays readable (Terminating) until no `BucketSync` of
  its namespace names it any more — deleting ones included, since they need it to delete
  their remote sync — and then the finalizer is removed and the Secret goes;
- whether a Secret is still in use is decided by listing the namespace's `BucketSync`s
  from the API, never from this process's memory alone, so a restart cannot release a
  Secret too early. The objects of this process naming it (the engine's `SecretIndex`, see
  secret_index.py) only spare that listing while one is known to.

The operator-wide default Secret never gets the finalizer: it belongs to the operator's
own release, which would otherwise never uninstall. The only Secret write is this
finalizer (a JSON patch of `metadata.finalizers` pinned to the resourceVersion read).

With several replicas only one may write: releases are triggered by watch events every
replica sees, so `may_release` (the leader, or with sharding the replica owning the Secret)
is asked right before each write. A release another replica may not make yet is deferred and
tried again by `release_deferred` when this replica starts working (it became the leader, or
its shard ownership changed), so a Secret whose last user went during a failover is still
released.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from mixpeek_operator.constants import SECRET_IN_USE_FINALIZER
from mixpeek_operator.keys import ObjectKey
from mixpeek_operator.kube import BUCKETSYNCS, SECRETS, JsonObject, KubeError, KubeNotFound, Resource
from mixpeek_operator.secret_index import SecretIndex, SecretRef, named_secret_of

log = logging.getLogger("mixpeek_operator.secret_guard")


class FinalizerApi(Protocol):
    """Finalizer edits of kube.KubeClient (the engine's on BucketSyncs, the guard's on Secrets)."""

    async def add_finalizer(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        finalizer: str,
        *,
        current: JsonObject | None = None,
    ) -> JsonObject: ...

    async def remove_finalizer(
        self, resource: Resource, namespace: str | None, name: str, finalizer: str
    ) -> JsonObject | None: ...


class SecretGuardApi(FinalizerApi, Protocol):
    """The Kubernetes calls the guard makes (kube.KubeClient)."""

    async def list_objects(self, resource: Resource, namespace: str | None = None) -> list[JsonObject]: ...


class SecretUseGuard:
    def __init__(
        self,
        kube: SecretGuardApi,
        may_release: Callable[[SecretRef], bool] = lambda ref: True,
        index: SecretIndex | None = None,
    ) -> None:
        self._kube = kube
        self._may_release = may_release
        # Which Secret each object names and the objects naming each Secret: "still used?" is a
        # set lookup, not a scan of every use (a bulk delete would be quadratic).
        self.index = SecretIndex() if index is None else index
        self._protected: set[SecretRef] = set()  # known to carry the finalizer
        self._deferred: set[SecretRef] = set()  # releases another replica was to make
        # One mark per Secret at a time: a bulk create of many objects naming one Secret
        # would otherwise read (and maybe patch) that Secret once per concurrent reconcile.
        # A lock lives only while a mark is under way or awaited (`_marking_waiters`).
        self._marking: dict[SecretRef, asyncio.Lock] = {}
        self._marking_waiters: dict[SecretRef, int] = {}

    def use_index(self, index: SecretIndex) -> None:
        """Share `index` (the engine's, shared with the credential store), from the start."""
        if index is not self.index:
            assert not self.index.sizes()["secret_index.objects"], "an index in use is not replaced"
            self.index = index

    def sizes(self) -> dict[str, int]:
        """How many entries each internal map holds (the soak benchmark checks they stay bounded);
        uses and use counts are the index as the guard sees it (the default Secret left out)."""
        return {
            "guard.uses": self.index.objects_naming_their_own(),
            "guard.use_counts": self.index.named_secrets(),
            "guard.protected": len(self._protected),
            "guard.deferred": len(self._deferred),
            "guard.marking": len(self._marking),
        }

    async def protect(self, obj: ObjectKey, body: Mapping[str, Any]) -> None:
        """Before reconciling `obj`: its Secret carries the finalizer (best effort, never raises)."""
        ref = named_secret_of(body)
        previous = self.index.record(obj, ref)
        if previous is not None and previous != ref:
            await self.release_if_unused(previous)
        deleting = bool((body.get("metadata") or {}).get("deletionTimestamp"))
        if ref is None or ref in self._protected or deleting:
            return
        self._marking_waiters[ref] = self._marking_waiters.get(ref, 0) + 1
        try:
            async with self._marking.setdefault(ref, asyncio.Lock()):
                await self._mark(ref)
        finally:
            self._marking_waiters[ref] -= 1
            if not self._marking_waiters[ref]:
                del self._marking_waiters[ref]
                del self._marking[ref]

    async def _mark(self, ref: SecretRef) -> None:
        if ref in self._protected:
            return  # marked by another reconcile while this one waited
        try:
            await self._kube.add_finalizer(SECRETS, ref[0], ref[1], SECRET_IN_USE_FINALIZER)
        except KubeNotFound:
            return  # the reconcile reports the missing Secret; its creation triggers a retry
        except KubeError as exc:
            # Not fatal (for example RBAC without secrets/patch): only uninstall order suffers.
            log.warning("could not mark Secret %s/%s as in use: %s", *ref, exc)
            return
        self._protected.add(ref)

    async def object_gone(self, obj: ObjectKey, body: Mapping[str, Any] | None = None) -> None:
        """`obj` no longer exists: its Secret may be released. `body`, its last known state, names
        the Secret when this replica never reconciled it (a standby, another shard's object)."""
        ref = self.index.forget(obj)
        if ref is None and body is not None:
            ref = named_secret_of(body)
        if ref is not None:
            await self.release_if_unused(ref)

    async def secret_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        ref: SecretRef = (meta.get("namespace", ""), meta.get("name", ""))
        carries = SECRET_IN_USE_FINALIZER in (meta.get("finalizers") or [])
        if event_type == "DELETED" or not carries:
            self._protected.discard(ref)
            self._deferred.discard(ref)  # nothing left to release
            return
        self._protected.add(ref)
        if meta.get("deletionTimestamp"):
            await self.release_if_unused(ref)

    async def release_deferred(self) -> None:
        """Make the releases deferred while another replica was to make them, where we now may."""
        for ref in sorted(self._deferred):
            if self._may_release(ref):
                self._deferred.discard(ref)
                await self.release_if_unused(ref)

    async def release_if_unused(self, ref: SecretRef) -> None:
        """Remove the finalizer if no `BucketSync` of the Secret's namespace names it."""
        if self.index.is_named(ref):
            return
        if not self._may_release(ref):
            self._deferred.add(ref)
            return
        try:
            objects = await self._kube.list_objects(BUCKETSYNCS, ref[0])
            if any(named_secret_of(obj) == ref for obj in objects):
                return
            if not self._may_release(ref):  # asked again right before the write (fencing)
                self._deferred.add(ref)
                return
            await self._kube.remove_finalizer(SECRETS, ref[0], ref[1], SECRET_IN_USE_FINALIZER)
        except KubeError as exc:
            log.warning("could not release Secret %s/%s: %s", *ref, exc)
            return
        self._protected.discard(ref)
        log.info("Secret %s/%s is no longer used by any BucketSync; released it", *ref)
