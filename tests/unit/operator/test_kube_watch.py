"""ListWatch and SecretWatches against a scripted API (httpx.MockTransport): paging, expired
continue tokens, bookmarks, ERROR events, 410 relists, backoff and one warning per outage,
the 401 refresh on a stream, and the refcounted Secret watches. The real API server's
behaviour (selectors, a label moving away) is tests/integration/test_kube_watch.py's."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from mixpeek_operator.kube import (
    BACKOFF_SECONDS,
    BUCKETSYNCS,
    SECRETS,
    JsonObject,
    KubeClient,
    KubeConnection,
    ListWatch,
    SecretWatches,
    WatchHandlerError,
)
from mixpeek_operator.supervision import Supervisor

Respond = Callable[[httpx.Request], httpx.Response]
Delivered = list[tuple[str, str, str]]  # (type, name, resourceVersion)


class _Hang(httpx.AsyncByteStream):
    """A watch stream that stays open and silent until the test cancels the watch."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        await asyncio.Event().wait()
        yield b""  # pragma: no cover


class FakeApi:
    """Answers LISTs and WATCHes from scripts (one answer per request, in order); a WATCH
    beyond its script hangs, a LIST beyond its script is an empty list at version 999."""

    def __init__(self) -> None:
        self.lists: list[Respond] = []
        self.watches: list[Respond] = []
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.params.get("watch") == "true":
            if self.watches:
                return self.watches.pop(0)(request)
            return httpx.Response(200, stream=_Hang())
        if self.lists:
            return self.lists.pop(0)(request)
        return page([], "999")(request)

    def watch_params(self) -> list[dict[str, str]]:
        return [dict(r.url.params) for r in self.requests if r.url.params.get("watch") == "true"]


def obj(name: str, rv: str, namespace: str = "ns") -> JsonObject:
    return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": rv}}


def page(items: list[JsonObject], rv: str, token: str = "") -> Respond:
    body = {"kind": "BucketSyncList", "metadata": {"resourceVersion": rv, "continue": token}, "items": items}
    return lambda request: httpx.Response(200, json=body)


def status(code: int, reason: str) -> Respond:
    body = {"kind": "Status", "code": code, "reason": reason, "message": f"{reason}!"}
    return lambda request: httpx.Response(code, json=body)


def stream(*events: tuple[str, JsonObject]) -> Respond:
    lines = b"".join(json.dumps({"type": kind, "object": o}).encode() + b"\n" for kind, o in events)
    return lambda request: httpx.Response(200, content=lines)


class MockKube(KubeClient):
    def __init__(self, api: FakeApi, connection: Any = None) -> None:
        super().__init__(connection or KubeConnection(server="http://api.test"))
        self.api = api

    def _build_http(self, connection: KubeConnection, *, http2: bool = True) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=connection.server, transport=httpx.MockTransport(self.api))


class Harness:
    def __init__(self, api: FakeApi) -> None:
        self.api = api
        self.kube = MockKube(api)
        self.delivered: Delivered = []
        self.bodies: list[JsonObject] = []
        self.delays: list[float] = []

    async def on_event(self, kind: str, body: JsonObject) -> None:
        metadata = body["metadata"]
        self.delivered.append((kind, metadata["name"], metadata.get("resourceVersion", "")))
        self.bodies.append(body)

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)

    def list_watch(self, **kwargs: Any) -> ListWatch:
        return ListWatch(
            self.kube,
            BUCKETSYNCS,
            namespace="ns",
            sleep=self.sleep,
            **{
                "on_event": self.on_event,
                "label_selector": "shard.mixpeek.com/owner=me",
                "page_size": 2,
                **kwargs,
            },
        )

    async def run_until(self, watch: ListWatch, done: Callable[[], bool], within: float = 5) -> None:
        """Run the watch until `done()`, then cancel it (as its owner does)."""
        task = asyncio.create_task(watch.run())
        try:
            async with asyncio.timeout(within):
                while not done():
                    assert not task.done(), task.exception()
                    await asyncio.sleep(0.001)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness(FakeApi())
    yield h
    await h.kube.aclose()


async def test_pages_then_watches_from_the_list_version_skipping_bookmarks(harness: Harness) -> None:
    api = harness.api
    api.lists += [page([obj("a", "5"), obj("b", "6")], "10", token="t1"), page([obj("c", "7")], "10")]
    api.watches.append(stream(("MODIFIED", obj("a", "11")), ("BOOKMARK", obj("", "15"))))
    watch = harness.list_watch()
    await harness.run_until(watch, lambda: len(api.watch_params()) == 2)
    assert harness.delivered == [
        ("ADDED", "a", "5"),
        ("ADDED", "b", "6"),
        ("ADDED", "c", "7"),
        ("MODIFIED", "a", "11"),
    ]
    assert watch.synced.is_set()
    assert watch.events == 4
    assert watch.lists == 1
    lists = [dict(r.url.params) for r in api.requests if "watch" not in r.url.params]
    assert lists == [
        {"labelSelector": "shard.mixpeek.com/owner=me", "limit": "2"},
        {"labelSelector": "shard.mixpeek.com/owner=me", "limit": "2", "continue": "t1"},
    ]
    first, second = api.watch_params()
    assert first == {
        "labelSelector": "shard.mixpeek.com/owner=me",
        "watch": "true",
        "allowWatchBookmarks": "true",
        "resourceVersion": "10",
        "timeoutSeconds": "300",
    }
    assert second["resourceVersion"] == "15"  # the bookmark's, though it was not delivered
    assert harness.delays == []  # the stream ended after events: watched again at once
    # Core lists omit apiVersion and kind on items: filled in, as a watch event carries them.
    assert harness.bodies[0]["apiVersion"] == "mixpeek.com/v1alpha1"
    assert harness.bodies[0]["kind"] == "BucketSync"


