"""What one object costs in the operator's memory, measured with tracemalloc on real data.

The bodies are the BucketSyncs the API server serves after the benchmark's bulk create
(managedFields, status written by the operator, the admission policy's finalizer), and the
remote syncs are the emulator's list pages: the same bytes the operator parses. Each
structure the operator keeps per object is rebuilt here from those bytes, and tracemalloc
counts what stays allocated once the intermediates are gone.
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Callable
from typing import Any

import httpx

from hack.bench.kube import Kube
from hack.bench.procs import API_KEY, MIXPEEK_NAMESPACE
from mixpeek_operator.leancache import lean_body
from mixpeek_operator.mixpeek.models import SyncConfiguration
from mixpeek_operator.observer import remote_projection


def _retained_bytes(build: Callable[[], list[Any]]) -> float:
    """Bytes still allocated per item after `build()` returns its items (intermediates freed)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = build()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return (after - before) / max(1, len(kept))


async def measure(
    kube: Kube, namespace: str, emulator_url: str, buckets: list[str], sample: int = 2000
) -> dict[str, Any]:
    items, _ = await kube.list_bucketsyncs(namespace)
    items = items[:sample]
    bodies = [json.dumps(item) for item in items]
    syncs: list[str] = []
    async with httpx.AsyncClient(
        base_url=emulator_url,
        headers={"Authorization": f"Bearer {API_KEY}", "X-Namespace": MIXPEEK_NAMESPACE},
        timeout=60,
    ) as remote:
        for bucket in buckets:
            if len(syncs) >= sample:
                break
            page = await remote.post(f"/v1/buckets/{bucket}/syncs/list", json={}, params={"limit": 1000})
            page.raise_for_status()
            syncs.extend(json.dumps(result) for result in page.json()["results"])
    meta = (items[0].get("metadata") or {}) if items else {}
    served = _retained_bytes(lambda: [json.loads(text) for text in bodies])
    lean = _retained_bytes(lambda: [lean_body(json.loads(text)) for text in bodies])
    lean_plain = _retained_bytes(lambda: [lean_body(json.loads(text), intern_keys=False) for text in bodies])
    managed = _retained_bytes(lambda: [json.loads(text)["metadata"].get("managedFields") for text in bodies])
    status = _retained_bytes(lambda: [json.loads(text).get("status") for text in bodies])
    models = _retained_bytes(lambda: [SyncConfiguration.model_validate_json(text) for text in syncs])
    digests = _retained_bytes(
        lambda: [remote_projection(SyncConfiguration.model_validate_json(text)) for text in syncs]
    )
    return {
        "objects": len(bodies),
        "remote_syncs": len(syncs),
        "served_json_bytes_per_object": sum(map(len, bodies)) / max(1, len(bodies)),
        "served_managed_fields_entries": len(meta.get("managedFields") or []),
        "served_annotations": sorted((meta.get("annotations") or {}).keys()),
        "bytes_per_object": {
            "served body, parsed (the cache before: every field kept)": served,
            "lean body (the cache now)": lean,
            "lean body without interned keys": lean_plain,
            "of the served body: managedFields": managed,
            "of the served body: status": status,
            "remote sync model (the observer's listing cache)": models,
            "remote projection digest (the observer's change detection)": digests,
        },
    }
