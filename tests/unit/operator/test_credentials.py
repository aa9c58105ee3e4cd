"""The credential store's Secret cache against watch events that race with its reads."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from typing import Any

from mixpeek_operator.credentials import CredentialStore
from mixpeek_operator.keys import ObjectKey

REF = ("team", "creds")
OBJ = ObjectKey("team", "demo")


def secret(api_key: str, finalizers: list[str] | None = None) -> dict[str, Any]:
    data = {"apiKey": api_key, "namespace": "default"}
    return {
        "metadata": {"namespace": REF[0], "name": REF[1], "finalizers": finalizers or []},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


class SlowReader:
    """Secret reads that finish only when the test says so."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        self.body = body
        self.release = asyncio.Event()
        self.reads = 0

    async def __call__(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        self.reads += 1
        await self.release.wait()
        return self.body


async def test_an_event_during_the_first_read_does_not_requeue_the_reader() -> None:
    reader = SlowReader(secret("sk_old"))
    store = CredentialStore(reader, default_secret=None)
    resolving = asyncio.create_task(store.resolve(OBJ, REF[1], None))
    await asyncio.sleep(0)  # the read is under way

    # The Secret guard's finalizer write comes back as an event before the read returns.
    assert store.secret_changed(REF, secret("sk_old", ["mixpeek.com/secret-in-use"])) == set()
    reader.release.set()
    assert (await resolving).api_key == "sk_old"
    assert reader.reads == 1


async def test_a_changed_secret_during_the_first_read_is_what_the_reader_gets() -> None:
    reader = SlowReader(secret("sk_old"))
    store = CredentialStore(reader, default_secret=None)
    resolving = asyncio.create_task(store.resolve(OBJ, REF[1], None))
    await asyncio.sleep(0)

    store.secret_changed(REF, secret("sk_new"))
    reader.release.set()
    assert (await resolving).api_key == "sk_new"  # the event is newer than the read


async def test_a_change_after_the_first_read_requeues_the_dependents() -> None:
    reader = SlowReader(secret("sk_old"))
    reader.release.set()
    store = CredentialStore(reader, default_secret=None)
    await store.resolve(OBJ, REF[1], None)

    assert store.secret_changed(REF, secret("sk_old", ["mixpeek.com/secret-in-use"])) == set()
    assert store.secret_changed(REF, secret("sk_new")) == {OBJ}


async def test_a_secret_nothing_depends_on_leaves_the_cache_with_its_key() -> None:
    """Regression: an empty dependents set kept the Secret (its API key) cached for good."""
    store = CredentialStore(SlowReader(secret("sk_gone")), default_secret=None)
    store._read_secret.release.set()  # type: ignore[attr-defined]
    others = [ObjectKey("team", f"obj-{i}") for i in range(3)]
    for obj in others:
        await store.resolve(obj, REF[1], None)
    for obj in others[:-1]:
        store.forget(obj)
    assert REF in store._cache  # still used by one
    store.forget(others[-1])
    assert store._cache == {}
    assert not store.index.is_named(REF)
    assert store.sizes() == {
        "credentials.cache": 0,
        "credentials.loading": 0,
        "credentials.dependents": 0,
        "credentials.uses": 0,
    }
    # Not watched any more: its events no longer refill the cache.
    assert store.secret_changed(REF, secret("sk_new")) == set()
    assert store._cache == {}


async def test_an_object_gone_while_its_secret_was_read_does_not_cache_it() -> None:
    reader = SlowReader(secret("sk_old"))
    store = CredentialStore(reader, default_secret=None)
    resolving = asyncio.create_task(store.resolve(OBJ, REF[1], None))
    await asyncio.sleep(0)
    store.forget(OBJ)  # deleted while the read was under way
    reader.release.set()
    assert (await resolving).api_key == "sk_old"
    assert store._cache == {}
