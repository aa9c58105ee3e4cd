"""Leader election against the real kube-apiserver: LeaderElector in-process, then the operator.

The in-process tests use short timings and a loopback TCP proxy the test can freeze (a
network partition between one replica and the API server). The process tests run two
`mixpeek-operator run --leader-election` replicas through the real entry point, with
client-go's default timings (lease 15 s, renew deadline 10 s, retry 2 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from kubernetes import client as k8s
from operator_support import (
    EmulatorProcess,
    Objects,
    OperatorFactory,
    OperatorProcess,
    bucketsync,
    endpoint_counts,
    http_get,
    is_ready,
    kubernetes_writes,
    sync_id,
    wait_for,
)

from localcluster import ControlPlane
from mixpeek_operator.constants import OWNER_UID_KEY, SECRET_IN_USE_FINALIZER
from mixpeek_operator.coordination import LeaderElector, LeaseTimings
from mixpeek_operator.coordination.lease import LeaseRecord, lease_body, micro_time
from mixpeek_operator.kube import KubeClient, KubeConnection

pytestmark = pytest.mark.usefixtures("crd_installed")

LEASE = "mixpeek-operator"
FAST = LeaseTimings(lease_duration=4, renew_deadline=2.5, retry_period=0.5)


# --- LeaderElector in-process -------------------------------------------------------------


class FreezableProxy:
    """Loopback TCP forwarder to the API server; `freeze()` silently stops all traffic through it."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.frozen = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def freeze(self) -> None:
        self.frozen.set()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in self.writers:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        if self.frozen.is_set():
            return  # accepted, never answered
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers.append(up_writer)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while not self.frozen.is_set():
                data = await reader.read(65536)
                if not data or self.frozen.is_set():
                    return
                writer.write(data)
                await writer.drain()


class Candidate:
    """One LeaderElector and a record of when it started and stopped leading (monotonic time)."""

    def __init__(self, kube: KubeClient, namespace: str, identity: str, timings: LeaseTimings) -> None:
        self.started: list[float] = []
        self.stopped: list[float] = []
        self.elector = LeaderElector(
            kube,
            namespace=namespace,
            name=LEASE,
            identity=identity,
            timings=timings,
            on_started_leading=self._started,
            on_stopped_leading=self._stopped,
        )

    async def _started(self) -> None:
        self.started.append(time.monotonic())

    async def _stopped(self) -> None:
        self.stopped.append(time.monotonic())


async def until(predicate: Callable[[], bool], within: float, what: str) -> float:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
    return time.monotonic()


def read_lease(api_client: k8s.ApiClient, namespace: str) -> LeaseRecord | None:
    try:
        lease = k8s.CoordinationV1Api(api_client).read_namespaced_lease(LEASE, namespace)
    except k8s.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return LeaseRecord.from_lease(api_client.sanitize_for_serialization(lease))


@pytest.fixture
async def kube(cluster: ControlPlane) -> AsyncIterator[KubeClient]:
    async with KubeClient(KubeConnection.from_kubeconfig(cluster.kubeconfig)) as client:
        yield client


async def test_of_two_racing_candidates_exactly_one_leads_and_a_release_hands_over_at_once(
    kube: KubeClient, namespace: str, api_client: k8s.ApiClient
) -> None:
    a, b = Candidate(kube, namespace, "a", FAST), Candidate(kube, namespace, "b", FAST)
    a.elector.start()
    b.elector.start()
    await until(lambda: a.elector.is_leader() or b.elector.is_leader(), 5, "a leader")
    for _ in range(40):  # 2 s of renewals: never two leaders
        assert not (a.elector.is_leader() and b.elector.is_leader())
        await asyncio.sleep(0.05)
    leader, standby = (a, b) if a.elector.is_leader() else (b, a)
    record = read_lease(api_client, namespace)
    assert record is not None
    assert record.holder == leader.elector.identity
    assert record.transitions == 0
    assert record.duration_seconds == 4

    released_at = time.monotonic()
    await leader.elector.stop()
    assert leader.stopped, "the leader stopped its work before releasing"
    took_over = await until(standby.elector.is_leader, 5, "the standby to take over")
    print(f"\ntakeover after a release: {took_over - released_at:.2f}s (retry period {FAST.retry_period}s)")
    assert took_over - released_at <= FAST.retry_period * 1.1 + 0.5
    record = read_lease(api_client, namespace)
    assert record is not None
    assert (record.holder, record.transitions) == (standby.elector.identity, 1)
    await standby.elector.stop()
    released = read_lease(api_client, namespace)
    assert released is not None
    assert (released.holder, released.duration_seconds) == ("", 1)
    assert released.transitions == 1


