"""The keys the operator indexes its state by, defined once."""

from __future__ import annotations

from typing import NamedTuple


class ObjectKey(NamedTuple):
    """A `BucketSync` (or any namespaced object) by namespace and name."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class ListingScope(NamedTuple):
    """What one remote listing covers: a credential, a Mixpeek namespace and a bucket."""

    credential: str  # the credential's fingerprint, never the key itself
    mixpeek_namespace: str
    bucket: str
