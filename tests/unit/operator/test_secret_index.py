"""The one object → Secret index: both directions kept in one step, last-user notice, and the
credential store and the Secret guard reading the same entries."""

from __future__ import annotations

import base64
from typing import Any, cast

from mixpeek_operator.coordination.ring import shard_key_of
from mixpeek_operator.credentials import CredentialStore
from mixpeek_operator.engine import Engine, EngineSettings
from mixpeek_operator.keys import ObjectKey
from mixpeek_operator.kube import JsonObject, Resource
from mixpeek_operator.metrics import OperatorMetrics
from mixpeek_operator.secret_guard import SecretUseGuard
from mixpeek_operator.secret_index import DEFAULT, NamedSecret, SecretIndex, named_secret_of

NS = "team"
A, B = (NS, "creds-a"), (NS, "creds-b")


def bucketsync(name: str, secret: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"bucketId": "bkt"}
    if secret is not None:
        spec["credentialsRef"] = {"name": secret}
    return {"metadata": {"name": name, "namespace": NS}, "spec": spec}


def test_the_secret_a_body_names() -> None:
    assert named_secret_of(bucketsync("x", "creds-a")) == A
    assert named_secret_of(bucketsync("x", None)) is DEFAULT
    assert named_secret_of(bucketsync("x", "")) is DEFAULT
    assert named_secret_of({"metadata": {"namespace": NS}, "spec": {"credentialsRef": None}}) is DEFAULT
    # The shard key reads the same relation, the default Secret filled in.
    assert shard_key_of(bucketsync("x", "creds-a"), ("ops", "default")) == (*A, "bkt")
    assert shard_key_of(bucketsync("x", None), ("ops", "default")) == ("ops", "default", "bkt")


def test_both_directions_move_together_and_the_last_user_is_announced_once() -> None:
    index, unused = SecretIndex(), list[NamedSecret]()
    index.on_unused(unused.append)
    first, second, third = (ObjectKey(NS, name) for name in ("first", "second", "third"))

    assert index.record(first, A) is None
    index.record(second, A)
    index.record(third, DEFAULT)
    assert index.objects_naming(A) == {first, second}
    assert (index.named_secrets(), index.objects_naming_their_own()) == (1, 2)

    assert index.record(first, B) == A  # moved: A keeps one user
    assert unused == []
    assert index.record(first, B) == B  # unchanged: nothing happens
    assert index.forget(second) == A  # A's last user
    assert unused == [A]
    assert index.forget(second) is None  # unknown: nothing happens
    index.forget(first)
    index.forget(third)
    assert unused == [A, B, DEFAULT]
    assert index.sizes() == {"secret_index.objects": 0, "secret_index.secrets": 0}


def encoded(api_key: str) -> dict[str, Any]:
    data = {"apiKey": api_key, "namespace": "default"}
    return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


class SecretApi:
    """Secrets that exist and take the in-use finalizer; no BucketSync names them any more."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def add_finalizer(
        self, resource: Resource, namespace: str | None, name: str, finalizer: str,
        *, current: JsonObject | None = None,
    ) -> JsonObject:  # fmt: skip
        self.calls.append(f"add {name}")
        return {}

    async def remove_finalizer(
        self, resource: Resource, namespace: str | None, name: str, finalizer: str
    ) -> JsonObject | None:
        self.calls.append(f"remove {name}")
        return {}

    async def list_objects(self, resource: Resource, namespace: str | None = None) -> list[JsonObject]:
        return []


async def test_a_move_the_guard_records_prunes_the_credential_cache_of_the_old_secret() -> None:
    """The guard sees an edited credentialsRef first (before the reconcile resolves it): the
    old Secret's cached API key still leaves memory with its last dependent."""

    async def read_secret(namespace: str, name: str) -> dict[str, Any]:
        return encoded(f"sk_{name}")

    index, api = SecretIndex(), SecretApi()
    store = CredentialStore(read_secret, default_secret=None, index=index)
    guard = SecretUseGuard(api, index=index)
    obj = ObjectKey(NS, "demo")

    await guard.protect(obj, bucketsync("demo", "creds-a"))
    assert (await store.resolve(obj, "creds-a", None)).api_key == "sk_creds-a"
    assert store.is_watched(A)

    await guard.protect(obj, bucketsync("demo", "creds-b"))  # the edit, seen by the guard
    assert not store.is_watched(A)
    assert store.sizes()["credentials.cache"] == 0  # A's key is gone before B is even read
    assert api.calls == ["add creds-a", "remove creds-a", "add creds-b"]
    assert (await store.resolve(obj, "creds-b", None)).api_key == "sk_creds-b"
    assert store.dependents(B) == {obj}

    await guard.object_gone(obj)
    assert store.sizes() == {
        "credentials.cache": 0,
        "credentials.loading": 0,
        "credentials.dependents": 0,
        "credentials.uses": 0,
    }
    assert guard.sizes()["guard.uses"] == 0


async def test_the_engine_owns_the_one_index_its_store_and_guard_use() -> None:
    async def no_secret(namespace: str, name: str) -> None:
        return None

    store, guard = CredentialStore(no_secret, default_secret=None), SecretUseGuard(SecretApi())
    engine = Engine(
        kube=cast(Any, SecretApi()),
        credentials=store,
        metrics=OperatorMetrics(),
        settings=EngineSettings(workers=1),
        secret_guard=guard,
    )
    assert store.index is engine.secrets
    assert guard.index is engine.secrets
    await engine.stop()


async def test_the_guards_own_mark_of_an_unread_secret_requeues_nobody() -> None:
    """Regression (found by tests/integration/test_sharding.py): the guard records an object
    before its reconcile reads the Secret, and the Secret event of the guard's own finalizer
    arrived before that read: it requeued every object naming the Secret, once per mark."""

    async def read_secret(namespace: str, name: str) -> dict[str, Any]:
        return encoded(f"sk_{name}")

    index = SecretIndex()
    store = CredentialStore(read_secret, default_secret=None, index=index)
    guard = SecretUseGuard(SecretApi(), index=index)
    objects = [ObjectKey(NS, f"obj-{i}") for i in range(3)]
    for obj in objects:
        await guard.protect(obj, bucketsync(obj.name, "creds-a"))

    marked = encoded("sk_creds-a") | {"metadata": {"namespace": NS, "name": "creds-a"}}
    assert store.secret_changed(A, marked) == set()  # nobody read it yet: nothing to redo
    assert (await store.resolve(objects[0], "creds-a", None)).api_key == "sk_creds-a"
    assert store.secret_changed(A, encoded("sk_rotated")) == set(objects)  # a real change
