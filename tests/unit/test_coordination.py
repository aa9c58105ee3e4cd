"""Coordination says what it does: the leader election Lease makes a replica leading and active,
a shard member's own Lease makes it a member (held, not leading), each Lease in its own series.
Over the in-memory Lease API of test_supervision; no cluster, no wall-clock waits."""

from __future__ import annotations

import logging
from typing import cast

import pytest
from test_supervision import TIMINGS, FakeLeases, settle

from mixpeek_operator.coordination import LeaderElector, ShardCoordinator
from mixpeek_operator.kube import KubeClient
from mixpeek_operator.metrics import OperatorMetrics

LEADER_LEASE = "ops/mixpeek-operator"


def gauges(metrics: OperatorMetrics, lease: str) -> tuple[float | None, ...]:
    """(active, leading, lease held, lease transitions)."""
    value = metrics.registry.get_sample_value
    return (
        value("mixpeek_operator_active"),
        value("mixpeek_operator_leading"),
        value("mixpeek_operator_lease_held", {"lease": lease}),
        value("mixpeek_operator_lease_transitions_total", {"lease": lease}),
    )


async def nothing() -> None:
    return None


def candidate(leases: FakeLeases, identity: str, metrics: OperatorMetrics | None = None) -> LeaderElector:
    return LeaderElector(
        cast(KubeClient, leases),
        namespace="ops",
        name="mixpeek-operator",
        identity=identity,
        timings=TIMINGS,
        on_started_leading=nothing,
        on_stopped_leading=nothing,
        on_transition=metrics.set_leading if metrics else None,
        on_lease=metrics.set_lease_held if metrics else None,
    )


async def test_the_leader_leads_holds_its_lease_and_hands_it_back(caplog: pytest.LogCaptureFixture) -> None:
    metrics, leases = OperatorMetrics(), FakeLeases()
    elector = candidate(leases, "pod-a", metrics)
    with caplog.at_level(logging.INFO, logger="mixpeek_operator.coordination"):
        elector.start()
        await settle()
        assert elector.is_leader()
        assert gauges(metrics, LEADER_LEASE) == (1, 1, 1, 1)
        await elector.stop()
    assert gauges(metrics, LEADER_LEASE) == (0, 0, 0, 2)
    assert leases.leases["mixpeek-operator"]["spec"]["holderIdentity"] == ""  # released
    assert "became leader of ops/mixpeek-operator as pod-a" in caplog.text
    assert "stopped leading ops/mixpeek-operator" in caplog.text


async def test_a_campaigning_replica_exports_its_lease_at_zero() -> None:
    metrics, leases = OperatorMetrics(), FakeLeases()
    leader, standby = candidate(leases, "pod-a"), candidate(leases, "pod-b", metrics)
    leader.start()
    await settle()
    standby.start()
    await settle()
    try:
        assert (leader.is_leader(), standby.is_leader()) == (True, False)
        assert gauges(metrics, LEADER_LEASE) == (0, 0, 0, 0)
    finally:
        await standby.stop()
        await leader.stop()


async def test_a_shard_member_holds_its_own_lease_without_leading(caplog: pytest.LogCaptureFixture) -> None:
    metrics, leases = OperatorMetrics(), FakeLeases()
    coordinator = ShardCoordinator(
        cast(KubeClient, leases),
        namespace="ops",
        ring="mixpeek-operator",
        identity="pod-a",
        timings=TIMINGS,
        on_change=nothing,
        on_members=metrics.set_shard_members,
        on_lease=metrics.set_lease_held,
    )
    with caplog.at_level(logging.INFO, logger="mixpeek_operator.coordination"):
        coordinator.start()
        await settle()
        assert coordinator.lease.held()
        assert not coordinator.active()  # a member, not yet past its join delay
        assert gauges(metrics, "ops/mixpeek-operator-pod-a") == (0, 0, 1, 1)
        assert metrics.registry.get_sample_value("mixpeek_operator_shard_members") == 1
        await coordinator.stop()
    assert gauges(metrics, "ops/mixpeek-operator-pod-a")[2] == 0
    assert "joined shard ring mixpeek-operator as pod-a" in caplog.text
    assert "leader" not in caplog.text  # a member's Lease is not a leadership
