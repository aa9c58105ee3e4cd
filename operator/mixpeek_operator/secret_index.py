"""Which credentials Secret each `BucketSync` names, and which objects name each Secret.

The one place the object → Secret relation is derived (`named_secret_of`) and kept
(`SecretIndex`). The engine owns one index and shares it with its users:

- the credential store (credentials.py): a Secret's dependents are reconciled again when it
  changes, and its cached content (the API key) leaves memory with its last dependent;
- the Secret guard (secret_guard.py): a Secret keeps its in-use finalizer while an object of
  this process names it ("still used?" is a set lookup, never a scan of every object);
- sharding (coordination/ring.py): an object's shard key is keyed by the Secret it names.

An object that names no Secret of its own uses the operator-wide default Secret; the index
keeps it under `None` (`DEFAULT`), so that the guard, which never marks the default Secret,
and the credential store, which depends on it, both read the same entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from typing import Any, Final

from mixpeek_operator.keys import ObjectKey

SecretRef = tuple[str, str]  # (namespace, name)
NamedSecret = SecretRef | None  # None: the operator-wide default Secret
DEFAULT: Final[NamedSecret] = None


def named_secret(namespace: str, credentials_ref: str | None) -> NamedSecret:
    """The Secret `spec.credentialsRef.name` names in the object's namespace (None: the default)."""
    return (namespace, credentials_ref) if credentials_ref else DEFAULT


def named_secret_of(body: Mapping[str, Any]) -> NamedSecret:
    """The Secret a `BucketSync` body names (None: the default), from its spec alone."""
    spec = body.get("spec") or {}
    ref = spec.get("credentialsRef") if isinstance(spec, Mapping) else None
    name = ref.get("name") if isinstance(ref, Mapping) else None
    return named_secret(str((body.get("metadata") or {}).get("namespace", "")), str(name) if name else None)


class SecretIndex:
    """object → the Secret it names, Secret → the objects naming it; both kept in one step.

    Listeners hear when the last object naming a Secret went (deleted, or now naming
    another), synchronously, so per-Secret state is pruned with its last user."""

    def __init__(self) -> None:
        self._secret_of: dict[ObjectKey, NamedSecret] = {}
        self._objects_naming: dict[NamedSecret, set[ObjectKey]] = {}
        self._on_unused: list[Callable[[NamedSecret], None]] = []

    def on_unused(self, listener: Callable[[NamedSecret], None]) -> None:
        self._on_unused.append(listener)

    def record(self, obj: ObjectKey, secret: NamedSecret) -> NamedSecret:
        """`obj` names `secret` now; returns the Secret it named before (None: the default or none)."""
        known = obj in self._secret_of
        previous = self._secret_of.get(obj)
        if known and previous == secret:
            return previous
        if known:
            self._leave(obj, previous)
        self._secret_of[obj] = secret
        self._objects_naming.setdefault(secret, set()).add(obj)
        return previous

    def forget(self, obj: ObjectKey) -> NamedSecret:
        """`obj` is gone; returns the Secret it named (None: the default or none)."""
        if obj not in self._secret_of:
            return DEFAULT
        previous = self._secret_of.pop(obj)
        self._leave(obj, previous)
        return previous

    def _leave(self, obj: ObjectKey, secret: NamedSecret) -> None:
        objects = self._objects_naming[secret]
        objects.discard(obj)
        if objects:
            return
        del self._objects_naming[secret]
        for listener in self._on_unused:
            listener(secret)

    def objects_naming(self, secret: NamedSecret) -> Set[ObjectKey]:
        return self._objects_naming.get(secret, frozenset())

    def is_named(self, secret: NamedSecret) -> bool:
        return secret in self._objects_naming

    def knows(self, obj: ObjectKey) -> bool:
        return obj in self._secret_of

    def named_secrets(self) -> int:
        """How many distinct Secrets are named (the default not counted)."""
        return len(self._objects_naming) - (DEFAULT in self._objects_naming)

    def objects_naming_their_own(self) -> int:
        """How many objects name a Secret of their own (not the default)."""
        return len(self._secret_of) - len(self.objects_naming(DEFAULT))

    def sizes(self) -> dict[str, int]:
        """How many entries each internal map holds (the soak benchmark checks they stay bounded)."""
        return {
            "secret_index.objects": len(self._secret_of),
            "secret_index.secrets": len(self._objects_naming),
        }