async def test_a_partitioned_leader_stops_working_before_a_standby_can_take_over(
    kube: KubeClient, cluster: ControlPlane, namespace: str, api_client: k8s.ApiClient
) -> None:
    direct = KubeConnection.from_kubeconfig(cluster.kubeconfig)
    server = urlsplit(direct.server)
    proxy = FreezableProxy(server.hostname or "127.0.0.1", server.port or 443)
    port = await proxy.start()
    partitioned = KubeClient(replace(direct, server=f"https://127.0.0.1:{port}"))
    a, b = Candidate(partitioned, namespace, "a", FAST), Candidate(kube, namespace, "b", FAST)
    try:
        a.elector.start()
        await until(a.elector.is_leader, 5, "a to lead")
        b.elector.start()
        await asyncio.sleep(1.5)
        assert not b.started, "the standby took a lease that was being renewed"

        frozen_at = time.monotonic()
        proxy.freeze()
        await until(lambda: bool(b.started), 15, "the standby to take over")
        assert a.stopped, "the partitioned leader never stepped down"
        stepped_down, took_over = a.stopped[0] - frozen_at, b.started[0] - frozen_at
        print(
            f"\npartition: old leader stopped after {stepped_down:.2f}s, standby led after {took_over:.2f}s"
        )
        # Fencing by time: the old leader's work ended before the new leader's began.
        assert a.stopped[0] < b.started[0]
        assert stepped_down <= FAST.renew_deadline + 0.5
        assert not a.elector.is_leader()
        record = read_lease(api_client, namespace)
        assert record is not None
        assert (record.holder, record.transitions) == ("b", 1)
    finally:
        for candidate in (a, b):
            await candidate.elector.stop()
        await proxy.close()
        await partitioned.aclose()


async def test_a_lease_taken_by_another_holder_makes_the_leader_step_down(
    kube: KubeClient, namespace: str, api_client: k8s.ApiClient
) -> None:
    a = Candidate(kube, namespace, "a", FAST)
    a.elector.start()
    try:
        await until(a.elector.is_leader, 5, "a to lead")
        # Someone (an admin, another fleet) overwrites the lease: a must notice on its next renewal.
        body = k8s.CoordinationV1Api(api_client).read_namespaced_lease(LEASE, namespace)
        now = micro_time(datetime.now(UTC))
        taken = lease_body(
            namespace, LEASE, LeaseRecord("intruder", 60, now, now, 7), body.metadata.resource_version
        )
        k8s.CoordinationV1Api(api_client).replace_namespaced_lease(LEASE, namespace, taken)
        await until(lambda: bool(a.stopped), FAST.retry_period * 2 + 1, "a to step down")
        assert not a.elector.is_leader()
        record = read_lease(api_client, namespace)
        assert record is not None
        assert record.holder == "intruder"
    finally:
        await a.elector.stop()
    record = read_lease(api_client, namespace)
    assert record is not None
    assert record.holder == "intruder", "a released a lease it did not hold"


# --- two operator processes ---------------------------------------------------------------


def election_args(namespace: str, identity: str) -> tuple[str, ...]:
    return (
        "--leader-election",
        "--leader-election-namespace",
        namespace,
        "--leader-election-identity",
        identity,
    )


def cached_objects(operator: OperatorProcess) -> int:
    """Objects in the replica's cache, from its liveness endpoint (the engine probe)."""
    try:
        _, body = http_get(operator.health_url, timeout=1)
        return int(json.loads(body).get("engine", {}).get("objects", 0))
    except (OSError, ValueError):
        return 0


def holder(api_client: k8s.ApiClient, namespace: str) -> str:
    record = read_lease(api_client, namespace)
    return record.holder if record is not None else ""


def owned_syncs(mixpeek: EmulatorProcess, uids: set[str]) -> list[dict[str, Any]]:
    return [s for s in mixpeek.admin.list_syncs() if s["metadata"].get(OWNER_UID_KEY) in uids]


def own_writes(operator: OperatorProcess) -> float:
    """The replica's writes to BucketSyncs and Events (its lease writes not included)."""
    return sum(
        operator.metric("bucketsync_kube_writes_total", kind=k) for k in ("status", "metadata", "event")
    )


