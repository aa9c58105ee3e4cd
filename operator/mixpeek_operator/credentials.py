"""Mixpeek credentials from Kubernetes Secrets.

A `BucketSync` names a Secret in its own namespace (`spec.credentialsRef.name`) or
falls back to the operator-wide default Secret. Secrets are read once and cached;
the Secret watch invalidates an entry the moment it changes, and the objects that
depend on it are reconciled again right away (not at the next poll). Which objects depend
on which Secret is the engine's `SecretIndex` (secret_index.py), shared with the Secret
guard; a cached Secret (its API key) leaves memory when the index says its last dependent went.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mixpeek_operator.constants import (
    DEFAULT_MIXPEEK_BASE_URL,
    SECRET_API_KEY,
    SECRET_BASE_URL,
    SECRET_NAMESPACE,
    Reason,
)
from mixpeek_operator.keys import ObjectKey
from mixpeek_operator.mixpeek import credential_fingerprint
from mixpeek_operator.secret_index import DEFAULT, NamedSecret, SecretIndex, SecretRef, named_secret

__all__ = ["CredentialError", "CredentialStore", "Credentials", "SecretRef", "fingerprint"]
SecretReader = Callable[[str, str], Awaitable[Mapping[str, Any] | None]]


class CredentialError(Exception):
    """Credentials cannot be resolved; only a human can fix it (Stalled)."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Credentials:
    api_key: str = field(repr=False)
    namespace: str
    base_url: str
    secret: SecretRef
    # Identifies the credential (key + endpoint) without revealing it; shared rate limits key on it.
    fingerprint: str

    @property
    def group_key(self) -> tuple[str, str]:
        return (self.fingerprint, self.namespace)


def fingerprint(api_key: str, base_url: str) -> str:
    """Short and non-reversible: safe for status, logs and metric labels."""
    return "sha256:" + credential_fingerprint(api_key, base_url)[:16]


def _decode(data: Mapping[str, Any], key: str) -> str | None:
    raw = data.get(key)
    if raw is None:
        return None
    try:
        return base64.b64decode(raw, validate=True).decode("utf-8").strip()
    except (ValueError, UnicodeDecodeError):
        return None


@dataclass
class _CachedSecret:
    data: dict[str, str | None]


