"""Targets of the bucket-sync contract suite: the emulator always, the real Mixpeek API when configured.

The emulator is served by uvicorn on a free loopback port (real HTTP), once per session.
The real API needs MIXPEEK_API_KEY, MIXPEEK_NAMESPACE, MIXPEEK_BUCKET_ID and
MIXPEEK_CONNECTION_ID (MIXPEEK_BASE_URL and MIXPEEK_SOURCE_PATH are optional). Its key is
never printed: the target is called `real-mixpeek` and the key is kept out of every repr.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from mixpeek_operator.constants import DEFAULT_MIXPEEK_BASE_URL
from mixpeek_operator.emulator.config import EmulatorConfig
from mixpeek_operator.emulator.seed import DEFAULT_API_KEY
from mixpeek_operator.emulator.server import EmulatorServer
from mixpeek_operator.emulator.testing import DEFAULT_BUCKET, DEFAULT_CONNECTION, DEFAULT_NAMESPACE

REQUIRED_VARIABLES = ("MIXPEEK_API_KEY", "MIXPEEK_NAMESPACE", "MIXPEEK_BUCKET_ID", "MIXPEEK_CONNECTION_ID")
DEFAULT_SOURCE_PATH = "mixpeek-operator-contract-tests"
HOW_TO_ENABLE = (
    "to run the contract suite against the real Mixpeek API, set MIXPEEK_API_KEY, MIXPEEK_NAMESPACE, "
    "MIXPEEK_BUCKET_ID and MIXPEEK_CONNECTION_ID (optional: MIXPEEK_BASE_URL, default "
    f"{DEFAULT_MIXPEEK_BASE_URL}; MIXPEEK_SOURCE_PATH, default {DEFAULT_SOURCE_PATH}); "
    "every sync the suite creates is deleted again"
)
# Written into every sync the suite creates, so a leftover is recognisable.
RUN_MARKER = {"mixpeek-operator-contract-run": uuid.uuid4().hex[:12]}


@dataclass(frozen=True)
class Target:
    name: str
    base_url: str
    api_key: str = field(repr=False)
    namespace: str
    bucket_id: str
    connection_id: str
    source_path: str

    @property
    def syncs_path(self) -> str:
        return f"/v1/buckets/{self.bucket_id}/syncs"

    def headers(self, api_key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key or self.api_key}", "X-Namespace": self.namespace}


@pytest.fixture(scope="session")
def emulator_target() -> Iterator[Target]:
    with EmulatorServer(EmulatorConfig()) as server:
        yield Target(
            name="emulator",
            base_url=server.base_url,
            api_key=DEFAULT_API_KEY,
            namespace=DEFAULT_NAMESPACE,
            bucket_id=DEFAULT_BUCKET,
            connection_id=DEFAULT_CONNECTION,
            source_path="contract/videos",
        )


def real_target() -> Target:
    missing = [name for name in REQUIRED_VARIABLES if not os.environ.get(name)]
    if missing:
        pytest.skip(f"real Mixpeek API not configured (missing {', '.join(missing)}): {HOW_TO_ENABLE}")
    return Target(
        name="real-mixpeek",
        base_url=os.environ.get("MIXPEEK_BASE_URL") or DEFAULT_MIXPEEK_BASE_URL,
        api_key=os.environ["MIXPEEK_API_KEY"],
        namespace=os.environ["MIXPEEK_NAMESPACE"],
        bucket_id=os.environ["MIXPEEK_BUCKET_ID"],
        connection_id=os.environ["MIXPEEK_CONNECTION_ID"],
        source_path=os.environ.get("MIXPEEK_SOURCE_PATH") or DEFAULT_SOURCE_PATH,
    )


@pytest.fixture(scope="session", params=["emulator", "real-mixpeek"])
def target(request: pytest.FixtureRequest) -> Target:
    if request.param == "emulator":
        emulator: Target = request.getfixturevalue("emulator_target")
        return emulator
    return real_target()


@pytest.fixture
def api(target: Target) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=target.base_url, headers=target.headers(), timeout=30) as client:
        yield client


class SyncFactory:
    """Creates syncs with the run marker in their metadata and deletes them all at teardown."""

    def __init__(self, api: httpx.Client, target: Target) -> None:
        self._api = api
        self._target = target
        self.created: list[str] = []
        self.marker = dict(RUN_MARKER)

    def create(self, **fields: Any) -> dict[str, Any]:
        body = {
            "connection_id": self._target.connection_id,
            "source_path": self._target.source_path,
            **fields,
        }
        body["metadata"] = {**self.marker, **(fields.get("metadata") or {})}
        response = self._api.post(self._target.syncs_path, json=body)
        assert response.status_code == 200, response.text
        sync: dict[str, Any] = response.json()
        self.created.append(sync["sync_config_id"])
        return sync

    def path(self, sync_id: str, action: str = "") -> str:
        return f"{self._target.syncs_path}/{sync_id}" + (f"/{action}" if action else "")

    def delete_all(self) -> None:
        for sync_id in self.created:
            response = self._api.delete(self.path(sync_id))
            assert response.status_code in (200, 404), response.text


@pytest.fixture
def syncs(api: httpx.Client, target: Target) -> Iterator[SyncFactory]:
    factory = SyncFactory(api, target)
    try:
        yield factory
    finally:
        factory.delete_all()