async def test_an_expired_continue_token_lists_again_from_the_start(harness: Harness) -> None:
    api = harness.api
    api.lists += [
        page([obj("a", "5"), obj("b", "6")], "10", token="t1"),
        status(410, "Expired"),
        page([obj("a", "5"), obj("c", "8")], "20"),
    ]
    watch = harness.list_watch()
    await harness.run_until(watch, lambda: watch.synced.is_set())
    # a and b were delivered by the broken list: the new one knows them; b is gone from it.
    assert harness.delivered == [
        ("ADDED", "a", "5"),
        ("ADDED", "b", "6"),
        ("MODIFIED", "a", "5"),
        ("ADDED", "c", "8"),
        ("DELETED", "b", ""),
    ]
    assert watch.sizes() == {"watch.keys": 2}
    assert "continue" not in api.requests[2].url.params
    assert harness.delays == []


async def test_a_410_error_event_relists_and_is_never_delivered(harness: Harness) -> None:
    api = harness.api
    api.lists += [page([obj("a", "5"), obj("b", "6")], "10"), page([obj("a", "30")], "31")]
    gone = {
        "kind": "Status",
        "code": 410,
        "reason": "Expired",
        "message": "too old resource version: 10 (25)",
    }
    api.watches.append(stream(("ADDED", obj("c", "12")), ("ERROR", gone)))
    watch = harness.list_watch()
    await harness.run_until(watch, lambda: len(api.watch_params()) == 2)
    assert harness.delivered[:4] == [
        ("ADDED", "a", "5"),
        ("ADDED", "b", "6"),
        ("ADDED", "c", "12"),
        ("MODIFIED", "a", "30"),
    ]
    assert sorted(harness.delivered[4:]) == [("DELETED", "b", ""), ("DELETED", "c", "")]
    tombstone = harness.bodies[-1]
    assert tombstone == {
        "apiVersion": "mixpeek.com/v1alpha1",
        "kind": "BucketSync",
        "metadata": {"name": tombstone["metadata"]["name"], "namespace": "ns"},
    }
    assert watch.lists == 2
    assert api.watch_params()[1]["resourceVersion"] == "31"
    assert harness.delays == []  # the watch had worked: a relist, not a failure


async def test_an_http_410_on_the_watch_relists(harness: Harness) -> None:
    api = harness.api
    api.lists += [page([obj("a", "5")], "10"), page([obj("a", "5")], "40")]
    api.watches += [stream(("BOOKMARK", obj("", "20"))), status(410, "Gone")]
    watch = harness.list_watch()
    await harness.run_until(watch, lambda: watch.lists == 2 and len(api.watch_params()) == 3)
    assert [p["resourceVersion"] for p in api.watch_params()] == ["10", "20", "40"]
    assert harness.delivered == [("ADDED", "a", "5"), ("MODIFIED", "a", "5")]


async def test_a_version_gone_right_after_its_list_backs_off_instead_of_spinning(harness: Harness) -> None:
    api = harness.api
    api.watches += [status(410, "Gone"), status(410, "Gone")]
    watch = harness.list_watch()
    await harness.run_until(watch, lambda: watch.lists == 3)
    assert harness.delays == [1.0, 2.0]


