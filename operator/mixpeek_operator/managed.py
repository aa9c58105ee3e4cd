"""The managed object as a reconcile sees it, and the Kubernetes writes made on it
(crossplane-runtime's `resource.Managed` and its client). Generic: nothing of Mixpeek here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from mixpeek_operator import desired
from mixpeek_operator.api.v1alpha1 import BucketSyncSpec, BucketSyncStatus, ConditionStatus
from mixpeek_operator.constants import FINALIZER, ConditionType
from mixpeek_operator.keys import ObjectKey
from mixpeek_operator.status import find_condition, parse_status


@dataclass(frozen=True)
class ObjectState:
    """The parts of a `BucketSync` the reconcile reads.

    Its annotations are interpreted in reconcile.py only, where the lean cache's test finds
    every one the reconcile reads.
    """

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


class StatusWriteError(Exception):
    """`KubeWriter.patch_status` was refused by the API server; the reconcile is retried with backoff."""


class ObjectGone(Exception):
    """`KubeWriter.add_finalizer` found the object deleted (or being deleted) while it was being
    reconciled: there is nothing left to do, and no remote call may follow."""


class KubeWriter(Protocol):
    """The Kubernetes writes a reconcile makes; each returns nothing the reconcile needs.

    `patch_status` raises StatusWriteError when the API server refuses the write; an outage (no
    answer, 429, 5xx) propagates as the Kubernetes error, which the engine reports once per outage.
    `add_finalizer` raises ObjectGone when the object no longer exists or is being deleted.
    """

    async def add_finalizer(self, obj: ObjectState) -> None: ...

    async def remove_finalizer(self, obj: ObjectState) -> None: ...

    async def patch_status(self, obj: ObjectState, patch: dict[str, Any]) -> None: ...

    async def event(
        self, obj: ObjectState, kind: Literal["Normal", "Warning"], reason: str, message: str
    ) -> None: ...

    async def owner_exists(self, namespace: str, name: str, uid: str) -> bool: ...
