"""The driver's Kubernetes access: httpx with the control plane's admin client certificate.

Deliberately light (one event loop, keep-alive connections, no kubectl per object) because
the driver shares two cores with the API server, etcd, the emulator and the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from mixpeek_operator.kube import BUCKETSYNCS


def bucketsyncs_path(namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    return BUCKETSYNCS.path(namespace, name, subresource)


def is_ready(obj: dict[str, Any]) -> bool:
    """Ready=True for the object's current generation."""
    status = obj.get("status") or {}
    if status.get("observedGeneration") != (obj.get("metadata") or {}).get("generation"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


class KubeError(RuntimeError):
    pass


class Kube:
    def __init__(self, server: str, ca: str, cert: str, key: str, concurrency: int = 64) -> None:
        context = ssl.create_default_context(cafile=ca)
        context.load_cert_chain(cert, key)
        self._context = context
        self.server = server
        self.http = httpx.AsyncClient(
            base_url=server,
            verify=context,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            timeout=httpx.Timeout(60.0, connect=10.0),
            # The same HTTP stack as the operator's Kubernetes client, so the floor is a floor.
            http2=True,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        ok: Iterable[int] = (),
    ) -> dict[str, Any]:
        content = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if content is not None:
            headers["Content-Type"] = content_type
        response = await self.http.request(method, path, content=content, headers=headers, params=params)
        if response.is_error and response.status_code not in set(ok):
            raise KubeError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        result: dict[str, Any] = response.json()
        return result

    async def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.call("POST", bucketsyncs_path(namespace), body)

    async def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.call("PATCH", path, body, content_type="application/merge-patch+json")

    async def ensure_namespace(self, name: str) -> None:
        await self.call("POST", "/api/v1/namespaces", {"metadata": {"name": name}}, ok=(409,))

    async def ensure_secret(self, namespace: str, name: str, string_data: dict[str, str]) -> None:
        body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": string_data}
        await self.call("POST", f"/api/v1/namespaces/{namespace}/secrets", body, ok=(409,))

    async def list_bucketsyncs(self, namespace: str) -> tuple[list[dict[str, Any]], str]:
        items: list[dict[str, Any]] = []
        params = {"limit": "500"}
        while True:
            page = await self.call("GET", bucketsyncs_path(namespace), params=params)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items, str(page["metadata"]["resourceVersion"])
            params = {"limit": "500", "continue": token}

    async def metrics_text(self) -> str:
        response = await self.http.get("/metrics", timeout=60.0)
        response.raise_for_status()
        return response.text

    def watch_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.server, verify=self._context, timeout=httpx.Timeout(10.0, read=None)
        )


@dataclass
class Watcher:
    """A watch of one namespace's BucketSyncs, started before the objects it times.

    Keeps the latest body of every object and the (monotonic) time each was first seen Ready
    for its current generation; waiters are woken on every event.
    """

    kube: Kube
    namespace: str
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    first_ready: dict[str, float] = field(default_factory=dict)
    ready_generation: dict[str, tuple[int, float]] = field(default_factory=dict)  # name -> (gen, when)
    events: int = 0
    _task: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _connected: asyncio.Event = field(default_factory=asyncio.Event)
    _resource_version: str = ""

    async def start(self) -> None:
        items, self._resource_version = await self.kube.list_bucketsyncs(self.namespace)
        now = time.monotonic()
        for item in items:
            self._observe(item, now)
        self._task = asyncio.create_task(self._run(), name=f"watch {self.namespace}")
        await asyncio.wait_for(self._connected.wait(), 30)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        http = self.kube.watch_client()
        try:
            while True:
                params = {
                    "watch": "true",
                    "resourceVersion": self._resource_version,
                    "allowWatchBookmarks": "true",
                    "timeoutSeconds": "3600",
                }
                try:
                    async with http.stream(
                        "GET", bucketsyncs_path(self.namespace), params=params
                    ) as response:
                        response.raise_for_status()
                        self._connected.set()
                        async for line in response.aiter_lines():
                            if line:
                                self._event(json.loads(line))
                except (httpx.TransportError, httpx.HTTPStatusError):
                    await asyncio.sleep(0.5)
                    if not self._resource_version:
                        _, self._resource_version = await self.kube.list_bucketsyncs(self.namespace)
        finally:
            await http.aclose()

    def _event(self, event: dict[str, Any]) -> None:
        obj = event.get("object") or {}
        kind = event.get("type")
        if kind == "ERROR":  # 410 Gone: relist from now (the benchmark never needs the gap)
            self._resource_version = ""
            return
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self._resource_version = str(version)
        if kind == "BOOKMARK":
            return
        self.events += 1
        if kind == "DELETED":
            self.objects.pop(obj["metadata"]["name"], None)
        else:
            self._observe(obj, time.monotonic())
        self._changed.set()

    def _observe(self, obj: dict[str, Any], now: float) -> None:
        name = obj["metadata"]["name"]
        self.objects[name] = obj
        if is_ready(obj):
            self.first_ready.setdefault(name, now)
            generation = int(obj["metadata"].get("generation") or 0)
            if self.ready_generation.get(name, (-1, 0.0))[0] != generation:
                self.ready_generation[name] = (generation, now)

    async def wait(self, predicate: Callable[[], bool], within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {within:.0f}s waiting for {what}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))