def test_a_standby_keeps_its_cache_warm_but_makes_no_remote_call_and_no_kubernetes_write(
    objects: Objects,
    mixpeek: EmulatorProcess,
    credentials: str,
    start_operator: OperatorFactory,
    cluster: ControlPlane,
    api_client: k8s.ApiClient,
) -> None:
    namespace = objects.namespace
    now = micro_time(datetime.now(UTC))
    coordination = k8s.CoordinationV1Api(api_client)
    # Another replica holds the lease for the whole observation.
    coordination.create_namespaced_lease(
        namespace, lease_body(namespace, LEASE, LeaseRecord("other-replica", 3600, now, now, 0), None)
    )
    names = [f"standby-{i}" for i in range(10)]
    for name in names:
        objects.create(bucketsync(name))
    # A Secret the leader marked in use, whose last user goes while only the standby runs.
    core = k8s.CoreV1Api(api_client)
    core.create_namespaced_secret(
        namespace,
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name="retired-creds", finalizers=[SECRET_IN_USE_FINALIZER]),
            string_data={"apiKey": "unused"},
        ),
    )
    objects.create(bucketsync("retired", credentialsRef={"name": "retired-creds"}))
    writes_before = kubernetes_writes(cluster)

    standby = start_operator(namespace, extra_args=election_args(namespace, "replica-b"))
    wait_for(lambda: cached_objects(standby) == len(names) + 1, 30, what="the standby's cache")
    wait_for(lambda: "standing by" in standby.logs(), 10, what="the standby log line")
    objects.delete("retired")  # no finalizer of ours yet: gone at once
    core.delete_namespaced_secret("retired-creds", namespace)  # stays, Terminating, while in use
    # The engine's object count on the liveness endpoint (kopf caches probe results for a while;
    # bucketsync_resources is no help: only the replica reconciling an object exports it).
    wait_for(lambda: cached_objects(standby) == len(names), 60, what="the deletion seen by the standby")
    time.sleep(3 * 2.0)  # three observe intervals: a leader would have listed, created and written

    assert mixpeek.admin.request_counts()["total"] == 0, "the standby called Mixpeek"
    ours = {"bucketsyncs//DELETE": 1.0, "secrets//DELETE": 1.0}  # the test's own two deletions
    expected = {key: writes_before.get(key, 0.0) + ours.get(key, 0.0) for key in {*writes_before, *ours}}
    assert kubernetes_writes(cluster) == expected, "the standby wrote to the Kubernetes API"
    assert standby.metric("bucketsync_kube_writes_total") == 0
    assert standby.metric("mixpeek_api_requests_total") == 0
    assert standby.metric("mixpeek_operator_leading") == 0
    for name in names:
        obj = objects.get(name)
        assert obj is not None
        assert set(obj.get("status") or {}) <= {"observedGeneration"}  # the CRD's default only
        assert not obj["metadata"].get("finalizers")  # neither ours nor kopf's
        assert not obj["metadata"].get("annotations")  # no kopf progress or diff-base storage
    assert holder(api_client, namespace) == "other-replica"
    # The Secret's release was the leader's to make, not the standby's.
    assert objects.secret("retired-creds") is not None

    # The other replica hands the lease back (as on SIGTERM): the standby leads within a retry period.
    lease = coordination.read_namespaced_lease(LEASE, namespace)
    now = micro_time(datetime.now(UTC))
    released_at = time.monotonic()
    coordination.replace_namespaced_lease(
        LEASE,
        namespace,
        lease_body(namespace, LEASE, LeaseRecord("", 1, now, now, 0), lease.metadata.resource_version),
    )
    wait_for(lambda: holder(api_client, namespace) == "replica-b", 10, interval=0.02, what="takeover")
    print(f"\ntakeover of a released lease: {time.monotonic() - released_at:.2f}s")
    for name in names:
        objects.wait_ready(name, timeout=60)
    assert standby.metric("mixpeek_operator_leading") == 1
    # As the leader it makes the release it saw become due while standing by.
    wait_for(lambda: objects.secret("retired-creds") is None, 10, what="the deferred Secret release")
    assert endpoint_counts(mixpeek.admin)["create"] == len(names)


