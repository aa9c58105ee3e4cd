"""Leader election against the real kube-apiserver: LeaderElector in-process, then the operator.

The in-process tests use short timings and a loopback TCP proxy the test can freeze (a
network partition between one replica and the API server). The process tests run two
`mixpeek-operator run --leader-election` replicas through the real entry point, with
client-go's default timings (lease 15 s, renew deadline 10 s, retry 2 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from kubernetes import client as k8s

from localcluster import ControlPlane
from mixpeek_operator.kube import KubeClient, KubeConnection
from mixpeek_operator.leaderelection import (
    ElectionTimings,
    LeaderElector,
    LeaseRecord,
    lease_body,
    micro_time,
)

pytestmark = pytest.mark.usefixtures("crd_installed")

LEASE = "mixpeek-operator"
FAST = ElectionTimings(lease_duration=4, renew_deadline=2.5, retry_period=0.5)


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

    def __init__(self, kube: KubeClient, namespace: str, identity: str, timings: ElectionTimings) -> None:
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
