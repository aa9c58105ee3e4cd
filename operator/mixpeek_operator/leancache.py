"""What the object cache keeps of a `BucketSync`: only what the reconcile and the engine read.

Like controller-runtime's cache transforms (`cache.Options.DefaultTransform`,
`TransformStripManagedFields`): the API server sends every object with its
`managedFields` (one entry per field manager: the user's apply, the operator's status
and finalizer writes), the `kubectl.kubernetes.io/last-applied-configuration`
annotation (a second copy of the whole manifest) and whatever labels and annotations
tools add. None of it is read here, and at 10,000 objects it is most of the cache.

The keys of what is kept are interned: JSON parsing makes a new string for every key
of every object ("lastTransitionTime" once per condition per object), and a few hundred
bytes of keys per object are shared instead.

Kept: identity and ordering (`name`, `namespace`, `uid`, `resourceVersion`,
`generation`, `creationTimestamp`), deletion (`deletionTimestamp`, `finalizers`), the
request annotations that drive a reconcile, and `spec` and `status` whole (the status
diff must see everything the operator wrote, or it would write again).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, Final

from mixpeek_operator.constants import RECONCILE_PAUSED, RECONCILE_REQUESTED_AT, TRIGGER_REQUESTED_AT

# The annotations the reconcile reads; every other annotation is dropped from the cache.
READ_ANNOTATIONS: Final = (RECONCILE_REQUESTED_AT, TRIGGER_REQUESTED_AT, RECONCILE_PAUSED)
_KEPT_METADATA: Final = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "finalizers",
)


def lean_body(body: Mapping[str, Any], *, intern_keys: bool = True) -> dict[str, Any]:
    """A copy of `body` with only what the operator reads (see the module docstring)."""
    meta = body.get("metadata") or {}
    kept: dict[str, Any] = {key: meta[key] for key in _KEPT_METADATA if key in meta}
    annotations = meta.get("annotations") or {}
    read = {name: annotations[name] for name in READ_ANNOTATIONS if name in annotations}
    if read:
        kept["annotations"] = read
    lean: dict[str, Any] = {"metadata": kept}
    for part in ("spec", "status"):
        if part in body:
            lean[part] = _with_interned_keys(body[part]) if intern_keys else body[part]
    return lean


def _with_interned_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {sys.intern(key): _with_interned_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_interned_keys(item) for item in value]
    return value
