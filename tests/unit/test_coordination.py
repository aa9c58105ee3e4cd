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


def gauges(metrics: OperatorMetrics, lease: str) -> dict[str, float | None]:
    value = metrics.registry.get_sample_value
    return {
        "active": value("mixpeek_operator_active"),
        "leading": value("mixpeek_operator_leading"),
        "held": value("mixpeek_operator_lease_held", {"lease": lease}),
        "transitions": value("mixpeek_operator_lease_transitions_total", {"lease": lease}),
    }


async def nothing() -> None:
    return None


async def test_the_leader_leads_holds_its_lease_and_hands_it_back(caplog: pytest.LogCaptureFixture) -> None:
    metrics, leases = OperatorMetrics(), FakeLeases()
    elector = LeaderElector(
        cast(KubeClient, leases),
        namespace="ops",
        name="mixpeek-operator",
        identity="pod-a",
        timings=TIMINGS,
        on_started_leading=nothing,
        on_stopped_leading=nothing,
        on_transition=metrics.set_leading,
        on_lease=metrics.set_lease_held,
    )
    with caplog.at_level(logging.INFO, logger="mixpeek_operator.coordination"):
        elector.start()
        await settle()
        assert elector.is_leader()
        assert gauges(metrics, "ops/mixpeek-operator") == {
            "active": 1,
            "leading": 1,
            "held": 1,
            "transitions": 1,
        }
        await elector.stop()
    assert gauges(metrics, "ops/mixpeek-operator") == {"active": 0, "leading": 0, "held": 0, "transitions": 2}
    assert leases.leases["mixpeek-operator"]["spec"]["holderIdentity"] == ""  # released
    assert "became leader of ops/mixpeek-operator as pod-a" in caplog.text
    assert "stopped leading ops/mixpeek-operator" in caplog.text


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
        assert gauges(metrics, "ops/mixpeek-operator-pod-a") == {
            "active": 0,
            "leading": 0,
            "held": 1,
            "transitions": 1,
        }
        assert metrics.registry.get_sample_value("mixpeek_operator_shard_members") == 1
        await coordinator.stop()
    assert gauges(metrics, "ops/mixpeek-operator-pod-a")["held"] == 0
    assert "joined shard ring mixpeek-operator as pod-a" in caplog.text
    assert "leader" not in caplog.text  # a member's Lease is not a leadership


async def test_a_campaigning_replica_exports_its_lease_at_zero() -> None:
    metrics, leases = OperatorMetrics(), FakeLeases()
    other = LeaderElector(
        cast(KubeClient, leases),
        namespace="ops",
        name="mixpeek-operator",
        identity="pod-a",
        timings=TIMINGS,
        on_started_leading=nothing,
        on_stopped_leading=nothing,
    )
    standby = LeaderElector(
        cast(KubeClient, leases),
        namespace="ops",
        name="mixpeek-operator",
        identity="pod-b",
        timings=TIMINGS,
        on_started_leading=nothing,
        on_stopped_leading=nothing,
        on_transition=metrics.set_leading,
        on_lease=metrics.set_lease_held,
    )
    other.start()
    await settle()
    standby.start()
    await settle()
    try:
        assert other.is_leader()
        assert not standby.is_leader()
        assert gauges(metrics, "ops/mixpeek-operator") == {
            "active": 0,
            "leading": 0,
            "held": 0,
            "transitions": 0,
        }
    finally:
        await standby.stop()
        await other.stop()