def test_sigkill_of_the_leader_during_a_bulk_create_the_standby_finishes_without_duplicates(
    objects: Objects,
    mixpeek: EmulatorProcess,
    credentials: str,
    start_operator: OperatorFactory,
    api_client: k8s.ApiClient,
) -> None:
    namespace, total = objects.namespace, 100
    # Slow creates (and responses held back after Mixpeek acted), so the kill lands mid-way with
    # syncs created remotely whose ids the leader never recorded.
    mixpeek.admin.add_fault(endpoint="create", latency_ms=50, response_delay_seconds=0.3)
    slow = ("--rate-limit", "20", "--rate-burst", "5")
    leader = start_operator(namespace, extra_args=(*election_args(namespace, "replica-a"), *slow))
    wait_for(lambda: holder(api_client, namespace) == "replica-a", 20, what="replica-a to lead")
    standby = start_operator(namespace, extra_args=(*election_args(namespace, "replica-b"), *slow))
    wait_for(lambda: "standing by" in standby.logs(), 20, what="replica-b to stand by")

    uids = {objects.create(bucketsync(f"bulk-{i:03d}"))["metadata"]["uid"] for i in range(total)}
    wait_for(lambda: endpoint_counts(mixpeek.admin)["create"] >= 30, 60, what="30 remote creates")
    assert standby.metric("mixpeek_api_requests_total") == 0, "the standby called Mixpeek"
    assert standby.metric("bucketsync_kube_writes_total") == 0, "the standby wrote to Kubernetes"
    done_before_kill = sum(1 for i in range(total) if sync_id(objects.get(f"bulk-{i:03d}")))
    assert done_before_kill < total, "the leader finished before the kill; nothing left to take over"

    leader.kill()
    killed_at = time.monotonic()
    lease_at = first_write_at = None
    deadline = killed_at + 30
    while first_write_at is None and time.monotonic() < deadline:
        now = time.monotonic()
        if lease_at is None and standby.metric("bucketsync_kube_writes_total", kind="lease") > 0:
            lease_at = now
        if own_writes(standby) > 0:
            first_write_at = now
        time.sleep(0.05)
    assert lease_at is not None
    assert first_write_at is not None, "the standby never wrote"
    failover = first_write_at - killed_at
    print(
        f"\nSIGKILL failover ({done_before_kill}/{total} recorded at the kill): lease taken after "
        f"{lease_at - killed_at:.2f}s, first object write after {failover:.2f}s (lease duration 15s)"
    )
    assert failover <= 15 + 2

    wait_for(lambda: all(is_ready(objects.get(f"bulk-{i:03d}")) for i in range(total)), 180, what="all Ready")
    syncs = owned_syncs(mixpeek, uids)
    owners = [s["metadata"][OWNER_UID_KEY] for s in syncs]
    duplicates = len(owners) - len(set(owners))
    print(
        f"remote syncs: {len(syncs)}, creates: {endpoint_counts(mixpeek.admin)['create']}, "
        f"duplicates: {duplicates}"
    )
    assert duplicates == 0
    assert len(syncs) == total
    assert endpoint_counts(mixpeek.admin)["create"] == total
    recorded = {sync_id(objects.get(f"bulk-{i:03d}")) for i in range(total)}
    assert recorded == {s["sync_config_id"] for s in syncs}


def test_sigterm_of_the_leader_hands_over_within_three_seconds(
    objects: Objects,
    mixpeek: EmulatorProcess,
    credentials: str,
    start_operator: OperatorFactory,
    api_client: k8s.ApiClient,
) -> None:
    namespace = objects.namespace
    leader = start_operator(namespace, extra_args=election_args(namespace, "replica-a"))
    wait_for(lambda: holder(api_client, namespace) == "replica-a", 20, what="replica-a to lead")
    standby = start_operator(namespace, extra_args=election_args(namespace, "replica-b"))
    wait_for(lambda: "standing by" in standby.logs(), 20, what="replica-b to stand by")
    objects.create(bucketsync("before"))
    objects.wait_ready("before")

    os.killpg(leader.proc.pid, signal.SIGTERM)
    signalled_at = time.monotonic()
    wait_for(lambda: holder(api_client, namespace) == "replica-b", 10, interval=0.02, what="takeover")
    takeover = time.monotonic() - signalled_at
    print(f"\nSIGTERM takeover: {takeover:.2f}s")
    assert takeover <= 3.0
    assert leader.proc.wait(timeout=20) == 0
    assert "released lease" in leader.logs()
    objects.create(bucketsync("after"))
    objects.wait_ready("after")
    assert standby.metric("mixpeek_operator_leading") == 1
    assert endpoint_counts(mixpeek.admin)["create"] == 2
