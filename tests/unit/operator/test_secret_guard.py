"""The in-use finalizer on credentials Secrets, over an in-memory Kubernetes API."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from mixpeek_operator.constants import SECRET_IN_USE_FINALIZER
from mixpeek_operator.keys import ObjectKey
from mixpeek_operator.kube import JsonObject, KubeForbidden, KubeNotFound, Resource
from mixpeek_operator.secret_guard import SecretUseGuard

NS = "team"
OBJ = ObjectKey(NS, "demo")


def bucketsync(name: str = "demo", secret: str | None = "creds", deleting: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"bucketId": "bkt"}
    if secret:
        spec["credentialsRef"] = {"name": secret}
    meta: dict[str, Any] = {"name": name, "namespace": NS}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": spec}


@dataclass
class Api:
    secrets: dict[str, list[str]] = field(default_factory=dict)  # name -> finalizers
    bucketsyncs: list[dict[str, Any]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    refuse_writes: bool = False

    async def add_finalizer(
        self, resource: Resource, namespace: str | None, name: str, finalizer: str,
        *, current: JsonObject | None = None,
    ) -> JsonObject:  # fmt: skip
        assert (resource.group, resource.plural) == ("", "secrets")
        self.calls.append(f"add {name}")
        await asyncio.sleep(0)  # a round trip: other reconciles run meanwhile
        if self.refuse_writes:
            raise KubeForbidden(403, "Forbidden", "secrets is forbidden")
        if name not in self.secrets:
            raise KubeNotFound(404, "NotFound", "not found")
        self.secrets[name].append(finalizer)
        return {}

    async def remove_finalizer(
        self, resource: Resource, namespace: str | None, name: str, finalizer: str
    ) -> JsonObject | None:
        self.calls.append(f"remove {name}")
        self.secrets[name].remove(finalizer)
        return {}

    async def list_objects(self, resource: Resource, namespace: str | None = None) -> list[JsonObject]:
        self.calls.append("list")
        return list(self.bucketsyncs)


def secret_body(name: str, finalizers: list[str], deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NS, "finalizers": finalizers}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta}


async def test_the_named_secret_is_marked_once() -> None:
    api = Api(secrets={"creds": []})
    guard = SecretUseGuard(api)

    await guard.protect(OBJ, bucketsync())
    await guard.protect(OBJ, bucketsync())

    assert api.secrets["creds"] == [SECRET_IN_USE_FINALIZER]
    assert api.calls == ["add creds"]


async def test_concurrent_reconciles_naming_one_secret_mark_it_once() -> None:
    api = Api(secrets={"creds": []})
    guard = SecretUseGuard(api)

    await asyncio.gather(
        *(guard.protect(ObjectKey(NS, f"obj-{i}"), bucketsync(f"obj-{i}")) for i in range(10))
    )

    assert api.secrets["creds"] == [SECRET_IN_USE_FINALIZER]
    assert api.calls == ["add creds"]


async def test_the_default_secret_and_a_missing_one_are_left_alone() -> None:
    api = Api(secrets={})
    guard = SecretUseGuard(api)

    await guard.protect(OBJ, bucketsync(secret=None))
    await guard.protect(OBJ, bucketsync(secret="absent"))  # the reconcile reports it; no crash

    assert api.calls == ["add absent"]


async def test_a_refused_write_only_logs(caplog: Any) -> None:
    guard = SecretUseGuard(Api(secrets={"creds": []}, refuse_writes=True))

    await guard.protect(OBJ, bucketsync())

    assert "could not mark Secret team/creds as in use" in caplog.text


async def test_a_deleted_secret_is_kept_while_a_bucketsync_names_it_even_a_deleting_one() -> None:
    api = Api(secrets={"creds": [SECRET_IN_USE_FINALIZER]}, bucketsyncs=[bucketsync(deleting=True)])
    guard = SecretUseGuard(api)  # a fresh process: nothing in memory, the API decides

    await guard.secret_event("MODIFIED", secret_body("creds", [SECRET_IN_USE_FINALIZER], deleting=True))

    assert api.secrets["creds"] == [SECRET_IN_USE_FINALIZER]
    assert api.calls == ["list"]


async def test_the_last_user_gone_releases_a_deleted_secret() -> None:
    api = Api(secrets={"creds": []}, bucketsyncs=[bucketsync()])
    guard = SecretUseGuard(api)
    await guard.protect(OBJ, bucketsync())
    await guard.secret_event("MODIFIED", secret_body("creds", [SECRET_IN_USE_FINALIZER], deleting=True))
    assert api.secrets["creds"] == [SECRET_IN_USE_FINALIZER]  # its user is known in memory: no call

    api.bucketsyncs.clear()
    await guard.object_gone(OBJ)

    assert api.secrets["creds"] == []
    assert api.calls == ["add creds", "list", "remove creds"]


async def test_moving_to_another_secret_releases_the_old_one() -> None:
    api = Api(secrets={"old": [], "new": []})
    guard = SecretUseGuard(api)
    await guard.protect(OBJ, bucketsync(secret="old"))
    api.bucketsyncs = [bucketsync(secret="new")]

    await guard.protect(OBJ, bucketsync(secret="new"))

    assert api.secrets == {"old": [], "new": [SECRET_IN_USE_FINALIZER]}


async def test_another_object_still_naming_the_secret_keeps_it() -> None:
    api = Api(secrets={"creds": []}, bucketsyncs=[bucketsync(name="other")])
    guard = SecretUseGuard(api)
    await guard.protect(OBJ, bucketsync())

    await guard.object_gone(OBJ)

    assert api.secrets["creds"] == [SECRET_IN_USE_FINALIZER]


async def test_a_replica_that_may_not_write_defers_the_release_until_it_may() -> None:
    """A standby (or the shard not owning the Secret) sees the last user go but writes nothing;
    once it leads it makes the release, even though it never reconciled that user itself."""
    api = Api(secrets={"creds": [SECRET_IN_USE_FINALIZER]})
    leading = False
    guard = SecretUseGuard(api, may_release=lambda ref: leading)

    await guard.object_gone(OBJ, bucketsync(deleting=True))
    await guard.secret_event("MODIFIED", secret_body("creds", [SECRET_IN_USE_FINALIZER], deleting=True))
    assert api.calls == []

    leading = True
    await guard.release_deferred()
    assert api.secrets["creds"] == []
    assert api.calls == ["list", "remove creds"]
    await guard.release_deferred()  # done once
    assert api.calls == ["list", "remove creds"]


async def test_leadership_lost_during_the_listing_means_no_write() -> None:
    api = Api(secrets={"creds": [SECRET_IN_USE_FINALIZER]})
    answers = iter([True, False])  # may write before the listing, no longer after it
    guard = SecretUseGuard(api, may_release=lambda ref: next(answers, False))

    await guard.object_gone(OBJ, bucketsync())

    assert api.calls == ["list"]
    assert api.secrets["creds"] == [SECRET_IN_USE_FINALIZER]


async def test_a_deleted_secret_is_no_longer_a_deferred_release() -> None:
    api = Api(secrets={"creds": [SECRET_IN_USE_FINALIZER]})
    leading = False
    guard = SecretUseGuard(api, may_release=lambda ref: leading)
    await guard.object_gone(OBJ, bucketsync())

    await guard.secret_event("DELETED", secret_body("creds", [SECRET_IN_USE_FINALIZER]))
    leading = True
    await guard.release_deferred()

    assert api.calls == []


async def test_per_secret_state_goes_with_the_last_object_naming_the_secret() -> None:
    """Regression: a lock per Secret ever marked stayed for the life of the process."""
    api = Api(secrets={f"creds-{i}": [] for i in range(50)})
    guard = SecretUseGuard(api)
    objects = [
        (ObjectKey(NS, f"obj-{i}"), bucketsync(f"obj-{i}", secret=f"creds-{i % 50}")) for i in range(200)
    ]

    await asyncio.gather(*(guard.protect(key, body) for key, body in objects))
    assert guard._marking == {}  # no mark under way: no lock held
    assert guard.sizes()["guard.use_counts"] == 50

    for key, _ in objects:
        await guard.object_gone(key)
    assert guard.sizes() == {
        "guard.uses": 0,
        "guard.use_counts": 0,
        "guard.protected": 0,  # each released
        "guard.deferred": 0,
        "guard.marking": 0,
    }
    assert sorted(api.calls).count("list") == 50  # one check per Secret, when its last user went


async def test_a_delete_asks_whether_the_secret_is_used_without_scanning_every_use() -> None:
    """Regression: `release_if_unused` scanned every use on each delete (a bulk delete, O(N²))."""
    api = Api(secrets={"creds": []})
    guard = SecretUseGuard(api)
    n = 3000
    for i in range(n):
        await guard.protect(ObjectKey(NS, f"obj-{i}"), bucketsync(f"obj-{i}"))
    scanned = 0
    real_values = dict.values

    class CountingUses(dict[ObjectKey, Any]):
        def values(self) -> Any:
            nonlocal scanned
            scanned += len(self)
            return real_values(self)

    guard.index._secret_of = CountingUses(guard.index._secret_of)
    for i in range(n):
        await guard.object_gone(ObjectKey(NS, f"obj-{i}"))
    assert scanned == 0
    assert api.secrets["creds"] == []  # released once, after the last
