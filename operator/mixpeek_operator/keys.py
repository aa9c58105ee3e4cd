"""The keys the operator indexes its state by, defined once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple


class ObjectKey(NamedTuple):
    """A `BucketSync` (or any namespaced object) by namespace and name."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def key_of(body: Mapping[str, Any]) -> ObjectKey:
    """The key of an object's body (its namespace and name)."""
    meta = body.get("metadata") or {}
    return ObjectKey(meta.get("namespace", ""), meta.get("name", ""))


class ListingScope(NamedTuple):
    """What one remote listing covers: a credential, a Mixpeek namespace and a bucket."""

    credential: str  # the credential's fingerprint, never the key itself
    mixpeek_namespace: str
    bucket: str
