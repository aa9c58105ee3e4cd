"""Who is calling, and which namespace, bucket and connection a request may reach (from the seed)."""

from __future__ import annotations

from dataclasses import dataclass

from mixpeek_operator.emulator.config import Behaviour
from mixpeek_operator.emulator.errors import ApiError, not_found
from mixpeek_operator.emulator.seed import ApiKeySeed, BucketSeed, ConnectionSeed, NamespaceSeed, Seed


@dataclass(frozen=True, slots=True)
class Caller:
    api_key: ApiKeySeed
    namespace: NamespaceSeed


class Directory:
    def __init__(self, seed: Seed) -> None:
        self._keys = {k.key: k for k in seed.api_keys}
        self._namespaces: dict[str, NamespaceSeed] = {}
        for namespace in seed.namespaces:
            self._namespaces[namespace.id] = namespace
            self._namespaces.setdefault(namespace.name, namespace)
        self._buckets = {(n.id, b.id): b for n in seed.namespaces for b in n.buckets}
        self._connections = {(n.id, c.id): c for n in seed.namespaces for c in n.connections}

    def caller(self, authorization: str | None, namespace: str | None, behaviour: Behaviour) -> Caller:
        """Authenticate, then resolve X-Namespace (id or name); raises the documented 4xx envelopes."""
        api_key = self._authenticate(authorization)
        wanted = (namespace or "").strip()
        if not wanted:
            raise ApiError(
                behaviour.missing_namespace_status,
                "X-Namespace header is required (a namespace id or name)",
                details={"header": "X-Namespace"},
            )
        found = self._namespaces.get(wanted)
        if found is None:
            raise not_found("namespace", wanted)
        allowed = api_key.namespaces
        if allowed is not None and found.id not in allowed and found.name not in allowed:
            if behaviour.forbidden_namespace_status == 404:
                raise not_found("namespace", wanted)
            raise ApiError(
                403, "API key may not access this namespace", details={"resource": "namespace", "id": wanted}
            )
        return Caller(api_key, found)

    def _authenticate(self, authorization: str | None) -> ApiKeySeed:
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "Missing or malformed Authorization header; expected 'Bearer <api_key>'")
        api_key = self._keys.get(token.strip())
        if api_key is None:
            raise ApiError(401, "Invalid API key")
        return api_key

    def bucket(self, namespace_id: str, bucket_id: str) -> BucketSeed:
        bucket = self._buckets.get((namespace_id, bucket_id))
        if bucket is None:
            raise not_found("bucket", bucket_id)
        return bucket

    def connection(self, namespace_id: str, connection_id: str) -> ConnectionSeed | None:
        return self._connections.get((namespace_id, connection_id))
