"""ListWatch and SecretWatches against the real local kube-apiserver + etcd: server-side label
and field selectors, what the API server sends when a label moves an object out of (DELETED)
or into (ADDED) a selection, a relist after a 410 for a too old resourceVersion, and watches
that stop without leaving a task behind."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import pytest
from kubernetes import client as k8s

from hack.localcluster import ControlPlane
from mixpeek_operator.constants import API_VERSION, GROUP, KIND, PLURAL, VERSION
from mixpeek_operator.kube import (
    BUCKETSYNCS,
    JsonObject,
    KubeClient,
    KubeConnection,
    KubeGone,
    ListWatch,
    SecretWatches,
)

OWNER = "shard.mixpeek.com/owner"
Seen = list[tuple[str, str, dict[str, str]]]  # (type, name, labels)


class Recorder:
    def __init__(self) -> None:
        self.seen: Seen = []
        self.bodies: list[JsonObject] = []
        self.changed = asyncio.Event()

    async def on_event(self, kind: str, body: JsonObject) -> None:
        metadata = body["metadata"]
        self.seen.append((kind, metadata["name"], dict(metadata.get("labels") or {})))
        self.bodies.append(body)
        self.changed.set()

    async def wait_for(self, done: Callable[[], bool], what: str, within: float = 20) -> None:
        try:
            async with asyncio.timeout(within):
                while not done():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            pytest.fail(f"timed out waiting for {what}; seen {self.seen}")

    async def wait_count(self, count: int) -> Seen:
        await self.wait_for(lambda: len(self.seen) >= count, f"{count} events")
        return self.seen[:count]


@pytest.fixture
async def kube(cluster: ControlPlane, crd_installed: None) -> AsyncIterator[KubeClient]:
    async with KubeClient(KubeConnection.from_kubeconfig(cluster.kubeconfig)) as client:
        yield client


class CountingKube(KubeClient):
    """Counts the watch requests (each stream the server ends is watched again)."""

    streams: list[str]

    def watch(self, *args: Any, **kwargs: Any) -> AsyncGenerator[JsonObject, None]:
        self.streams.append(kwargs["resource_version"])
        return super().watch(*args, **kwargs)


@pytest.fixture
def custom(api_client: k8s.ApiClient) -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(api_client)


def create(custom: k8s.CustomObjectsApi, namespace: str, name: str, labels: dict[str, str]) -> None:
    body = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "labels": labels},
        "spec": {"bucketId": "bkt_1", "connectionId": "conn_1", "sourcePath": "in"},
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def patch(custom: k8s.CustomObjectsApi, namespace: str, name: str, metadata: dict[str, Any]) -> None:
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"metadata": metadata})


def delete(custom: k8s.CustomObjectsApi, namespace: str, name: str) -> None:
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


async def stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()


async def test_a_label_selector_watch_follows_objects_into_and_out_of_its_selection(
    cluster: ControlPlane, crd_installed: None, custom: k8s.CustomObjectsApi, namespace: str
) -> None:
    create(custom, namespace, "mine", {OWNER: "me"})
    create(custom, namespace, "theirs", {OWNER: "other"})
    create(custom, namespace, "nobodys", {})
    recorder = Recorder()
    kube = CountingKube(KubeConnection.from_kubeconfig(cluster.kubeconfig))
    kube.streams = []
    watch = ListWatch(
        kube,
        BUCKETSYNCS,
        namespace=namespace,
        label_selector=f"{OWNER}=me",
        on_event=recorder.on_event,
        timeout_seconds=2,  # the server ends each stream after 2 s: watched again from its version
    )
    task = asyncio.create_task(watch.run())
    try:
        await asyncio.wait_for(watch.synced.wait(), 20)
        assert recorder.seen == [("ADDED", "mine", {OWNER: "me"})]
        assert recorder.bodies[0]["kind"] == KIND  # filled in on list items

        patch(custom, namespace, "mine", {"annotations": {"x": "1"}})
        assert (await recorder.wait_count(2))[1] == ("MODIFIED", "mine", {OWNER: "me"})
        await asyncio.sleep(2.5)
        assert len(kube.streams) >= 2
        # (etcd's revisions are integers; clients must treat them as opaque, tests may compare)
        assert int(kube.streams[-1]) >= int(recorder.bodies[1]["metadata"]["resourceVersion"])

        # The label moves away: the server's filtered watch says DELETED, with the object as it
        # was before the change (its OLD labels), at the change's resourceVersion.
        patch(custom, namespace, "mine", {"labels": {OWNER: "other"}})
        assert (await recorder.wait_count(3))[2] == ("DELETED", "mine", {OWNER: "me"})
        moved = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "mine")
        assert recorder.bodies[2]["metadata"]["resourceVersion"] == moved["metadata"]["resourceVersion"]
        assert "deletionTimestamp" not in recorder.bodies[2]["metadata"]

        # A label moves in: ADDED, with the new labels.
        patch(custom, namespace, "theirs", {"labels": {OWNER: "me"}})
        assert (await recorder.wait_count(4))[3] == ("ADDED", "theirs", {OWNER: "me"})

        patch(custom, namespace, "nobodys", {"annotations": {"x": "1"}})  # not ours: nothing
        delete(custom, namespace, "mine")  # no longer ours: nothing either
        delete(custom, namespace, "theirs")
        assert (await recorder.wait_count(5))[4] == ("DELETED", "theirs", {OWNER: "me"})
        await asyncio.sleep(1)
        assert len(recorder.seen) == 5, recorder.seen
        assert watch.events == 5
        assert watch.sizes() == {"watch.keys": 0}
        assert watch.lists == 1
    finally:
        await stopped(task)
        await kube.aclose()


async def test_a_too_old_resource_version_is_410_gone(kube: KubeClient, namespace: str) -> None:
    """The real server's answer to a watch from a version older than it keeps: an ERROR event
    with code 410 on a 200 stream (ListWatch also handles an HTTP 410)."""
    stream = kube.watch(BUCKETSYNCS, namespace, resource_version="1", timeout_seconds=5)
    try:
        events = [event async for event in stream]
    except KubeGone:
        pytest.fail("expected a 410 ERROR event, got an HTTP 410")
    assert [event["type"] for event in events] == ["ERROR"]
    assert events[0]["object"]["code"] == 410
    assert events[0]["object"]["reason"] == "Expired"


async def test_a_watch_from_an_expired_version_relists(
    kube: KubeClient, custom: k8s.CustomObjectsApi, namespace: str
) -> None:
    selector = f"{OWNER}={uuid.uuid4().hex[:12]}"  # cluster-wide, but only this test's objects
    labels = dict([selector.split("=")])
    for name in ("a", "b"):
        create(custom, namespace, name, labels)
    recorder = Recorder()
    watch = ListWatch(kube, BUCKETSYNCS, namespace=None, label_selector=selector, on_event=recorder.on_event)
    task = asyncio.create_task(watch.run())
    await asyncio.wait_for(watch.synced.wait(), 20)
    assert sorted(recorder.seen) == [("ADDED", "a", labels), ("ADDED", "b", labels)]
    await stopped(task)

    # While it is stopped: b goes, a changes, c comes. Then it resumes from a version the
    # server no longer serves (the test hook: as after a long outage and etcd compaction).
    delete(custom, namespace, "b")
    patch(custom, namespace, "a", {"annotations": {"x": "1"}})
    create(custom, namespace, "c", labels)
    watch._resource_version = "1"
    watch._unproven = False  # it had watched fine before: a relist, not a failure
    task = asyncio.create_task(watch.run())
    try:
        await recorder.wait_for(lambda: watch.lists == 2, "the relist")
        relisted = recorder.seen[2:]
        assert sorted(relisted) == [("ADDED", "c", labels), ("DELETED", "b", {}), ("MODIFIED", "a", labels)]
        tombstone = next(body for body in recorder.bodies[2:] if body["metadata"]["name"] == "b")
        assert tombstone == {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": "b", "namespace": namespace},
        }
        assert all(kind != "ERROR" for kind, _, _ in recorder.seen)
        # ...and it watches again from the new list's version.
        create(custom, namespace, "d", labels)
        await recorder.wait_for(lambda: ("ADDED", "d", labels) in recorder.seen, "d")
        assert watch.sizes() == {"watch.keys": 3}
    finally:
        await stopped(task)


def make_secret(api_client: k8s.ApiClient, namespace: str, name: str, value: str) -> None:
    data = {"apiKey": base64.b64encode(value.encode()).decode()}
    body = k8s.V1Secret(metadata=k8s.V1ObjectMeta(name=name), data=data)
    k8s.CoreV1Api(api_client).create_namespaced_secret(namespace, body)


def update_secret(api_client: k8s.ApiClient, namespace: str, name: str, value: str) -> None:
    data = {"apiKey": base64.b64encode(value.encode()).decode()}
    k8s.CoreV1Api(api_client).patch_namespaced_secret(name, namespace, {"data": data})


def watch_tasks() -> set[str]:
    return {task.get_name() for task in asyncio.all_tasks() if task.get_name().startswith("watch secret")}


async def test_secret_watches_deliver_the_named_secret_only(
    kube: KubeClient, api_client: k8s.ApiClient, namespace: str
) -> None:
    make_secret(api_client, namespace, "wanted", "one")
    make_secret(api_client, namespace, "other", "one")
    recorder = Recorder()
    secrets = SecretWatches(kube, recorder.on_event)
    secrets.track("object-1", (namespace, "wanted"))
    secrets.track("object-2", (namespace, "wanted"))
    secrets.track("object-3", (namespace, "missing"))
    assert watch_tasks() == {f"watch secret {namespace}/wanted", f"watch secret {namespace}/missing"}
    try:
        assert await recorder.wait_count(1) == [("ADDED", "wanted", {})]
        assert recorder.bodies[0]["kind"] == "Secret"  # core lists omit it on items
        update_secret(api_client, namespace, "other", "two")
        update_secret(api_client, namespace, "wanted", "two")
        second = (await recorder.wait_count(2))[1]
        assert second == ("MODIFIED", "wanted", {})
        assert base64.b64decode(recorder.bodies[1]["data"]["apiKey"]) == b"two"

        make_secret(api_client, namespace, "missing", "new")  # named before it existed
        assert (await recorder.wait_count(3))[2] == ("ADDED", "missing", {})

        secrets.forget("object-1")  # object-2 still uses it
        secrets.forget("object-3")
        await asyncio.sleep(0.1)
        assert watch_tasks() == {f"watch secret {namespace}/wanted"}
        secrets.forget("object-2")
        await asyncio.sleep(0.1)
        assert watch_tasks() == set()
        update_secret(api_client, namespace, "wanted", "three")  # no longer watched
        await asyncio.sleep(1)
        assert len(recorder.seen) == 3
        assert all(name != "other" for _, name, _ in recorder.seen)
    finally:
        await secrets.stop()
    assert watch_tasks() == set()
    assert secrets.sizes()["secret_watches.watches"] == 0


async def test_cancelling_a_watch_leaves_no_task_behind(
    kube: KubeClient, api_client: k8s.ApiClient, namespace: str
) -> None:
    make_secret(api_client, namespace, "default", "one")
    recorder = Recorder()
    secrets = SecretWatches(kube, recorder.on_event)
    before = set(asyncio.all_tasks())
    secrets.pin((namespace, "default"))
    secrets.track("object", (namespace, "default"))
    secrets.forget("object")  # pinned: still watched
    await recorder.wait_count(1)
    assert watch_tasks() == {f"watch secret {namespace}/default"}
    watch = secrets.watch_of((namespace, "default"))
    assert watch is not None
    assert watch.synced.is_set()
    await secrets.stop()
    assert set(asyncio.all_tasks()) <= before
    assert watch_tasks() == set()
