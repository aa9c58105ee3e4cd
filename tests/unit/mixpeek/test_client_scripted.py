"""Client behaviour the emulator cannot be made to show, against a tiny scripted ASGI server.

The emulator sends whole-second Retry-After values and always pages with a correct cursor,
so sub-second Retry-After, offset-only paging and misbehaving cursors are scripted here.
Everything else is tested against the emulator in test_client.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from mixpeek_operator.mixpeek import APIResponseValidationError, MixpeekClient, RateLimiterRegistry
from tests.unit.mixpeek.test_ratelimit import FakeTime

BUCKET = "bkt_demo"


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ScriptedServer:
    """Answers each request with the next scripted reply and remembers what was asked."""

    replies: list[Reply]
    requests: list[tuple[str, str, dict[str, list[str]]]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        self.requests.append((scope["method"], scope["path"], parse_qs(scope["query_string"].decode())))
        reply = self.replies.pop(0)
        content = b"" if reply.body is None else json.dumps(reply.body).encode()
        headers = [
            (b"content-type", b"application/json"),
            *((k.encode(), v.encode()) for k, v in reply.headers.items()),
        ]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": content})


def sync(number: int) -> dict[str, Any]:
    return {
        "sync_config_id": f"sync_{number:04d}",
        "bucket_id": BUCKET,
        "connection_id": "conn_s3_demo",
        "internal_id": "org_1",
        "namespace_id": "ns_1",
        "source_path": "demo-bucket/videos",
        "created_by_user_id": "usr_1",
    }


def page(numbers: range | list[int], *, cursor: str | None = None, total: int | None = None) -> Reply:
    return Reply(
        body={"results": [sync(n) for n in numbers], "pagination": {"next_cursor": cursor}, "total": total}
    )


@dataclass
class Scripted:
    server: ScriptedServer
    client: MixpeekClient
    fake_time: FakeTime


@pytest.fixture
async def scripted() -> AsyncIterator[Scripted]:
    server = ScriptedServer([])
    fake_time = FakeTime()
    client = MixpeekClient(
        "sk_test_scripted",
        "default",
        base_url="http://scripted.test",
        transport=httpx.ASGITransport(app=server),
        rate_limiters=RateLimiterRegistry(clock=fake_time.clock, sleep=fake_time.sleep),
        sleep=fake_time.sleep,
        clock=fake_time.clock,
        now=fake_time.now,
        random=lambda: 0.5,
    )
    async with client:
        yield Scripted(server, client, fake_time)


@pytest.mark.parametrize(
    "headers",
    [{"Retry-After": "1.25"}, {"retry-after-ms": "1250"}, {"retry-after-ms": "1250", "Retry-After": "9"}],
)
async def test_retry_after_is_honoured_to_the_millisecond(
    scripted: Scripted, headers: dict[str, str]
) -> None:
    scripted.server.replies = [Reply(503, None, headers), Reply(body=sync(1))]

    await scripted.client.get_sync(BUCKET, "sync_0001")

    assert scripted.fake_time.sleeps == [1.25]


async def test_pages_by_offset_when_the_server_gives_no_cursor(
    scripted: Scripted,
) -> None:
    scripted.server.replies = [page(range(2)), page(range(2, 4)), page(range(4, 5))]

    listing = await scripted.client.list_all_syncs(BUCKET, page_size=2)

    assert [s.sync_config_id for s in listing.syncs] == [f"sync_{n:04d}" for n in range(5)]
    assert listing.pages_fetched == 3
    assert [query.get("offset") for _, _, query in scripted.server.requests] == [None, ["2"], ["4"]]


async def test_offset_paging_stops_at_the_reported_total(
    scripted: Scripted,
) -> None:
    scripted.server.replies = [page(range(2), total=4), page(range(2, 4), total=4)]

    listing = await scripted.client.list_all_syncs(BUCKET, page_size=2)

    assert listing.pages_fetched == 2  # a full last page needs no empty page to confirm the end


async def test_offset_paging_skips_syncs_shifted_onto_the_next_page(
    scripted: Scripted,
) -> None:
    # A sync created between the two requests pushes sync 1 onto the second page.
    scripted.server.replies = [page([0, 1], total=3), page([1, 2], total=3)]

    syncs = [s.sync_config_id async for s in scripted.client.iter_syncs(BUCKET, page_size=2)]

    assert syncs == ["sync_0000", "sync_0001", "sync_0002"]


async def test_a_cursor_is_followed_even_after_a_short_page(
    scripted: Scripted,
) -> None:
    scripted.server.replies = [page([0], cursor="c1"), page([1], cursor=None)]

    listing = await scripted.client.list_all_syncs(BUCKET, page_size=2)

    assert len(listing.syncs) == 2
    assert [query.get("cursor") for _, _, query in scripted.server.requests] == [None, ["c1"]]


async def test_an_empty_page_ends_the_listing_even_with_a_cursor(
    scripted: Scripted,
) -> None:
    scripted.server.replies = [page([0, 1], cursor="c1"), page([], cursor="c2")]

    assert (await scripted.client.list_all_syncs(BUCKET, page_size=2)).pages_fetched == 2


async def test_a_repeated_cursor_is_an_error_not_a_loop(
    scripted: Scripted,
) -> None:
    scripted.server.replies = [page([0, 1], cursor="c1"), page([2, 3], cursor="c1")]

    with pytest.raises(APIResponseValidationError, match="repeated a page cursor"):
        await scripted.client.list_all_syncs(BUCKET, page_size=2)


async def test_delete_accepts_an_empty_body(scripted: Scripted) -> None:
    scripted.server.replies = [Reply(200, None)]

    assert (await scripted.client.delete_sync(BUCKET, "sync_0001")).model_dump() == {}


@pytest.mark.parametrize("body", [{"unexpected": True}, ["not", "an", "object"]])
async def test_a_success_body_of_the_wrong_shape_is_a_typed_error(scripted: Scripted, body: Any) -> None:
    scripted.server.replies = [Reply(200, body)]

    with pytest.raises(APIResponseValidationError, match="SyncConfiguration"):
        await scripted.client.get_sync(BUCKET, "sync_0001")