async def test_errors_back_off_with_one_warning_per_outage(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    api = harness.api
    api.lists += [status(503, "ServiceUnavailable")] * 7 + [page([obj("a", "5")], "10")]
    api.watches += [status(500, "InternalError"), stream(("ADDED", obj("b", "11")))]
    # ...and after the good stream, an ERROR event that is no 410: a fresh outage.
    api.watches.append(stream(("ERROR", {"kind": "Status", "code": 500, "reason": "InternalError"})))
    watch = harness.list_watch()
    with caplog.at_level(logging.DEBUG, logger="mixpeek_operator.kube.watch"):
        await harness.run_until(watch, lambda: len(api.watch_params()) == 4)
    # A list that works does not end the outage (only a good stream does): the failed watch
    # after it goes on at 30 s, without a second warning.
    assert harness.delays == [*BACKOFF_SECONDS, 30.0, 30.0, 1.0]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # the first outage, and the ERROR event's after the good stream
    assert "503 ServiceUnavailable" in warnings[0]
    assert "500 InternalError" in warnings[1]
    recovered = [r.getMessage() for r in caplog.records if "works again" in r.getMessage()]
    assert len(recovered) == 1
    assert "after 8 failed attempts" in recovered[0]
    assert [kind for kind, _, _ in harness.delivered] == ["ADDED", "ADDED"]  # no ERROR delivered


async def test_a_stream_that_ends_at_once_is_a_failure(harness: Harness) -> None:
    harness.api.watches += [stream(), stream()]
    watch = harness.list_watch(timeout_seconds=60)
    await harness.run_until(watch, lambda: len(harness.api.watch_params()) == 3)
    assert harness.delays == [1.0, 2.0]


async def test_a_failing_handler_stops_the_watch_and_gets_the_event_again(harness: Harness) -> None:
    api = harness.api
    api.lists.append(page([obj("a", "5")], "10"))
    api.watches += [stream(("MODIFIED", obj("a", "11"))), stream(("MODIFIED", obj("a", "11")))]
    failures = [RuntimeError("handler bug")]

    async def on_event(kind: str, body: JsonObject) -> None:
        if kind == "MODIFIED" and failures:
            raise failures.pop()
        await harness.on_event(kind, body)

    watch = harness.list_watch(on_event=on_event)
    with pytest.raises(WatchHandlerError) as raised:
        await watch.run()
    assert isinstance(raised.value.__cause__, RuntimeError)
    # Run again (as its Supervisor would): the version had not moved past the failed event.
    await harness.run_until(watch, lambda: len(api.watch_params()) == 3)
    assert harness.delivered == [("ADDED", "a", "5"), ("MODIFIED", "a", "11")]
    assert [p["resourceVersion"] for p in api.watch_params()] == ["10", "10", "11"]


async def test_a_401_on_the_stream_refreshes_credentials_and_asks_again() -> None:
    api = FakeApi()
    tokens = iter(["old", "new"])

    async def provider() -> KubeConnection:
        return KubeConnection(server="http://api.test", token=next(tokens))

    def watch_answer(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] == "Bearer old":
            return status(401, "Unauthorized")(request)
        return stream(("ADDED", obj("a", "11")))(request)

    api.watches += [watch_answer, watch_answer]
    kube = MockKube(api, provider)
    async with kube:
        got = [event async for event in kube.watch(BUCKETSYNCS, "ns", resource_version="10")]
        assert [e["type"] for e in got] == ["ADDED"]
    assert [r.headers["Authorization"] for r in api.requests] == ["Bearer old", "Bearer new"]


# --- SecretWatches --------------------------------------------------------------------------


def secret_tasks() -> set[str]:
    return {t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("watch secret")}


async def test_secret_watches_are_refcounted_and_leave_no_task_behind(harness: Harness) -> None:
    supervisor = Supervisor()
    secrets = SecretWatches(
        harness.kube, harness.on_event, spawn=functools.partial(supervisor.spawn, kind="watch")
    )
    secrets.pin(("ops", "default"))
    secrets.track("obj-1", ("ns", "key"))
    secrets.track("obj-2", ("ns", "key"))
    secrets.track("obj-3", ("ns", "other"))
    assert secret_tasks() == {"watch secret ops/default", "watch secret ns/key", "watch secret ns/other"}
    watch = secrets.watch_of(("ns", "key"))
    assert watch is not None
    await asyncio.wait_for(watch.synced.wait(), 5)
    params = next(dict(r.url.params) for r in harness.api.requests if r.url.path == SECRETS.path("ns"))
    assert params["fieldSelector"] == "metadata.name=key"
    assert secrets.sizes()["secret_watches.watches"] == 3

    secrets.forget("obj-1")  # obj-2 still uses it
    secrets.track("obj-3", ("ns", "key"))  # moves away from "other": its last user
    secrets.track("obj-3", ("ns", "key"))  # no change
    await asyncio.sleep(0.01)
    assert secret_tasks() == {"watch secret ops/default", "watch secret ns/key"}
    secrets.forget("obj-2")
    secrets.forget("obj-3")
    secrets.forget("unknown")
    await asyncio.sleep(0.01)
    assert secret_tasks() == {"watch secret ops/default"}  # pinned: never stopped by users
    assert secrets.sizes() == {
        "secret_watches.watches": 1,
        "secret_watches.owners": 0,
        "secret_watches.users": 0,
        "secret_watches.pinned": 1,
        "secret_watches.stopping": 0,
        "secret_watches.keys": 0,
    }
    await secrets.stop()
    assert secret_tasks() == set()
    assert supervisor.healthy()


async def test_a_watch_emptied_by_deletions_gives_back_its_grown_key_table(harness: Harness) -> None:
    """The assigner's watch of unlabelled objects holds every object at startup and none once
    they are labelled: an emptied key set is replaced, not kept at its largest table."""
    many = [obj(f"o-{index}", str(index + 1)) for index in range(5000)]
    harness.api.lists.append(page(many, "6000"))
    harness.api.watches.append(stream(*(("DELETED", item) for item in many)))
    watch = harness.list_watch(page_size=5000)
    await harness.run_until(watch, lambda: len(harness.delivered) == 10000)
    assert watch.sizes() == {"watch.keys": 0}
    assert sys.getsizeof(watch._keys) == sys.getsizeof(set())