class CredentialStore:
    def __init__(
        self,
        read_secret: SecretReader,
        *,
        default_secret: SecretRef | None,
        default_base_url: str = DEFAULT_MIXPEEK_BASE_URL,
        on_secret_value: Callable[[str], None] | None = None,
        index: SecretIndex | None = None,
    ) -> None:
        self._read_secret = read_secret
        self.default_secret = default_secret
        self._default_base_url = default_base_url
        self._on_secret_value = on_secret_value
        self._cache: dict[SecretRef, _CachedSecret | None] = {}
        self._loading: dict[SecretRef, asyncio.Future[Mapping[str, Any] | None]] = {}
        self.index = SecretIndex() if index is None else index
        self.index.on_unused(self._unused)

    def use_index(self, index: SecretIndex) -> None:
        """Keep dependents in `index` (the engine's, shared with the Secret guard), from the start."""
        if index is not self.index:
            assert not self.index.sizes()["secret_index.objects"], "an index in use is not replaced"
            self.index = index
            index.on_unused(self._unused)

    def secret_for(self, namespace: str, credentials_ref: str | None) -> SecretRef:
        named = named_secret(namespace, credentials_ref)
        if named is not None:
            return named
        if self.default_secret is None:
            raise CredentialError(
                Reason.SECRET_NOT_FOUND,
                "spec.credentialsRef is not set and the operator has no default credentials Secret",
            )
        return self.default_secret

    async def resolve(
        self, obj: ObjectKey, credentials_ref: str | None, mixpeek_namespace: str | None
    ) -> Credentials:
        ref = self.secret_for(obj[0], credentials_ref)
        self.index.record(obj, named_secret(obj[0], credentials_ref))
        cached = await self._load(ref)
        where = f"Secret {ref[0]}/{ref[1]}"
        if cached is None:
            raise CredentialError(Reason.SECRET_NOT_FOUND, f"{where} not found")
        api_key = cached.data.get(SECRET_API_KEY)
        if not api_key:
            raise CredentialError(Reason.SECRET_NOT_FOUND, f"{where} has no '{SECRET_API_KEY}' key")
        namespace = mixpeek_namespace or cached.data.get(SECRET_NAMESPACE)
        if not namespace:
            raise CredentialError(
                Reason.SECRET_NOT_FOUND,
                f"no Mixpeek namespace: set spec.mixpeekNamespace or the '{SECRET_NAMESPACE}' key of {where}",
            )
        base_url = (cached.data.get(SECRET_BASE_URL) or self._default_base_url).rstrip("/")
        return Credentials(
            api_key=api_key,
            namespace=namespace,
            base_url=base_url,
            secret=ref,
            fingerprint=fingerprint(api_key, base_url),
        )

    async def _load(self, ref: SecretRef) -> _CachedSecret | None:
        if ref in self._cache:
            return self._cache[ref]
        # Objects resolving the same Secret at once (a restart, a bulk apply) share one read.
        pending = self._loading.get(ref)
        if pending is None:
            pending = self._loading[ref] = asyncio.ensure_future(self._read_secret(*ref))
            pending.add_done_callback(lambda _: self._loading.pop(ref, None))
        body = await asyncio.shield(pending)
        if ref in self._cache:  # a watch event may have filled it meanwhile; that one is newer
            return self._cache[ref]
        parsed = None if body is None else self._parse(body)
        if self.is_watched(ref):  # not when its last dependent went while we read
            self._cache[ref] = parsed
        return parsed

    def _parse(self, body: Mapping[str, Any]) -> _CachedSecret:
        raw = body.get("data") or {}
        data = {key: _decode(raw, key) for key in (SECRET_API_KEY, SECRET_NAMESPACE, SECRET_BASE_URL)}
        api_key = data.get(SECRET_API_KEY)
        if api_key and self._on_secret_value is not None:
            self._on_secret_value(api_key)
        return _CachedSecret(data)

    def forget(self, obj: ObjectKey) -> None:
        """`obj` is gone (the engine forgets it in its index directly)."""
        self.index.forget(obj)

    def _unused(self, secret: NamedSecret) -> None:
        # Nothing depends on the Secret any more: it leaves the cache (its API key with it).
        if secret is not None and secret != self.default_secret:
            self._cache.pop(secret, None)

    def sizes(self) -> dict[str, int]:
        """How many entries each internal map holds (the soak benchmark checks they stay bounded);
        dependents and uses are the index as this store sees it."""
        index = self.index.sizes()
        return {
            "credentials.cache": len(self._cache),
            "credentials.loading": len(self._loading),
            "credentials.dependents": index["secret_index.secrets"],
            "credentials.uses": index["secret_index.objects"],
        }

    def dependents(self, ref: SecretRef) -> set[ObjectKey]:
        """The objects that use `ref`: those naming it, and for the default Secret those naming none."""
        found = set(self.index.objects_naming(ref))
        if ref == self.default_secret:
            found |= self.index.objects_naming(DEFAULT)
        return found

    def is_watched(self, ref: SecretRef) -> bool:
        return self.index.is_named(ref) or ref == self.default_secret

    def secret_changed(self, ref: SecretRef, body: Mapping[str, Any] | None) -> set[ObjectKey]:
        """Record a Secret event; return the objects to reconcile if its content changed."""
        if not self.is_watched(ref):
            return set()
        before = self._cache.get(ref)
        after = None if body is None else self._parse(body)
        known = ref in self._cache
        self._cache[ref] = after
        if not known:
            # Not read yet, or a read is under way (a dependent's first reconcile, for instance
            # just after the Secret guard added its finalizer): no dependent acted on its content,
            # and whoever reads it now takes this newer content.
            return set()
        unchanged = (before is None and after is None) or (
            before is not None and after is not None and before.data == after.data
        )
        if unchanged:
            return set()
        return self.dependents(ref)
