"""The operator end to end: real kube-apiserver, the emulator over loopback, and the
operator started through `mixpeek-operator run`. Remote effects are checked through
the emulator's admin API (request counts and stored syncs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mixpeek_operator.constants import (
    OWNER_REF_KEY,
    OWNER_UID_KEY,
    RECONCILE_REQUESTED_AT,
    TRIGGER_REQUESTED_AT,
)
from tests.support.operator_support import (
    EMULATOR_API_KEY,
    EmulatorProcess,
    Objects,
    OperatorFactory,
    bucketsync,
    condition,
    endpoint_counts,
    has_condition,
    is_ready,
    mixpeek_api,
    sync_id,
    wait_for,
    writes_except_reads,
)

pytestmark = pytest.mark.usefixtures("crd_installed", "credentials")


FULL_SPEC: dict[str, Any] = {
    "sourcePath": "demo-bucket/videos",
    "syncMode": "continuous",
    "pollingIntervalSeconds": 60,
    "batchSize": 20,
    "skipBatchSubmission": True,
    "metadata": {"team": "media", "env": "test"},
    "fileFilters": {
        "includePatterns": ["*.mp4", "*.mov"],
        "excludePatterns": ["*/drafts/*"],
        "minSizeBytes": 10,
        "maxSizeBytes": 1_000_000,
        "mimeTypes": ["video/*"],
    },
    "schemaMapping": {
        "mappings": {
            "content": {"targetType": "blob", "source": {"type": "file"}, "blobType": "video"},
            "category": {
                "targetType": "field",
                "source": {"type": "folder_path", "segment": 0},
                "transform": "lowercase",
            },
        }
    },
}


def test_create_becomes_ready_with_remote_equal_to_spec(
    objects: Objects, mixpeek: EmulatorProcess, start_operator: OperatorFactory
) -> None:
    start_operator(objects.namespace)
    created = objects.create(bucketsync("full", **FULL_SPEC))
    # `kubectl wait` is how users and CI wait for it.
    objects.kubectl("wait", "--for=condition=Ready", "--timeout=30s", "bucketsync/full")
    obj = objects.wait_ready("full")
    remote = mixpeek.admin.get_sync(sync_id(obj) or "")

    assert remote["bucket_id"] == "bkt_demo"
    assert remote["connection_id"] == "conn_s3_demo"
    assert remote["source_path"] == "demo-bucket/videos"
    assert remote["sync_mode"] == "continuous"
    assert remote["polling_interval_seconds"] == 60
    assert remote["batch_size"] == 20
    assert remote["skip_batch_submission"] is True
    assert remote["file_filters"]["include_patterns"] == ["*.mp4", "*.mov"]
    assert remote["file_filters"]["exclude_patterns"] == ["*/drafts/*"]
    assert remote["file_filters"]["min_size_bytes"] == 10
    assert remote["file_filters"]["max_size_bytes"] == 1_000_000
    assert remote["file_filters"]["mime_types"] == ["video/*"]
    assert remote["schema_mapping"]["mappings"]["content"]["blob_type"] == "video"
    assert remote["schema_mapping"]["mappings"]["category"]["source"] == {
        "type": "folder_path",
        "segment": 0,
        "full_path": False,
    }
    # User metadata plus the ownership marker naming this very object.
    assert remote["metadata"]["team"] == "media"
    assert remote["metadata"][OWNER_UID_KEY] == created["metadata"]["uid"]
    assert remote["metadata"][OWNER_REF_KEY] == f"{objects.namespace}/full"

    status = obj["status"]
    assert status["bucketId"] == "bkt_demo"
    assert status["remote"]["status"] == remote["status"]
    assert condition(obj, "Stalled")["status"] == "False"
    assert condition(obj, "Reconciling")["status"] == "False"
    assert condition(obj, "RemoteHealthy")["status"] == "True"
    assert "drift" not in status
    assert endpoint_counts(mixpeek.admin)["create"] == 1  # exactly one remote create
    assert "Created" in objects.event_reasons("full")
    printed = objects.kubectl("get", "bsync", "full").stdout
    assert "bkt_demo" in printed
    assert "True" in printed
    assert "Synced" in printed


@pytest.mark.parametrize(
    ("field", "value", "observe", "expected"),
    [
        ("batchSize", 77, lambda r: r["batch_size"], 77),
        ("pollingIntervalSeconds", 120, lambda r: r["polling_interval_seconds"], 120),
        ("skipBatchSubmission", True, lambda r: r["skip_batch_submission"], True),
        (
            "schemaMapping",
            {"mappings": {"content": {"targetType": "blob", "source": {"type": "file"}, "blobType": "pdf"}}},
            lambda r: r["schema_mapping"]["mappings"]["content"]["blob_type"],
            "pdf",
        ),
    ],
    ids=["batchSize", "pollingIntervalSeconds", "skipBatchSubmission", "schemaMapping"],
)
def test_each_patchable_field_is_one_patch_and_nothing_else(
    objects: Objects,
    mixpeek: EmulatorProcess,
    start_operator: OperatorFactory,
    field: str,
    value: Any,
    observe: Callable[[dict[str, Any]], Any],
    expected: Any,
) -> None:
    start_operator(objects.namespace)
    objects.create(bucketsync("edit", metadata={"a": "1"}))
    before = objects.wait_ready("edit")
    mixpeek.admin.clear_requests()

    objects.patch("edit", {"spec": {field: value}})
    after = wait_for(
        lambda: (o := objects.get("edit")) and is_ready(o) and o["metadata"]["generation"] == 2 and o,
        30,
        what="generation 2 Ready",
    )
    remote = mixpeek.admin.get_sync(sync_id(after) or "")
    assert observe(remote) == expected
    assert sync_id(after) == sync_id(before)
    counts = writes_except_reads(endpoint_counts(mixpeek.admin))
    assert counts == {"create": 0, "update": 1, "delete": 0, "pause": 0, "resume": 0, "trigger": 0}
    assert "Updated" in objects.event_reasons("edit")


def test_metadata_edit_replaces_user_keys_and_keeps_the_marker(
    objects: Objects, mixpeek: EmulatorProcess, start_operator: OperatorFactory
) -> None:
    start_operator(objects.namespace)
    objects.create(bucketsync("meta", metadata={"a": "1", "b": "2"}))
    objects.wait_ready("meta")
    mixpeek.admin.clear_requests()
    objects.patch("meta", {"spec": {"metadata": {"a": "1", "b": None, "c": "3"}}})
    obj = wait_for(
        lambda: (o := objects.get("meta")) and is_ready(o) and o["metadata"]["generation"] == 2 and o, 30
    )
    remote = mixpeek.admin.get_sync(sync_id(obj) or "")
    assert {k: v for k, v in remote["metadata"].items() if not k.startswith("mixpeek-operator.")} == {
        "a": "1",
        "c": "3",
    }
    assert remote["metadata"][OWNER_UID_KEY] == obj["metadata"]["uid"]
    assert writes_except_reads(endpoint_counts(mixpeek.admin))["update"] == 1


def test_create_only_edit_recreates_the_remote_sync(
    objects: Objects, mixpeek: EmulatorProcess, start_operator: OperatorFactory
) -> None:
    start_operator(objects.namespace)
    objects.create(bucketsync("move"))
    old = sync_id(objects.wait_ready("move"))
    objects.patch("move", {"spec": {"sourcePath": "demo-bucket/images"}})
    obj = wait_for(lambda: (o := objects.get("move")) and is_ready(o) and sync_id(o) != old and o, 30)
    new = sync_id(obj)
    assert mixpeek.admin.get_sync(new or "")["source_path"] == "demo-bucket/images"
    remaining = {s["sync_config_id"] for s in mixpeek.admin.list_syncs()}
    assert old not in remaining
    assert new in remaining
    assert "Recreated" in objects.event_reasons("move")


def test_reject_policy_refuses_create_only_edits_at_admission(
    objects: Objects, mixpeek: EmulatorProcess, start_operator: OperatorFactory
) -> None:
    start_operator(objects.namespace)
    objects.create(bucketsync("locked", replacementPolicy="Reject"))
    objects.wait_ready("locked")
    mixpeek.admin.clear_requests()
    refused = objects.kubectl(
        "patch",
        "bucketsync",
        "locked",
        "--type=merge",
        "-p",
        '{"spec":{"sourcePath":"elsewhere"}}',
        check=False,
    )
    assert refused.returncode != 0
    assert "spec.sourcePath" in refused.stderr
    assert "replacementPolicy" in refused.stderr
    assert writes_except_reads(endpoint_counts(mixpeek.admin)) == dict.fromkeys(
        ("create", "update", "delete", "pause", "resume", "trigger"), 0
    )


def test_pause_and_resume_both_ways(
    objects: Objects, mixpeek: EmulatorProcess, start_operator: OperatorFactory
) -> None:
    start_operator(objects.namespace)
    objects.create(bucketsync("pausable", paused=True))
    obj = objects.wait_ready("pausable")
    assert condition(obj, "Ready")["reason"] == "Paused"
    assert mixpeek.admin.get_sync(sync_id(obj) or "")["paused"] is True

    objects.patch("pausable", {"spec": {"paused": False}})
    obj = wait_for(
        lambda: (o := objects.get("pausable")) and is_ready(o) and o["metadata"]["generation"] == 2 and o
    )
    assert condition(obj, "Ready")["reason"] == "Synced"
    assert mixpeek.admin.get_sync(sync_id(obj) or "")["paused"] is False
    assert obj["status"]["remote"]["paused"] is False

    objects.patch("pausable", {"spec": {"paused": True}})
    obj = wait_for(
        lambda: (o := objects.get("pausable")) and is_ready(o) and o["metadata"]["generation"] == 3 and o
    )
    assert mixpeek.admin.get_sync(sync_id(obj) or "")["paused"] is True
    reasons = objects.event_reasons("pausable")
    assert "Resumed" in reasons
    assert "Paused" in reasons
    counts = endpoint_counts(mixpeek.admin)
    assert counts["pause"] == 2
    assert counts["resume"] == 1


def test_trigger_once_per_annotation_value_and_reconcile_echo(
    objects: Objects, mixpeek: EmulatorProcess, start_operator: OperatorFactory
) -> None:
    start_operator(objects.namespace)
    objects.create(bucketsync("trig"))
    objects.wait_ready("trig")

    def triggers() -> int:
        return endpoint_counts(mixpeek.admin)["trigger"]

    objects.annotate("trig", **{TRIGGER_REQUESTED_AT: "2026-01-01T00:00:00Z"})
    wait_for(
        lambda: (
            (objects.get("trig") or {}).get("status", {}).get("lastHandledTriggerAt")
            == "2026-01-01T00:00:00Z"
        )
    )
    assert triggers() == 1
    # Other changes do not repeat the trigger ...
    objects.annotate("trig", **{RECONCILE_REQUESTED_AT: "r1"})
    wait_for(lambda: (objects.get("trig") or {}).get("status", {}).get("lastHandledReconcileAt") == "r1")
    objects.patch("trig", {"spec": {"batchSize": 9}})
    wait_for(lambda: (o := objects.get("trig")) and is_ready(o) and o["metadata"]["generation"] == 2)
    assert triggers() == 1
    # ... a new value does.
    objects.annotate("trig", **{TRIGGER_REQUESTED_AT: "second"})
    wait_for(lambda: triggers() == 2, what="second trigger")
    assert objects.event_reasons("trig").count("Triggered") == 2


def remote_sync_made_elsewhere(mixpeek: EmulatorProcess) -> dict[str, Any]:
    """A sync created straight through the Mixpeek API (batch size 5), not by the operator."""
    with mixpeek_api(mixpeek.url, EMULATOR_API_KEY) as api:
        response = api.post(
            "/v1/buckets/bkt_demo/syncs",
            json={"connection_id": "conn_s3_demo", "source_path": "demo-bucket/videos", "batch_size": 5},
        )
    response.raise_for_status()
    mixpeek.admin.clear_requests()
    created: dict[str, Any] = response.json()
    return created


def test_adopts_an_existing_remote_sync_by_id(
    objects: Objects, mixpeek: EmulatorProcess, start_operator: OperatorFactory
) -> None:
    existing = remote_sync_made_elsewhere(mixpeek)
    start_operator(objects.namespace)
    created = objects.create(bucketsync("adopter", syncConfigId=existing["sync_config_id"], batchSize=30))
    obj = objects.wait_ready("adopter")
    assert sync_id(obj) == existing["sync_config_id"]
    remote = mixpeek.admin.get_sync(existing["sync_config_id"])
    assert remote["batch_size"] == 30  # converged to the spec
    assert remote["metadata"][OWNER_UID_KEY] == created["metadata"]["uid"]
    assert endpoint_counts(mixpeek.admin)["create"] == 0
    assert "Adopted" in objects.event_reasons("adopter")


def test_observe_only_reports_drift_and_never_writes(
    objects: Objects, mixpeek: EmulatorProcess, start_operator: OperatorFactory
) -> None:
    existing = remote_sync_made_elsewhere(mixpeek)
    start_operator(objects.namespace)
    objects.create(
        bucketsync(
            "watcher", syncConfigId=existing["sync_config_id"], managementPolicy="ObserveOnly", batchSize=40
        )
    )
    obj = objects.wait_ready("watcher")
    drift = {entry["field"]: entry for entry in obj["status"]["drift"]}
    assert drift["spec.batchSize"]["desired"] == "40"
    assert drift["spec.batchSize"]["observed"] == "5"
    objects.delete("watcher")
    wait_for(lambda: objects.get("watcher") is None, what="object gone")
    assert mixpeek.admin.get_sync(existing["sync_config_id"])["batch_size"] == 5
    assert writes_except_reads(endpoint_counts(mixpeek.admin)) == dict.fromkeys(
        ("create", "update", "delete", "pause", "resume", "trigger"), 0
    )


@pytest.mark.parametrize("policy", ["Delete", "Orphan"])
def test_deletion_policies(
    objects: Objects, mixpeek: EmulatorProcess, start_operator: OperatorFactory, policy: str
) -> None:
    start_operator(objects.namespace)
    objects.create(bucketsync("doomed", deletionPolicy=policy))
    remote_id = sync_id(objects.wait_ready("doomed")) or ""
    objects.delete("doomed")
    wait_for(lambda: objects.get("doomed") is None, what="object deleted")
    remaining = {s["sync_config_id"]: s for s in mixpeek.admin.list_syncs()}
    if policy == "Delete":
        assert remote_id not in remaining
    else:
        assert remote_id in remaining
        # The ownership marker is released so another object may adopt the sync later.
        assert OWNER_UID_KEY not in remaining[remote_id]["metadata"]


def test_out_of_band_changes_are_corrected(
    objects: Objects, mixpeek: EmulatorProcess, start_operator: OperatorFactory
) -> None:
    start_operator(objects.namespace, observe_interval=1.0)
    objects.create(bucketsync("guarded", batchSize=25))
    remote_id = sync_id(objects.wait_ready("guarded")) or ""

    mixpeek.admin.pause_sync(remote_id)
    wait_for(lambda: mixpeek.admin.get_sync(remote_id)["paused"] is False, what="pause undone")
    mixpeek.admin.patch_sync(remote_id, {"batch_size": 99})
    wait_for(lambda: mixpeek.admin.get_sync(remote_id)["batch_size"] == 25, what="batch size restored")
    assert "DriftCorrected" in objects.event_reasons("guarded")

    mixpeek.admin.delete_sync(remote_id)
    obj = wait_for(
        lambda: (o := objects.get("guarded")) and sync_id(o) not in (None, remote_id) and is_ready(o) and o,
        what="recreated",
    )
    assert mixpeek.admin.get_sync(sync_id(obj) or "")["batch_size"] == 25
    assert "Recreated" in objects.event_reasons("guarded")


def test_remote_failure_surfaces_as_remote_healthy_false(
    objects: Objects, mixpeek: EmulatorProcess, start_operator: OperatorFactory
) -> None:
    start_operator(objects.namespace, observe_interval=1.0)
    objects.create(bucketsync("flaky"))
    remote_id = sync_id(objects.wait_ready("flaky")) or ""
    mixpeek.admin.fail_sync(remote_id, message="provider credentials expired")
    obj = wait_for(
        lambda: (
            (o := objects.get("flaky")) and has_condition(o, "RemoteHealthy", "False", "RemoteFailed") and o
        ),
        what="RemoteHealthy=False",
    )
    assert "provider credentials expired" in condition(obj, "RemoteHealthy")["message"]
    assert obj["status"]["remote"]["lastError"] == "provider credentials expired"
    assert obj["status"]["remote"]["status"] == "FAILED"
    assert is_ready(obj)  # Ready is about convergence; health is its own condition
    assert "RemoteFailed" in objects.event_reasons("flaky")
