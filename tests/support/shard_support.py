"""What the sharding tests share (rendezvous shards in test_sharding.py, label shards in
test_label_shards.py): an emulator seeded with 30 buckets (30 listing groups: one Secret x 30
buckets), replicas started through the real entry point, and what the emulator saw."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from kubernetes import client as k8s

from hack.localcluster import assert_no_leftovers, spawn_emulator, terminate
from mixpeek_operator.constants import OWNER_UID_KEY
from mixpeek_operator.emulator.admin import EmulatorAdmin
from tests.support.operator_support import (
    EMULATOR_API_KEY,
    EMULATOR_NAMESPACE,
    EmulatorProcess,
    Objects,
    OperatorFactory,
    OperatorProcess,
    bucketsync,
    is_ready,
    make_secret,
)

BUCKETS = [f"bkt_{index:02d}" for index in range(30)]
INTERVAL = 2.0  # the operator fixture's observe interval
LEASE = 8
# The remote calls that change a sync (what two replicas must never both make at once).
REMOTE_WRITES = frozenset({"create", "update", "delete", "pause", "resume", "trigger"})


@pytest.fixture(scope="module")
def ring_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    workdir = tmp_path_factory.mktemp("ring-emulator")
    seed = {
        "api_keys": [{"key": EMULATOR_API_KEY, "user_id": "usr_emulator", "internal_id": "org_emulator"}],
        "namespaces": [
            {
                "id": "ns_emulator",
                "name": EMULATOR_NAMESPACE,
                "buckets": [{"id": bucket} for bucket in BUCKETS],
                "connections": [{"id": "conn_s3_demo", "provider": "s3"}],
            }
        ],
    }
    proc, url = spawn_emulator(workdir, seed)
    try:
        with EmulatorAdmin(url) as admin:
            yield EmulatorProcess(
                url=url, admin=admin, proc=proc, log=workdir / "emulator.log", sample_root=workdir
            )
    finally:
        terminate(proc)
    assert_no_leftovers(str(workdir))


@pytest.fixture
def ring(ring_emulator: EmulatorProcess, api_client: k8s.ApiClient, objects: Objects) -> EmulatorProcess:
    ring_emulator.admin.reset()
    make_secret(
        api_client,
        objects.namespace,
        "mixpeek-credentials",
        api_key=EMULATOR_API_KEY,
        base_url=ring_emulator.url,
    )
    return ring_emulator


def start_shard(start_operator: OperatorFactory, namespace: str, name: str, *extra: str) -> OperatorProcess:
    return start_operator(
        namespace,
        extra_args=(
            "--sharding",
            "--leader-election-namespace",
            namespace,
            "--leader-election-identity",
            name,
            "--leader-election-lease-duration",
            str(LEASE),
            "--leader-election-renew-deadline",
            str(LEASE - 2),
            # Several replicas and hundreds of objects on a shared 2-core machine: DEBUG logging
            # alone can starve a replica's event loop past its renew deadline.
            "--log-level",
            "INFO",
            "--leader-election-retry-period",
            "1",
            *extra,
        ),
    )


def create_fleet(objects: Objects, total: int, prefix: str = "s") -> tuple[list[str], set[str]]:
    names, uids = [], set()
    for index in range(total):
        name = f"{prefix}-{index:03d}"
        created = objects.create(bucketsync(name, bucketId=BUCKETS[index % len(BUCKETS)]))
        names.append(name)
        uids.add(created["metadata"]["uid"])
    return names, uids


def list_objects(objects: Objects) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = objects.api.list_namespaced_custom_object(
        "mixpeek.com", "v1alpha1", objects.namespace, "bucketsyncs"
    )["items"]
    return items


def all_ready(objects: Objects, names: list[str]) -> bool:
    ready = {item["metadata"]["name"] for item in list_objects(objects) if is_ready(item)}
    return set(names) <= ready


def remote_owners(emulator: EmulatorProcess, uids: set[str]) -> list[str]:
    return [
        s["metadata"].get(OWNER_UID_KEY)
        for s in emulator.admin.list_syncs()
        if s["metadata"].get(OWNER_UID_KEY) in uids
    ]


def create_answers(emulator: EmulatorProcess) -> dict[str, int]:
    answers: dict[str, int] = emulator.admin.request_counts()["endpoint_status"].get("create", {})
    return answers


def successful_creates(emulator: EmulatorProcess) -> int:
    """Creates Mixpeek carried out. A replica that stops working mid-request (its groups moved)
    cancels the request; a half-sent body is answered 400 and creates nothing."""
    return sum(n for status, n in create_answers(emulator).items() if status.startswith("2"))


def lists_per_bucket(emulator: EmulatorProcess) -> Counter[str]:
    return Counter(
        entry["path"].split("/")[3] for entry in emulator.admin.request_log() if entry["endpoint"] == "list"
    )


def overlapping_writers(log: list[dict[str, Any]]) -> list[str]:
    """Syncs written by two replicas at once: for each sync, a write of one replica that started
    before the previous write of another replica had finished. The emulator logs each request's
    User-Agent (it names the replica) and the sync it acted on."""
    writes: dict[str, list[tuple[datetime, datetime, str]]] = defaultdict(list)
    for entry in log:
        if entry["endpoint"] in REMOTE_WRITES and entry.get("sync_id"):
            started = datetime.fromisoformat(entry["started_at"])
            writes[entry["sync_id"]].append(
                (started, datetime.fromisoformat(entry["at"]), entry["user_agent"])
            )
    overlaps = []
    for sync, entries in writes.items():
        entries.sort()
        finished_by: dict[str, datetime] = {}
        for started, finished, writer in entries:
            if any(agent != writer and end > started for agent, end in finished_by.items()):
                overlaps.append(sync)
                break
            finished_by[writer] = max(finished, finished_by.get(writer, finished))
    return overlaps
