"""The operator when things go wrong: rejected specs, bad or missing credentials, rate
limits, a crash in the middle of a create, and an idle fleet that must cost nothing."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest
from kubernetes import client as k8s

from hack.localcluster import ControlPlane
from mixpeek_operator.constants import OWNER_UID_KEY
from tests.support.operator_support import (
    EMULATOR_API_KEY,
    WRONG_API_KEY,
    EmulatorProcess,
    Objects,
    OperatorFactory,
    bucketsync,
    condition,
    endpoint_counts,
    has_condition,
    kubernetes_writes,
    make_secret,
    sync_id,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("crd_installed")


def test_mixpeek_rejection_stalls_with_its_message_and_no_retry_storm(
    objects: Objects, mixpeek: EmulatorProcess, credentials: str, start_operator: OperatorFactory
) -> None:
    message = "source_path demo-bucket/videos does not exist in the provider"
    mixpeek.admin.add_fault(endpoint="create", error_count=1000, error_status=422, error_message=message)
    start_operator(objects.namespace)
    objects.create(bucketsync("rejected"))
    obj = objects.wait_stalled("rejected", "InvalidSpec")
    assert message in condition(obj, "Stalled")["message"]
    assert has_condition(obj, "Ready", "False", "InvalidSpec")
    assert has_condition(obj, "Reconciling", "False")
    assert (
        obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    )  # kstatus: Failed, not InProgress
    assert "Stalled" in objects.event_reasons("rejected")
    time.sleep(5)  # several backoff periods: a retry storm would show here
    assert endpoint_counts(mixpeek.admin)["create"] == 1

    # A spec change is what a human does to fix it; that (and only that) tries again.
    mixpeek.admin.clear_faults()
    objects.patch("rejected", {"spec": {"sourcePath": "demo-bucket/images"}})
    objects.wait_ready("rejected")
    assert endpoint_counts(mixpeek.admin)["create"] == 2


def test_unsupported_provider_is_refused_by_mixpeek_as_invalid_spec(
    objects: Objects, mixpeek: EmulatorProcess, credentials: str, start_operator: OperatorFactory
) -> None:
    start_operator(objects.namespace)
    objects.create(bucketsync("postgres", connectionId="conn_pg"))
    obj = objects.wait_stalled("postgres", "InvalidSpec")
    assert "does not support bucket syncs" in condition(obj, "Stalled")["message"]


def test_wrong_key_stalls_then_a_fixed_secret_recovers_without_restart(
    objects: Objects, mixpeek: EmulatorProcess, api_client: k8s.ApiClient, start_operator: OperatorFactory
) -> None:
    make_secret(
        api_client, objects.namespace, "mixpeek-credentials", api_key=WRONG_API_KEY, base_url=mixpeek.url
    )
    operator = start_operator(objects.namespace)
    objects.create(bucketsync("locked-out"))
    obj = objects.wait_stalled("locked-out", "AuthFailed")
    assert "401" in condition(obj, "Stalled")["message"]
    pid = operator.proc.pid

    fixed_at = time.monotonic()
    make_secret(
        api_client, objects.namespace, "mixpeek-credentials", api_key=EMULATOR_API_KEY, base_url=mixpeek.url
    )
    objects.wait_ready("locked-out", timeout=20)
    # Within seconds (the auth backoff is minutes), by the same operator process.
    assert time.monotonic() - fixed_at < 15
    assert operator.alive()
    assert operator.proc.pid == pid


def test_missing_secret_stalls_until_it_exists(
    objects: Objects, mixpeek: EmulatorProcess, api_client: k8s.ApiClient, start_operator: OperatorFactory
) -> None:
    start_operator(objects.namespace)
    objects.create(bucketsync("orphaned-ref", credentialsRef={"name": "not-yet"}))
    obj = objects.wait_stalled("orphaned-ref", "SecretNotFound")
    assert f"Secret {objects.namespace}/not-yet not found" in condition(obj, "Stalled")["message"]
    assert endpoint_counts(mixpeek.admin)["create"] == 0
    make_secret(api_client, objects.namespace, "not-yet", api_key=EMULATOR_API_KEY, base_url=mixpeek.url)
    objects.wait_ready("orphaned-ref", timeout=20)


def test_deletion_stuck_on_credentials_names_orphan_as_the_way_out(
    objects: Objects,
    mixpeek: EmulatorProcess,
    credentials: str,
    api_client: k8s.ApiClient,
    start_operator: OperatorFactory,
) -> None:
    start_operator(objects.namespace)
    objects.create(bucketsync("stuck"))
    remote_id = sync_id(objects.wait_ready("stuck"))
    # A deleted Secret no longer blocks a deletion (the in-use finalizer keeps it until the
    # object is gone), but a key revoked meanwhile does.
    make_secret(api_client, objects.namespace, credentials, api_key=WRONG_API_KEY, base_url=mixpeek.url)
    objects.delete("stuck")
    obj = objects.wait_stalled("stuck", "AuthFailed")
    assert "set spec.deletionPolicy: Orphan" in condition(obj, "Stalled")["message"]
    assert obj["metadata"]["deletionTimestamp"]

    objects.patch("stuck", {"spec": {"deletionPolicy": "Orphan"}})
    wait_for(lambda: objects.get("stuck") is None, what="deletion completes")
    assert remote_id in {s["sync_config_id"] for s in mixpeek.admin.list_syncs()}  # left in place


def _request_times(mixpeek: EmulatorProcess, endpoint: str) -> list[tuple[datetime, int]]:
    return [
        (datetime.fromisoformat(entry["at"]), int(entry["status"]))
        for entry in mixpeek.admin.request_log()
        if entry["endpoint"] == endpoint
    ]


def test_rate_limited_create_waits_for_retry_after(
    objects: Objects, mixpeek: EmulatorProcess, credentials: str, start_operator: OperatorFactory
) -> None:
    mixpeek.admin.add_fault(endpoint="create", rate_limit_count=1, retry_after_seconds=2)
    start_operator(objects.namespace)
    objects.create(bucketsync("throttled"))
    objects.wait_ready("throttled")
    attempts = sorted(_request_times(mixpeek, "create"))
    assert [status for _, status in attempts] == [429, 200]
    waited = (attempts[1][0] - attempts[0][0]).total_seconds()
    assert waited >= 2.0, f"retried after {waited:.3f}s, before Retry-After"
    assert endpoint_counts(mixpeek.admin)["create"] == 2


def test_sigkill_between_remote_create_and_status_write_leaves_exactly_one_sync(
    objects: Objects, mixpeek: EmulatorProcess, credentials: str, start_operator: OperatorFactory
) -> None:
    # The create is processed at once but its response is held back: the operator dies
    # after Mixpeek created the sync and before it could record the id anywhere.
    mixpeek.admin.add_fault(endpoint="create", response_delay_seconds=30)
    operator = start_operator(objects.namespace)
    created = objects.create(bucketsync("crashy"))
    uid = created["metadata"]["uid"]

    def owned() -> list[dict[str, Any]]:
        return [s for s in mixpeek.admin.list_syncs() if s["metadata"].get(OWNER_UID_KEY) == uid]

    wait_for(lambda: len(owned()) == 1, what="remote sync created")
    assert sync_id(objects.get("crashy")) is None  # not recorded yet
    operator.kill()
    mixpeek.admin.clear_faults()

    start_operator(objects.namespace)
    obj = objects.wait_ready("crashy")
    assert len(owned()) == 1
    assert sync_id(obj) == owned()[0]["sync_config_id"]
    assert endpoint_counts(mixpeek.admin)["create"] == 1
    assert "Adopted" in objects.event_reasons("crashy")


def test_an_idle_fleet_makes_no_kubernetes_writes(
    objects: Objects,
    mixpeek: EmulatorProcess,
    credentials: str,
    start_operator: OperatorFactory,
    cluster: ControlPlane,
) -> None:
    interval = 1.0
    operator = start_operator(objects.namespace, observe_interval=interval)
    names = [f"idle-{i}" for i in range(10)]
    for index, name in enumerate(names):
        objects.create(bucketsync(name, bucketId="bkt_demo" if index % 2 else "bkt_media"))
    for name in names:
        objects.wait_ready(name)
    time.sleep(2 * interval)  # let the last status writes and Events land

    writes_before = kubernetes_writes(cluster)
    lists_before = endpoint_counts(mixpeek.admin)["list"]
    reconciles_before = operator.metric("bucketsync_reconcile_total")
    time.sleep(5 * interval)
    writes_after = kubernetes_writes(cluster)
    lists = endpoint_counts(mixpeek.admin)["list"] - lists_before

    assert writes_after == writes_before, "an idle fleet wrote to the Kubernetes API"
    assert operator.metric("bucketsync_reconcile_total") == reconciles_before
    # Observation is one listing per bucket per interval (two buckets, jittered ±10%), not per object.
    assert 2 * 4 <= lists <= 2 * 6
    counts = endpoint_counts(mixpeek.admin)
    assert counts["get"] == 0
