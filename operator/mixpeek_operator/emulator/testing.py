"""Helpers for tests that talk to the emulator (fixtures are in `pytest_plugin`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI

from mixpeek_operator.emulator.seed import DEFAULT_API_KEY

FROZEN_START = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT_NAMESPACE = "default"
DEFAULT_BUCKET = "bkt_demo"
DEFAULT_CONNECTION = "conn_s3_demo"
SYNCS_PATH = f"/v1/buckets/{DEFAULT_BUCKET}/syncs"


def auth_headers(api_key: str = DEFAULT_API_KEY, namespace: str = DEFAULT_NAMESPACE) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "X-Namespace": namespace}


def asgi_client(app: FastAPI, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://emulator.test",
        headers=auth_headers() if headers is None else headers,
    )


async def create_sync(client: httpx.AsyncClient, path: str = SYNCS_PATH, **fields: Any) -> dict[str, Any]:
    """Create a sync (default connection and source path unless given) and return the model."""
    body = {"connection_id": DEFAULT_CONNECTION, "source_path": "demo-bucket/videos", **fields}
    response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    return created
